"""Segmenting and embedding recordings for the index, a group of files at a time.

Segmentation: silence-aware ``energy`` chunks for sounds, ``speech`` (silero-vad) chunks where
speech is detected; a sound chunk that lies mostly inside speech is dropped in favour of the speech
chunk. Speech segments also get a pocketsphinx transcript, embedded with the text encoder as a
second ("transcript") vector that search fuses with the acoustic score. Files are processed in
groups (:func:`plan_groups`): the VAD streams of a group's short files share batched model calls and
its segments share CNN batches; a long file is streamed, alone in its group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.audio.io import audio_info, load_audio
from sonalign.errors import SonalignError
from sonalign.index.embedders import get_embedder
from sonalign.index.query import TRANSCRIPT, TRANSCRIPT_ENCODER
from sonalign.index.store import IndexStore
from sonalign.segments import Segment, segment_id

#: Files of at most this length are decoded whole and batched with others; longer ones are streamed.
SHORT_FILE_SECONDS = 60.0
GROUP_FILES = 64
GROUP_SECONDS = 300.0
#: Spectrogram windows per CNN call (larger batches use oneDNN's kernels better; ~160 MB of activations).
CNN_BATCH = 64

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


