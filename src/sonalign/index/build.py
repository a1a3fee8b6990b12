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

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.audio.io import audio_info, find_audio_files, load_audio
from sonalign.errors import ConfigError, SonalignError
from sonalign.index.embedders import get_embedder
from sonalign.index.query import TRANSCRIPT, TRANSCRIPT_ENCODER
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.segments import Segment, recording_id_for, segment_id
from sonalign.utils.hashing import HashMemo
from sonalign.utils.processes import spawn_pool, stop_pool
from sonalign.utils.progress import progress

log = logging.getLogger(__name__)

COMMIT_EVERY_FILES = 20
COMMIT_EVERY_SECONDS = 30.0
#: Files of at most this length are decoded whole and batched with others; longer ones are streamed.
SHORT_FILE_SECONDS = 60.0
GROUP_FILES = 64
GROUP_SECONDS = 300.0
#: Spectrogram windows per CNN call (larger batches use oneDNN's kernels better; ~160 MB of activations).
CNN_BATCH = 64
#: The same in a single-threaded worker process: as fast as 64 there (52.3x either way on the
#: bench/index.py folders), and its peak RSS is ~120 MiB lower (670 against 788 MiB).
WORKER_CNN_BATCH = 32
#: Most worker processes ``workers=None`` starts.
MAX_AUTO_WORKERS = 8
#: A worker hands freed heap memory back to the system after a group once its RSS is above this
#: (its steady state is ~0.8 GiB; see _init_worker for why it does not fix the mmap threshold).
WORKER_TRIM_BYTES = 2**30
#: RAM per worker that ``workers=None`` assumes: a worker (models + a group's CNN activations)
#: peaked at 0.84 GiB in bench/index.py and at 0.98-1.36 GiB in bench/scaling.py (4.8k-38.6k
#: files: the heap still fragments slowly, see _init_worker); the rest is for the writer and the OS.
WORKER_MEMORY_BYTES = 3 * 2**29  # 1.5 GiB


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


@dataclass
class FileResult:
    """One file embedded: what :meth:`IndexStore.upsert_recording` needs (picklable, from a worker)."""

    recording_id: str
    duration: float
    sample_rate: int
    segments: list[Segment]
    vectors: np.ndarray
    texts: list[str | None]
    extras: dict[str, np.ndarray]


@dataclass
class Failed:
    """A file that could not be indexed, and why (errors cross process boundaries as this)."""

    reason: str


def overlap(a: Segment, b: Segment) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def merge_chunks(sounds: list[Segment], speech_segs: list[Segment], recording_id: str) -> list[Segment]:
    """Sound chunks that are not mostly speech, plus the speech chunks, ids in time order."""
    kept = [s for s in sounds if sum(overlap(s, v) for v in speech_segs) < 0.5 * s.duration]
    for s in kept:
        s.custom["kind"] = "sound"
    for s in speech_segs:
        s.custom["kind"] = "speech"
    merged = sorted(kept + speech_segs, key=lambda s: (s.start, s.end))
    for n, s in enumerate(merged):
        s.id = segment_id(recording_id, n)
    return merged


def segment_for_index(path: str | Path, recording_id: str, *, speech: bool = True, segmenters: dict[str, Any] | None = None) -> list[Segment]:
    """Sound chunks (energy gate) and speech chunks (silero-vad) of one file, ids in time order.

    Pass ``segmenters`` ({"energy": ..., "speech": ...}) to reuse instances across files: the
    speech segmenter loads silero's model once per instance.
    """
    from sonalign.segmenters import get_segmenter

    segmenters = segmenters or {}
    sounds = (segmenters.get("energy") or get_segmenter("energy")).segment_file(path, recording_id)
    speech_segs = (segmenters.get("speech") or get_segmenter("speech")).segment_file(path, recording_id) if speech else []
    return merge_chunks(sounds, speech_segs, recording_id)


@dataclass
class Prepared:
    """One file segmented and decoded, ready to embed (made in the prefetch thread)."""

    path: Path
    recording_id: str
    info: Any  # AudioInfo
    segments: list[Segment]
    waves: Any  # list of arrays, or a lazy SegmentWaves for long files
    native: tuple[np.ndarray, int] | None = None  # the whole decoded file (short files), for transcripts

    def span(self, segment: Segment, rate: int) -> np.ndarray:
        """A segment's samples at ``rate``: the same samples and resampling as ``load_audio(path, rate, start, duration)``."""
        if self.native is None:
            return load_audio(self.path, rate, start=segment.start, duration=segment.duration, allow_silent=True)[0]
        return span_of(*self.native, segment, rate)


def span_of(wave: np.ndarray, sr: int, segment: Segment, rate: int) -> np.ndarray:
    from sonalign.audio.io import resample

    first = round(segment.start * sr)
    part = wave[first : first + round(segment.duration * sr)]
    return part if rate == sr else resample(part, sr, rate)


class Indexer:
    """Embeds recordings into an :class:`IndexStore` with one embedder and optional transcripts.

    Files are processed in groups (:data:`GROUP_FILES` files, at most :data:`GROUP_SECONDS` of
    audio): the VAD streams of a group's short files share batched model calls and its segments
    share CNN batches, which is what makes folders of short clips fast (a 3 s clip alone is a
    batch of one). Files longer than :data:`SHORT_FILE_SECONDS` are streamed, one per group.
    """

    def __init__(self, store: IndexStore | None, model: str = "default", *, transcripts: bool = True, speech: bool = True, asr_process: bool = True,
                 cnn_batch: int = CNN_BATCH):
        self.store = store
        self.cnn_batch = cnn_batch
        self.embedder = get_embedder(model)
        self.transcripts = transcripts
        self.speech = speech
        from sonalign.segmenters import get_segmenter

        self.segmenters = {"energy": get_segmenter("energy"), "speech": get_segmenter("speech")}
        from sonalign.asr.worker import TranscriptWorker

        # pocketsphinx runs in its own process, beside the CNN (see embed_group)
        self.asr = TranscriptWorker(fast=True, in_process=not asr_process)

    def close(self, *, wait: bool = True) -> None:
        self.asr.close(wait=wait)

    def prepare(self, path: Path, recording_id: str) -> Prepared:
        """Segment one file (streamed: any length) and make its segment waves ready."""
        from sonalign.cache.features import EAGER_SECONDS, SegmentWaves

        info = audio_info(path)
        segments = segment_for_index(path, recording_id, speech=self.speech, segmenters=self.segmenters)
        segments = segments or self._whole_file(recording_id, info.duration)
        waves = SegmentWaves(path, self.embedder.sample_rate, segments)
        if sum(s.duration for s in segments) <= EAGER_SECONDS:
            waves = [waves[i] for i in range(len(segments))]
        return Prepared(Path(path), recording_id, info, segments, waves)

    @staticmethod
    def _whole_file(recording_id: str, duration: float) -> list[Segment]:
        # Not silent (the segmenters raise for that) but no quieter background to gate against,
        # e.g. a 0.2 s beep: the whole file is one sound segment.
        return [Segment(segment_id(recording_id, 0), recording_id, 0.0, duration, custom={"kind": "sound", "whole_file": True})]

    def prepare_group(self, files: list[tuple[Path, str]]) -> list[Prepared | SonalignError]:
        """:meth:`prepare` for several files; short ones share one batched VAD pass. A file that
        fails gives its error in its place and the others go on."""
        from sonalign.audio.io import resample

        out: list[Prepared | SonalignError | None] = [None] * len(files)
        short = []
        for i, (path, rid) in enumerate(files):
            try:
                info = audio_info(path)
                if info.duration > SHORT_FILE_SECONDS:
                    out[i] = self.prepare(path, rid)
                    continue
                wave, sr = load_audio(path)  # one decode at the native rate serves all three consumers
                sounds = self.segmenters["energy"].segment_wave(wave, sr, rid)
                short.append((i, path, rid, info, sounds, wave, sr))
            except SonalignError as exc:
                out[i] = exc
        waves16 = [resample(w, sr, 16000) for *_, w, sr in short]
        speech_lists = self.segmenters["speech"].segment_waves(waves16, [s[2] for s in short]) if self.speech and short else [[] for _ in short]
        for (i, path, rid, info, sounds, wave, sr), speech_segs in zip(short, speech_lists):
            segments = merge_chunks(sounds, speech_segs, rid) or self._whole_file(rid, info.duration)
            waves = [span_of(wave, sr, seg, self.embedder.sample_rate) for seg in segments]
            out[i] = Prepared(Path(path), rid, info, segments, waves, (wave, sr))
        return out  # type: ignore[return-value]

    def embed_group(self, group: list[Prepared]) -> list[tuple[list[Segment], np.ndarray, list[str | None], dict[str, np.ndarray]]]:
        """Vectors (and transcripts) for every segment of every prepared file, in file order.

        The speech segments go to the transcription worker first, so pocketsphinx decodes them
        while the CNN embeds the group.
        """
        from sonalign.cache.features import GROUP_SEGMENTS

        speech_rows = [[i for i, s in enumerate(p.segments) if s.custom.get("kind") == "speech"] if self.transcripts else [] for p in group]
        pending = self.asr.submit([p.span(p.segments[i], 16000) for p, rows in zip(group, speech_rows) for i in rows])
        flat = [(p, i) for p in group for i in range(len(p.segments))]
        vectors = np.concatenate([
            self.embedder.embed_segments([p.waves[i] for p, i in flat[lo : lo + GROUP_SEGMENTS]], batch_size=self.cnn_batch)
            for lo in range(0, len(flat), GROUP_SEGMENTS)
        ]) if flat else np.zeros((0, self.embedder.dim), np.float32)
        said = iter(pending.result())
        results, row = [], 0
        for p, rows in zip(group, speech_rows):
            texts: list[str | None] = [None] * len(p.segments)
            for i in rows:
                texts[i] = next(said) or None
            results.append((p.segments, vectors[row : row + len(p.segments)], texts, self._transcript_vectors(texts)))
            row += len(p.segments)
            for s, t in zip(p.segments, texts):
                s.text = t
        return results

    @staticmethod
    def _transcript_vectors(texts: list[str | None]) -> dict[str, np.ndarray]:
        from sonalign.encoders import get_text_encoder

        said = [i for i, t in enumerate(texts) if t]
        if not said:
            return {}
        text_encoder = get_text_encoder(TRANSCRIPT_ENCODER)
        matrix = np.zeros((len(texts), text_encoder.dim), np.float32)
        matrix[said] = text_encoder.encode([texts[i] for i in said], normalize_embeddings=True)["embedding"]
        return {TRANSCRIPT: matrix}

    def embed_prepared(self, prepared: list[Prepared | SonalignError]) -> list[FileResult | Failed]:
        """:meth:`embed_group` over the files that prepared; every file gets its result or failure."""
        ok = [p for p in prepared if isinstance(p, Prepared)]
        try:
            embedded = iter(self.embed_group(ok))
        except SonalignError as exc:
            return [Failed(_reason(p if isinstance(p, SonalignError) else exc)) for p in prepared]
        out: list[FileResult | Failed] = []
        for p in prepared:
            if isinstance(p, SonalignError):
                out.append(Failed(_reason(p)))
                continue
            segments, vectors, texts, extras = next(embedded)
            out.append(FileResult(p.recording_id, p.info.duration, p.info.sample_rate, segments, vectors, texts, extras))
        return out


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc)


_WORKER: Indexer | None = None


def _init_worker(model: str, transcripts: bool, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # No fixed mmap threshold here (the writer process keeps it, see build_index): with it, every
    # CNN activation (tens of MB a batch) is a fresh mapping whose pages the kernel zeroes, which
    # cost a worker ~20% more CPU time. Over a large collection a worker's heap still fragments,
    # so it trims the heap after a group once it is above WORKER_TRIM_BYTES
    # (_index_group_in_worker); its peak then grew from 0.98 GiB at 4.8k files to 1.36 GiB at
    # 38.6k (bench/scaling.py), against 0.69-0.84 GiB with the fixed threshold, for 11-12% more speed.
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
    the rest go to ``fallback``.
    """
    pending: deque[tuple[list[tuple[Path, str]], Future]] = deque()
    todo = deque(groups)
    succeeded = False
    while todo or pending:
        try:
            while todo and len(pending) < 2 * workers:
                pending.append((todo[0], pool.submit(_index_group_in_worker, todo[0])))
                todo.popleft()
            result = pending[0][1].result()
        except BrokenProcessPool as exc:
            rest = list(todo)
            if succeeded:
                for group, _ in pending:
                    yield [Failed(f"indexing worker process died ({exc}); not indexed, run again to retry") for _ in group]
            else:
                rest = [group for group, _ in pending] + rest
            log.warning("indexing worker processes unavailable (%s); indexing the remaining %d groups in this process", exc, len(rest))
            yield from fallback(rest)
            return
        pending.popleft()
        succeeded = True
        yield result


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


def plan_groups(files: list[Path]) -> list[list[int]]:
    """Consecutive files in groups of at most GROUP_FILES / GROUP_SECONDS; a long file alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    seconds = 0.0
    for i, f in enumerate(files):
        try:
            d = audio_info(f).duration
        except SonalignError:
            d = 0.0  # reported when the group is prepared
        if d > SHORT_FILE_SECONDS:
            groups += [current] if current else []
            groups.append([i])
            current, seconds = [], 0.0
            continue
        if current and (len(current) >= GROUP_FILES or seconds + d > GROUP_SECONDS):
            groups.append(current)
            current, seconds = [], 0.0
        current.append(i)
        seconds += d
    if current:
        groups.append(current)
    return groups


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

