"""``sonalign index DIR --out IDX``: chunk, embed and store every recording under a folder.

Incremental by content hash: a rerun adds new files, re-embeds changed ones, removes deleted
ones, and leaves the rest alone. Changes are committed every few files (and at the end); the store
is crash-consistent, so a run killed at any moment and started again ends consistent, redoing at
most the files after the last commit.

Segmentation: silence-aware ``energy`` chunks for sounds, ``speech`` (silero-vad) chunks where
speech is detected; a sound chunk that lies mostly inside speech is dropped in favour of the speech
chunk. Speech segments also get a pocketsphinx transcript, embedded with the text encoder as a
second ("transcript") vector that search fuses with the acoustic score.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonalign.audio.io import find_audio_files
from sonalign.errors import ConfigError
from sonalign.index.embedders import get_embedder
from sonalign.index.indexer import Failed, FileResult, Indexer, plan_groups
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.index.workers import (
    _groups_in_process,
    _groups_in_workers,
    _init_worker,
    resolve_workers,
)
from sonalign.segments import recording_id_for, segment_id
from sonalign.utils.hashing import HashMemo
from sonalign.utils.processes import spawn_pool, stop_pool
from sonalign.utils.progress import progress

COMMIT_EVERY_FILES = 20
COMMIT_EVERY_SECONDS = 30.0


@dataclass
class IndexReport:
    files: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    segments: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    workers: int = 1  #: processes that embedded (1: this one)
    failures: list[tuple[str, str]] = field(default_factory=list)



def recording_key(path: Path, root: Path, root_real: Path | None) -> str:
    """The path a recording is stored under: below the real ``root``, with links inside the folder
    kept as they are (so a removed link leaves the index); a single file is stored resolved."""
    return str(root_real / path.relative_to(root)) if root_real is not None else str(path.resolve())


def unique_recording_id(store: IndexStore, wanted: str, path: str, taken: set[str]) -> str:
    """``wanted`` unless another path already holds it (in the index, or earlier in this run):
    then ``wanted~`` + a short hash of the path, the same for the same path every time."""
    holder = store.recording(wanted)
    if (holder is None or holder.path == path) and wanted not in taken:
        return wanted
    import hashlib

    return f"{wanted}~{hashlib.sha1(path.encode('utf-8')).hexdigest()[:8]}"


def _renamed(result: FileResult, rid: str) -> FileResult:
    if rid != result.recording_id:
        for n, seg in enumerate(result.segments):
            seg.recording_id, seg.id = rid, segment_id(rid, n)
        result.recording_id = rid
    return result


def check_same_vectors(store: IndexStore, settings: dict[str, Any], out: Path) -> None:
    """Refuse to mix vectors of two models: an index whose recordings were embedded with other
    settings (e.g. a run folder retrained in place: same path, new weights) must be rebuilt."""
    import json

    recorded = store.settings
    now = json.loads(json.dumps(settings, default=str))
    if not recorded or recorded == now or not store.recordings():
        return
    changed = sorted(k for k in set(recorded) | set(now) if recorded.get(k) != now.get(k))
    detail = ", ".join(f"{k} {_brief(recorded.get(k))} -> {_brief(now.get(k))}" for k in changed[:3])
    raise ConfigError(f"{out}: its vectors were made with other model settings than model {store.model!r} has now ({detail}); "
                      f"re-embed everything with `sonalign index DIR --out {out} --rebuild`")


def _brief(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def build_index(
    root: str | Path,
    out: str | Path,
    *,
    model: str = "default",
    rebuild: bool = False,
    transcripts: bool = True,
    show_progress: bool = True,
    backend: str | None = None,
    uri: str | None = None,
    workers: int | None = None,
) -> IndexReport:
    """Index (or update the index of) every audio file under ``root`` into ``out``.

    ``backend="milvus"``, ``uri=...``: keep the vectors in a Milvus server (see :mod:`sonalign.index.milvus`).
    ``workers``: processes that segment and embed groups of files in parallel, each with
    ``cores // workers`` torch threads, while this process writes the store. ``None`` (default):
    one per CPU core (see :func:`resolve_workers`), at most one per group; 1: all in this process
    (CNN on every core, VAD in a thread beside it). Workers pay off because the CNN's threads no
    longer share the cores with the VAD thread, at the price of a copy of the models per worker
    (docs/performance.md has the measured speed and memory). A single long file is one group, so
    it is indexed in this process with every core.

    Recording ids are the file's path below ``root`` with its extension (``x/y.flac``), so two
    files never share one; a file that fails (unreadable, corrupt...) is reported and its earlier
    segments leave the index. An index made with other model weights is refused (``rebuild=True``
    re-embeds everything). Interrupted (Ctrl-C, SIGTERM), the workers are stopped at once and the
    files committed so far stay indexed.
    """
    from sonalign.utils.memory import limit_heap_fragmentation

    limit_heap_fragmentation()
    started = time.perf_counter()
    root = Path(root)
    files = find_audio_files(root)
    root_real = root.resolve() if root.is_dir() else None
    report = IndexReport(files=len(files))
    embedder = get_embedder(model)
    out = Path(out)
    store = IndexStore.open(out, create=True, rebuild=rebuild, model=embedder.name, dim=embedder.dim, backend=backend, uri=uri)
    indexer: Indexer | None = None
    pool: ProcessPoolExecutor | None = None
    finished = False
    try:
        settings = embedder.settings()
        check_same_vectors(store, settings, out)
        if store.settings != settings:
            store.set_meta("settings", settings)  # recorded with the first vectors made with them
        if root_real is not None:
            store.set_meta("root", str(root_real))
        memo = HashMemo(out / "hashes.json")
        indexed = store.recordings()  # {path: content_hash}
        wanted: dict[str, tuple[Path, str]] = {}
        for f in files:
            try:
                wanted[recording_key(f, root, root_real)] = (f, memo.hash(f))
            except OSError as exc:
                report.failures.append((str(f), f"cannot read file ({exc.strerror or exc})"))
        memo.save()
        for path in sorted(set(indexed) - set(wanted)):
            if root_real is not None and (Path(path).is_relative_to(root_real) or Path(path).is_relative_to(root.absolute())):
                store.remove_recording(path)
                report.removed += 1
        todo = [(p, f, h) for p, (f, h) in wanted.items() if indexed.get(p) != h]
        report.unchanged = len(wanted) - len(todo)
        last_commit, since_commit = time.monotonic(), 0
        groups = [[todo[i] for i in g] for g in plan_groups([f for _, f, _ in todo])]
        jobs = [[(f, recording_id_for(f, root if root_real is not None else None)) for _, f, _ in g] for g in groups]
        n_workers = report.workers = resolve_workers(workers, len(groups))
        taken: set[str] = set()

        def in_process(some: list[list[tuple[Path, str]]]) -> Iterator[list[FileResult | Failed]]:
            nonlocal indexer
            indexer = indexer or Indexer(store, model, transcripts=transcripts)
            return _groups_in_process(indexer, some)

        if n_workers > 1:
            threads = max(1, (os.cpu_count() or 1) // n_workers)
            pool = spawn_pool(n_workers, _init_worker, (model, transcripts, threads))
            stream = _groups_in_workers(pool, n_workers, jobs, in_process)
        else:
            stream = in_process(jobs)
        with progress(len(todo), "indexing", disable=not show_progress or not todo) as bar:
            for group, results in zip(groups, stream):
                for (path, f, h), res in zip(group, results):
                    bar.update(1)
                    reason = res.reason if isinstance(res, Failed) else _store_file(store, path, h, res, taken)
                    if reason is not None:
                        report.failures.append((str(f), reason))
                        if path in indexed:  # changed, and now unusable: its old segments must not answer queries
                            store.remove_recording(path)
                        continue
                    report.updated += path in indexed
                    report.added += path not in indexed
                    report.segments += len(res.segments)
                    report.audio_seconds += res.duration
                    since_commit += 1
                    if since_commit >= COMMIT_EVERY_FILES or time.monotonic() - last_commit > COMMIT_EVERY_SECONDS:
                        store.commit()
                        last_commit, since_commit = time.monotonic(), 0
        store.commit()
        finished = True
    finally:
        if indexer is not None:
            indexer.close(wait=finished)
        stop_pool(pool, wait=finished)
        store.close()
    report.wall_seconds = time.perf_counter() - started
    return report


def _store_file(store: IndexStore, path: str, content_hash: str, res: FileResult, taken: set[str]) -> str | None:
    """Upsert one embedded file; the reason it could not be stored, or None."""
    rid = unique_recording_id(store, res.recording_id, path, taken)
    try:
        store.upsert_recording(RecordingInfo(path=path, content_hash=content_hash, duration=res.duration, sample_rate=res.sample_rate, id=rid),
                               _renamed(res, rid).segments, res.vectors, res.texts, res.extras or None)
    except ValueError as exc:
        return str(exc)
    taken.add(rid)
    return None


