"""Indexing groups of files in worker processes (or in this one) while the caller writes the store.

``workers=None`` starts one single-threaded process per CPU core, capped by :data:`MAX_AUTO_WORKERS`
and by :data:`WORKER_MEMORY_BYTES` of RAM each (every worker holds its own models; their measured
peaks are in docs/performance.md). Workers die with this process (:mod:`sonalign.utils.processes`).
If the pool breaks before any group came back, everything runs in this process; if a worker dies
later, the groups in flight fail (run again to retry) and the rest run here.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from sonalign.index.indexer import Failed, FileResult, Indexer
from sonalign.utils.processes import PooledRun

log = logging.getLogger(__name__)

#: CNN windows per call in a single-threaded worker: as fast as the in-process batch there, and
#: less memory (docs/performance.md).
WORKER_CNN_BATCH = 32
#: Most worker processes ``workers=None`` starts.
MAX_AUTO_WORKERS = 8
#: A worker hands freed heap memory back to the system after a group once its RSS is above this
#: (see _init_worker for why it does not fix the mmap threshold).
WORKER_TRIM_BYTES = 2**30
#: RAM per worker that ``workers=None`` assumes: a worker's models and a group's CNN activations,
#: with room for slow heap fragmentation on large collections (measured peaks: docs/performance.md).
WORKER_MEMORY_BYTES = 3 * 2**29  # 1.5 GiB

_WORKER: Indexer | None = None


def _init_worker(model: str, transcripts: bool, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # No fixed mmap threshold here (the writer process keeps it, see build_index): with it, every
    # CNN activation is a fresh mapping whose pages the kernel zeroes, which costs a worker CPU
    # time. Over a large collection a worker's heap still fragments, so it trims the heap after a
    # group once it is above WORKER_TRIM_BYTES (_index_group_in_worker); the speed and memory both
    # ways are in docs/performance.md.
    global _WORKER
    # pocketsphinx runs inside the worker: the workers already fill the cores
    _WORKER = Indexer(None, model, transcripts=transcripts, asr_process=False, cnn_batch=WORKER_CNN_BATCH)


def _index_group_in_worker(files: list[tuple[Path, str]]) -> list[FileResult | Failed]:
    from sonalign.utils.memory import trim_heap_above

    assert _WORKER is not None
    results = _WORKER.embed_prepared(_WORKER.prepare_group(files))
    trim_heap_above(WORKER_TRIM_BYTES)
    return results


def _groups_in_process(indexer: Indexer, groups: list[list[tuple[Path, str]]]) -> Iterator[list[FileResult | Failed]]:
    """Results group by group; the next group is segmented (decode + VAD) in a thread while this one is embedded."""
    if not groups:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = deque([pool.submit(indexer.prepare_group, groups[0])])
        for n in range(len(groups)):
            if n + 1 < len(groups):
                ahead.append(pool.submit(indexer.prepare_group, groups[n + 1]))
            yield indexer.embed_prepared(ahead.popleft().result())


def _groups_in_workers(pool: ProcessPoolExecutor, workers: int, groups: list[list[tuple[Path, str]]],
                       fallback: Callable[[list[list[tuple[Path, str]]]], Iterator[list[FileResult | Failed]]]) -> Iterator[list[FileResult | Failed]]:
    """Results group by group, in order, from worker processes (two groups in flight per worker).

    If the pool breaks before any group came back (processes cannot be started here, e.g. a
    parent read from stdin, which ``spawn`` cannot re-import), every group goes to ``fallback``
    (this process). If a worker dies later (killed, out of memory), the groups in flight fail, with
    a reason saying to run again (they are not in the index, so the next run retries them), and
    the rest go to ``fallback`` (:class:`~sonalign.utils.processes.PooledRun`).
    """

    def lost(group: list[tuple[Path, str]], exc: BaseException) -> list[FileResult | Failed]:
        return [Failed(f"indexing worker process died ({exc}); not indexed, run again to retry") for _ in group]

    def here(rest: list[list[tuple[Path, str]]]) -> Iterator[list[FileResult | Failed]]:
        log.warning("indexing worker processes unavailable (%s); indexing the remaining %d groups in this process", run.broken, len(rest))
        yield from fallback(rest)

    run = PooledRun(pool, _index_group_in_worker, groups, in_flight=2 * workers, local=here, lost=lost)
    return iter(run)


def resolve_workers(workers: int | None, groups: int) -> int:
    """Worker processes for ``groups`` groups: ``None`` = one per CPU core, at most
    :data:`MAX_AUTO_WORKERS` and one per :data:`WORKER_MEMORY_BYTES` of RAM; never more than
    one per group. 1 = everything in this process."""
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_AUTO_WORKERS, max(1, _physical_memory() // WORKER_MEMORY_BYTES))
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (or None for one per core), got {workers}")
    return max(1, min(workers, groups))


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume enough
        return MAX_AUTO_WORKERS * WORKER_MEMORY_BYTES


