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

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.audio.io import audio_info, find_audio_files, load_audio
from sonalign.errors import SonalignError
from sonalign.index.embedders import get_embedder
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.pipeline import recording_id_for
from sonalign.segments import Segment, segment_id
from sonalign.utils.hashing import HashMemo
from sonalign.utils.progress import progress

TRANSCRIPT = "transcript"
TRANSCRIPT_ENCODER = "minilm-l6"
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
    failures: list[tuple[str, str]] = field(default_factory=list)


def overlap(a: Segment, b: Segment) -> float:
    return max(0.0, min(a.end, b.end) - max(a.start, b.start))


def segment_for_index(path: str | Path, recording_id: str, *, speech: bool = True, segmenters: dict[str, Any] | None = None) -> list[Segment]:
    """Sound chunks (energy gate) and speech chunks (silero-vad) of one file, ids in time order.

    Pass ``segmenters`` ({"energy": ..., "speech": ...}) to reuse instances across files: the
    speech segmenter loads silero's model once per instance.
    """
    from sonalign.segmenters import get_segmenter

    segmenters = segmenters or {}
    sounds = (segmenters.get("energy") or get_segmenter("energy")).segment_file(path, recording_id)
    speech_segs = (segmenters.get("speech") or get_segmenter("speech")).segment_file(path, recording_id) if speech else []
    kept = [s for s in sounds if sum(overlap(s, v) for v in speech_segs) < 0.5 * s.duration]
    for s in kept:
        s.custom["kind"] = "sound"
    for s in speech_segs:
        s.custom["kind"] = "speech"
    merged = sorted(kept + speech_segs, key=lambda s: (s.start, s.end))
    for n, s in enumerate(merged):
        s.id = segment_id(recording_id, n)
    return merged


class Indexer:
    """Embeds recordings into an :class:`IndexStore` with one embedder and optional transcripts."""

    def __init__(self, store: IndexStore, model: str = "default", *, transcripts: bool = True, speech: bool = True):
        self.store = store
        self.embedder = get_embedder(model)
        self.transcripts = transcripts
        self.speech = speech
        from sonalign.segmenters import get_segmenter

        self.segmenters = {"energy": get_segmenter("energy"), "speech": get_segmenter("speech")}
        self._asr = None
        self._text = None

    def _asr_and_text(self):
        if self._asr is None:
            from sonalign.encoders import get_audio_encoder, get_text_encoder

            self._asr = get_audio_encoder("pocketsphinx", fast=True)
            self._text = get_text_encoder(TRANSCRIPT_ENCODER)
        return self._asr, self._text

    def prepare(self, path: Path, recording_id: str) -> tuple[list[Segment], Any]:
        """Segment one file and make its segment waves ready (I/O and VAD: runs in a prefetch thread)."""
        from sonalign.cache.features import EAGER_SECONDS, SegmentWaves

        segments = segment_for_index(path, recording_id, speech=self.speech, segmenters=self.segmenters)
        if not segments:
            # Not silent (the segmenters raise for that) but no quieter background to gate against,
            # e.g. a 0.2 s beep: the whole file is one sound segment.
            info = audio_info(path)
            segments = [Segment(segment_id(recording_id, 0), recording_id, 0.0, info.duration, custom={"kind": "sound", "whole_file": True})]
        waves = SegmentWaves(path, self.embedder.sample_rate, segments)
        if sum(s.duration for s in segments) <= EAGER_SECONDS:
            waves = [waves[i] for i in range(len(segments))]
        return segments, waves

    def embed_file(self, path: Path, recording_id: str, prepared: tuple[list[Segment], Any] | None = None
                   ) -> tuple[list[Segment], np.ndarray, list[str | None], dict[str, np.ndarray]]:
        from sonalign.cache.features import GROUP_SEGMENTS

        segments, waves = prepared or self.prepare(path, recording_id)
        vectors = np.concatenate([
            self.embedder.embed_segments([waves[i] for i in range(lo, min(lo + GROUP_SEGMENTS, len(segments)))])
            for lo in range(0, len(segments), GROUP_SEGMENTS)
        ])
        texts: list[str | None] = [None] * len(segments)
        extras: dict[str, np.ndarray] = {}
        speech_rows = [i for i, s in enumerate(segments) if s.custom.get("kind") == "speech"]
        if self.transcripts and speech_rows:
            asr, text_encoder = self._asr_and_text()
            for i in speech_rows:
                wave16k, _ = load_audio(path, 16000, start=segments[i].start, duration=segments[i].duration, allow_silent=True)
                texts[i] = asr.transcribe(wave16k) or None
            said = [i for i in speech_rows if texts[i]]
            if said:
                matrix = np.zeros((len(segments), text_encoder.dim), np.float32)
                matrix[said] = text_encoder.encode([texts[i] for i in said], normalize_embeddings=True)["embedding"]
                extras[TRANSCRIPT] = matrix
        for s, t in zip(segments, texts):
            s.text = t
        return segments, vectors, texts, extras


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
) -> IndexReport:
    """Index (or update the index of) every audio file under ``root`` into ``out``.

    ``backend="milvus"``, ``uri=...``: keep the vectors in a Milvus server (see :mod:`sonalign.index.milvus`).
    """
    started = time.perf_counter()
    root = Path(root)
    files = find_audio_files(root)
    base = root if root.is_dir() else None
    report = IndexReport(files=len(files))
    embedder = get_embedder(model)
    store = IndexStore.open(out, create=True, rebuild=rebuild, model=embedder.name, dim=embedder.dim, settings=embedder.settings(), backend=backend, uri=uri)
    try:
        memo = HashMemo(Path(out) / "hashes.json")
        indexed = store.recordings()  # {path: content_hash}
        wanted: dict[str, tuple[Path, str]] = {}
        for f in files:
            try:
                wanted[str(f.resolve())] = (f, memo.hash(f))
            except OSError as exc:
                report.failures.append((str(f), f"cannot read file ({exc.strerror or exc})"))
        memo.save()
        for path in sorted(set(indexed) - set(wanted)):
            if root.is_dir() and Path(path).is_relative_to(root.resolve()):
                store.remove_recording(path)
                report.removed += 1
        todo = [(p, f, h) for p, (f, h) in wanted.items() if indexed.get(p) != h]
        report.unchanged = len(wanted) - len(todo)
        indexer = Indexer(store, model, transcripts=transcripts)
        last_commit, since_commit = time.monotonic(), 0
        rid_of = lambda f: recording_id_for(f.resolve(), base.resolve() if base else None)  # noqa: E731
        with progress(len(todo), "indexing", disable=not show_progress or not todo) as bar, ThreadPoolExecutor(max_workers=1) as pool:
            # The next file is segmented (decode + VAD) while this one is embedded.
            ahead = [pool.submit(indexer.prepare, f, rid_of(f)) for _, f, _ in todo[:1]]
            for n, (path, f, h) in enumerate(todo):
                if n + 1 < len(todo):
                    ahead.append(pool.submit(indexer.prepare, todo[n + 1][1], rid_of(todo[n + 1][1])))
                try:
                    prepared = ahead[n].result()
                    ahead[n] = None
                    info = audio_info(f)
                    segments, vectors, texts, extras = indexer.embed_file(f, rid_of(f), prepared)
                    store.upsert_recording(RecordingInfo(path=path, content_hash=h, duration=info.duration, sample_rate=info.sample_rate, id=rid_of(f)),
                                           segments, vectors, texts, extras or None)
                    report.updated += path in indexed
                    report.added += path not in indexed
                    report.segments += len(segments)
                    report.audio_seconds += info.duration
                    since_commit += 1
                except SonalignError as exc:
                    report.failures.append((str(f), getattr(exc, "reason", str(exc))))
                bar.update(1)
                if since_commit >= COMMIT_EVERY_FILES or time.monotonic() - last_commit > COMMIT_EVERY_SECONDS:
                    store.commit()
                    last_commit, since_commit = time.monotonic(), 0
        store.commit()
    finally:
        store.close()
    report.wall_seconds = time.perf_counter() - started
    return report


def searcher_for_store(store: IndexStore, *, model: str | None = None, fusion_weight: float = 0.5):
    """A :class:`~sonalign.index.query.Searcher` over an open store, with the model it was built with."""
    from sonalign.encoders import get_text_encoder
    from sonalign.index.query import Searcher

    embedder = get_embedder(model or store.model or "default")

    def embed_audio(wave: np.ndarray, sr: int) -> np.ndarray:
        from sonalign.audio.io import resample

        return embedder.embed_segments([resample(np.asarray(wave, np.float32), sr, embedder.sample_rate)])

    def embed_transcript_space(texts: list[str]) -> np.ndarray:
        return get_text_encoder(TRANSCRIPT_ENCODER).encode(list(texts), normalize_embeddings=True)["embedding"]

    return Searcher(store, embedder.embed_text, embed_audio, embed_transcript_space, fusion_weight)


def make_searcher(idx: str | Path, *, model: str | None = None, fusion_weight: float = 0.5):
    """Open ``idx`` read-only and return a searcher over it."""
    return searcher_for_store(IndexStore.open(idx, readonly=True), model=model, fusion_weight=fusion_weight)
