"""The feature cache: segment, frame and token features of frozen encoders on disk.

Layout of ``OUT`` (several encoder/segmenter settings can share one folder)::

    audio/{audio_key}/{h[:2]}/{h}.safetensors   one file per recording, h = sha256 of its bytes
    text/{text_key}/shard-*.safetensors          text features (see text_store.py)
    views/{audio_key}-{text_key}/                row-aligned metadata of one source:
        clips.jsonl          one row per clip (id, audio, content_hash, split, label, texts, ...)
        segments.jsonl       one row per segment, row-aligned with segment_embeddings.npy
        segment_embeddings.npy
        settings.json, errors.jsonl
    hashes.json                                  stat-keyed memo of content hashes

``audio_key`` hashes the audio encoder's settings, the segmenter's settings and this module's
format version, so changing any of them gives new files instead of stale ones.
``with_levels`` (off by default; asked for by models that align the encoders' own levels, e.g.
HADE) also caches the encoders' intermediate outputs: ``frames_{level}`` per recording (same frame
grid and ``frame_offsets`` as ``frames``) and ``tokens_{level}`` per text. It enters the audio key and
the text store's key only when on, so existing caches and the default settings' files are unchanged. Each per-recording
file is written atomically and is complete or absent: a run killed midway and started again
skips what is there and finishes the rest; a run over an unchanged source does nothing.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from sonalign.audio.io import load_audio
from sonalign.data.clips import Clip
from sonalign.data.readers import load_clips, problem_report
from sonalign.errors import AudioError, ConfigError, SonalignError
from sonalign.segments import Segment
from sonalign.utils.atomic import atomic_path, atomic_write_text
from sonalign.utils.paths import CACHE_ENV, default_cache_dir  # noqa: F401 (re-exported)
from sonalign.utils.hashing import HashMemo, settings_hash
from sonalign.utils.progress import progress

FORMAT_VERSION = 2  # 2: one sorted metadata entry per file (byte-identical runs)
#: Log-mel settings for CALM's SpecTran (16 kHz, 25 ms / 10 ms, 64 bins).
MEL_SETTINGS = {"sample_rate": 16000, "n_fft": 400, "hop_length": 160, "win_length": 400, "n_mels": 64, "f_min": 0.0, "f_max": 8000.0}


#: Recordings up to this long are decoded whole in the prefetch thread; longer ones lazily, per group.
EAGER_SECONDS = 600.0
#: Segments decoded and encoded together (bounds memory on hour-long recordings).
GROUP_SEGMENTS = 64


class SegmentWaves:
    """Lazy, indexable waves of a recording's segments: ``waves[i]`` decodes segment ``i`` only."""

    def __init__(self, path: str | Path, sample_rate: int, segments: list[Segment]):
        self.path, self.sample_rate, self.segments = path, sample_rate, segments

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> np.ndarray:
        s = self.segments[i]
        return load_audio(self.path, self.sample_rate, start=s.start, duration=s.duration, allow_silent=True)[0]


@dataclass
class FeatureSettings:
    audio_encoder: str = "aisfx-cnn"
    text_encoder: str = "minilm-l6"
    segmenter: str = "fixed"
    segmenter_options: dict[str, Any] = field(default_factory=dict)
    with_mel: bool = False
    #: also cache the encoders' intermediate levels (``levels`` of each encoder)
    with_levels: bool = False


def settings_dict(settings: FeatureSettings) -> dict[str, Any]:
    """``asdict`` without ``with_levels`` when it is off: what files written before that option recorded."""
    out = asdict(settings)
    if not out.get("with_levels"):
        out.pop("with_levels", None)
    return out


@dataclass
class ExtractionReport:
    clips: int = 0
    encoded: int = 0
    cached: int = 0
    texts_encoded: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    view: str = ""

    @property
    def nothing_done(self) -> bool:
        return self.encoded == 0 and self.texts_encoded == 0


def encoder_levels(settings: FeatureSettings, audio_encoder: Any, text_encoder: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The intermediate levels of each encoder that ``settings.with_levels`` asks for (none otherwise)."""
    if not settings.with_levels:
        return (), ()
    audio, text = tuple(getattr(audio_encoder, "levels", None) or ()), tuple(getattr(text_encoder, "levels", None) or ())
    if not audio or not text:
        raise ConfigError(f"with_levels: {settings.audio_encoder if not audio else settings.text_encoder} has no intermediate levels to cache")
    return audio, text


def encode_segments(encoder: Any, waves: Any, n: int, *, levels: tuple[str, ...] = (), with_mel: bool = False, batch_size: int = 32) -> dict[str, np.ndarray]:
    """The ``n`` segment waves (a list or a lazy :class:`SegmentWaves`) through ``encoder``, in the
    cache's per-recording layout: ``embedding`` (n, D), ``frames`` + ``frame_offsets``, the asked
    intermediate ``frames_{level}``, and ``mel`` + ``mel_offsets`` when ``with_mel``. Segments are
    decoded and encoded ``GROUP_SEGMENTS`` at a time, so a long recording never sits in memory
    whole. The feature cache and the index (:mod:`sonalign.index.embedders`) both encode here.
    """
    embeddings, frames, mels = [], [], []
    level_frames: dict[str, list[np.ndarray]] = {name: [] for name in levels}
    sr = encoder.sample_rate
    for lo in range(0, n, GROUP_SEGMENTS):
        group = [waves[i] for i in range(lo, min(lo + GROUP_SEGMENTS, n))]
        out = encoder.encode(group, batch_size=batch_size, levels=True) if levels else encoder.encode(group, batch_size=batch_size)
        mask = np.asarray(out["frames_mask"], dtype=bool)
        embeddings.append(np.asarray(out["embedding"], dtype=np.float32))
        frames.extend(np.asarray(out["frames"][i][mask[i]], dtype=np.float32) for i in range(len(group)))
        for name in levels:
            level_frames[name].extend(np.asarray(out[f"frames_{name}"][i][mask[i]], dtype=np.float32) for i in range(len(group)))
        if with_mel:
            from sonalign.audio.io import resample
            from sonalign.audio.mel import log_mel

            mels.extend(np.asarray(log_mel(resample(w, sr, MEL_SETTINGS["sample_rate"]), **MEL_SETTINGS), dtype=np.float32) for w in group)
    data: dict[str, np.ndarray] = {
        "embedding": np.ascontiguousarray(np.concatenate(embeddings)) if embeddings else np.zeros((0, encoder.dim), np.float32),
        "frames": np.concatenate(frames) if frames else np.zeros((0, encoder.dim), np.float32),
        "frame_offsets": np.concatenate([[0], np.cumsum([f.shape[0] for f in frames])]).astype(np.int64),
    }
    if with_mel:
        data["mel"] = np.concatenate(mels)
        data["mel_offsets"] = np.concatenate([[0], np.cumsum([m.shape[0] for m in mels])]).astype(np.int64)
    for name in levels:
        data[f"frames_{name}"] = np.concatenate(level_frames[name])
    return data


class FeatureCache:
    """Opens (or creates) a cache folder for one combination of encoders and segmenter."""

    def __init__(self, root: str | Path, settings: FeatureSettings | None = None):
        from sonalign.encoders import get_audio_encoder, get_text_encoder
        from sonalign.segmenters import get_segmenter

        self.root = Path(root)
        self.settings = settings or FeatureSettings()
        self.audio_encoder = get_audio_encoder(self.settings.audio_encoder)
        self.text_encoder = get_text_encoder(self.settings.text_encoder)
        self.segmenter = get_segmenter(self.settings.segmenter, **self.settings.segmenter_options)
        self.audio_settings = {
            "format": FORMAT_VERSION,
            "encoder": self.audio_encoder.settings(),
            "segmenter": self.segmenter.settings(),
            "mel": MEL_SETTINGS if self.settings.with_mel else None,
        }
        self.audio_levels, self.text_levels = encoder_levels(self.settings, self.audio_encoder, self.text_encoder)
        if self.audio_levels:
            self.audio_settings["levels"] = list(self.audio_levels)
        self.audio_key = settings_hash(self.audio_settings)
        from sonalign.cache.text_store import TextFeatureStore

        self.text_store = TextFeatureStore(self.root, self.text_encoder, self.text_levels)
        self.view_dir = self.root / "views" / f"{self.audio_key}-{self.text_store.key}"
        self.memo = HashMemo(self.root / "hashes.json")

    # ---- per-recording files -------------------------------------------------------------
    def audio_path(self, content_hash: str) -> Path:
        return self.root / "audio" / self.audio_key / content_hash[:2] / f"{content_hash}.safetensors"

    def has_audio(self, content_hash: str) -> bool:
        return self.audio_path(content_hash).exists()

    def load_audio_features(self, content_hash: str) -> dict[str, Any]:
        """``embedding`` (S, D), ``frames`` (F, D), ``frame_offsets`` (S+1,), ``segments`` list, ``mel`` (T, M) if cached."""
        return _read_features(self.audio_path(content_hash))

    def _load_segments(self, clip: Clip) -> tuple[list[np.ndarray], list[Segment]]:
        """Segment one recording and read each segment at the encoder's rate (I/O-bound: prefetch thread)."""
        sr = self.audio_encoder.sample_rate
        if clip.start > 0:
            wave, _ = load_audio(clip.audio, sr, start=clip.start, duration=clip.duration)
            return self._cut(wave, sr, clip.id)
        segments = self.segmenter.segment_file(clip.audio, clip.id)
        if not segments:
            raise AudioError(clip.audio, "no segment found (all audio below the segmenter's threshold)")
        waves = SegmentWaves(clip.audio, sr, segments)
        if sum(s.duration for s in segments) <= EAGER_SECONDS:
            waves = [waves[i] for i in range(len(segments))]  # short recordings: decode in the prefetch thread
        return waves, segments

    def _cut(self, wave: np.ndarray, sr: int, recording_id: str) -> tuple[list[np.ndarray], list[Segment]]:
        segments = self.segmenter.segment_wave(wave, sr, recording_id)
        if not segments:
            raise AudioError(recording_id, "no segment found (all audio below the segmenter's threshold)")
        waves = [wave[int(round(s.start * sr)) : int(round(s.end * sr))] for s in segments]
        return waves, segments

    def encode_segments(self, waves: Any, segments: list[Segment], batch_size: int = 32) -> dict[str, Any]:
        """Encoder outputs for already-cut segments, in the cache's per-recording layout (see :func:`encode_segments`)."""
        return {**encode_segments(self.audio_encoder, waves, len(segments), levels=self.audio_levels, with_mel=self.settings.with_mel,
                                  batch_size=batch_size), "segments": [s.to_dict() for s in segments]}

    def features_from_wave(self, wave: np.ndarray, sample_rate: int, recording_id: str, batch_size: int = 32) -> dict[str, Any]:
        """Segment and encode an in-memory waveform (e.g. a noisy mixture); nothing is written."""
        from sonalign.audio.io import resample

        sr = self.audio_encoder.sample_rate
        waves, segments = self._cut(resample(wave, sample_rate, sr), sr, recording_id)
        return self.encode_segments(waves, segments, batch_size)

    def noisy_features(self, clip: Clip, bank: Any, snr_db: float, noise_key: str) -> dict[str, Any]:
        """Features of ``clip`` mixed with ``bank``'s noise at ``snr_db`` (cached under ``noisy/``).

        The whole recording is mixed before segmentation, as a noisy recording would arrive.
        """
        h = self.memo.hash(clip.audio)
        path = self.root / "noisy" / self.audio_key / noise_key / f"{snr_db:g}dB" / h[:2] / f"{h}.safetensors"
        if not path.exists():
            sr = self.audio_encoder.sample_rate
            wave, _ = load_audio(clip.audio, sr, start=clip.start, duration=clip.duration if clip.start > 0 else None)
            mixed = np.asarray(bank.mix(wave, clip.id, snr_db), dtype=np.float32)
            data = self.features_from_wave(mixed, sr, clip.id)
            self._write_to(path, data, clip.audio)
        return _read_features(path)

    def _write(self, content_hash: str, data: dict[str, Any], source: str) -> None:
        self._write_to(self.audio_path(content_hash), data, source)

    def _write_to(self, path: Path, data: dict[str, Any], source: str) -> None:
        tensors = {k: v for k, v in data.items() if k != "segments"}
        # One metadata entry: safetensors keeps metadata in a hash map whose order changes from
        # process to process, and the file must be byte-identical for the same input.
        meta = {"sonalign": json.dumps({"segments": data["segments"], "source": source}, sort_keys=True)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def reload_text_store(self) -> None:
        """Re-read the text store's shards (after another process, e.g. rank 0, added some)."""
        from sonalign.cache.text_store import TextFeatureStore

        self.text_store = TextFeatureStore(self.root, self.text_encoder, self.text_levels)

    # ---- whole sources ---------------------------------------------------------------------
    def extract(
        self,
        clips: list[Clip],
        *,
        batch_size: int = 32,
        show_progress: bool = True,
        texts: list[str] | None = None,
    ) -> ExtractionReport:
        """Make sure every clip (and every text) has cached features; write the view.

        Data parallel (a process group of several ranks is up, e.g. under torchrun; every rank
        calls this with the same clips): rank r encodes the recordings whose content hash h has
        ``int(h, 16) % world == r`` (per-recording files are content-addressed and atomic, so ranks
        never conflict), then rank 0 encodes the texts and writes the merged view, bit-identical to
        a single-process run. Every rank returns the same, merged report.
        """
        from sonalign import distributed

        rank, world = (distributed.rank(), distributed.world_size()) if distributed.is_dist() else (0, 1)
        started = time.perf_counter()
        report = ExtractionReport(clips=len(clips), view=str(self.view_dir))
        rows: list[dict[str, Any]] = []
        todo: list[tuple[Clip, str]] = []
        for clip in clips:
            try:
                h = self.memo.hash(clip.audio)
            except OSError as exc:
                report.failures.append((clip.audio, f"cannot read file ({exc.strerror or exc})"))
                continue
            rows.append({"clip": clip, "hash": h})
            if self.has_audio(h):
                report.cached += 1
            else:
                todo.append((clip, h))
        if rank == 0:
            self.memo.save()
        failed: set[str] = {p for p, _ in report.failures}
        if world > 1:
            distributed.barrier()  # every rank has its to-do list before any rank writes a file
        mine = [(i, clip, h) for i, (clip, h) in enumerate(todo) if distributed.owns(h, rank, world)]
        encode_failures: list[tuple[int, str, str]] = []  # (index in todo, audio, reason)
        seconds: list[tuple[int, float]] = []  # (index in todo, audio seconds encoded)
        duplicates = 0
        with ThreadPoolExecutor(max_workers=1) as pool, progress(len(mine), "features", disable=not show_progress or not mine or rank != 0) as bar:
            futures = [pool.submit(self._load_segments, clip) for _, clip, _ in mine[:2]]
            for k, (i, clip, h) in enumerate(mine):
                if k + 2 < len(mine):
                    futures.append(pool.submit(self._load_segments, mine[k + 2][1]))
                try:
                    waves, segments = futures[k].result()
                    futures[k] = None  # free the decoded audio
                    if self.has_audio(h):  # a duplicate file earlier in this run (same hash: same rank)
                        duplicates += 1
                    else:
                        self._write(h, self.encode_segments(waves, segments, batch_size), clip.audio)
                        report.encoded += 1
                        seconds.append((i, float(sum(s.duration for s in segments))))
                except SonalignError as exc:
                    encode_failures.append((i, clip.audio, getattr(exc, "reason", str(exc))))
                bar.update(1)
        if world > 1:  # merge every rank's part (this is also the barrier before the view)
            parts = distributed.all_gather_object({"encoded": report.encoded, "duplicates": duplicates, "failures": encode_failures, "seconds": seconds})
            report.encoded = sum(p["encoded"] for p in parts)
            duplicates = sum(p["duplicates"] for p in parts)
            encode_failures = sorted(f for p in parts for f in p["failures"])
            seconds = sorted(s for p in parts for s in p["seconds"])
        report.cached += duplicates
        for _, audio, why in sorted(encode_failures):
            report.failures.append((audio, why))
            failed.add(audio)
        for _, s in sorted(seconds):
            report.audio_seconds += s
        if rank == 0:
            all_texts = sorted({t for r in rows for t in r["clip"].texts} | set(texts or []))
            report.texts_encoded = self.text_store.ensure(all_texts, show_progress_bar=show_progress and len(all_texts) > 256)
            self._write_view([r for r in rows if r["clip"].audio not in failed], report)
        if world > 1:
            report.texts_encoded = distributed.broadcast_object(report.texts_encoded)  # waits for rank 0's view
            if rank != 0:
                self.reload_text_store()
        report.wall_seconds = time.perf_counter() - started
        return report

    def _write_view(self, rows: list[dict[str, Any]], report: ExtractionReport) -> None:
        clip_rows = []
        seg_rows = []
        embeddings = []
        for r in rows:
            clip: Clip = r["clip"]
            data = self.load_audio_features(r["hash"])
            clip_rows.append({**asdict(clip), "content_hash": r["hash"], "n_segments": len(data["segments"])})
            for s, e in zip(data["segments"], data["embedding"]):
                seg_rows.append({**s, "clip_id": clip.id, "audio": clip.audio, "content_hash": r["hash"]})
                embeddings.append(e)
        clips_text = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in clip_rows)
        errors_text = "".join(json.dumps({"audio": p, "error": why}) + "\n" for p, why in report.failures)
        digest = settings_hash([clips_text, errors_text], 32)
        settings_file = self.view_dir / "settings.json"
        if settings_file.exists() and json.loads(settings_file.read_text()).get("digest") == digest:
            return  # unchanged source: nothing to rewrite
        self.view_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.view_dir / "clips.jsonl", clips_text)
        atomic_write_text(self.view_dir / "segments.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in seg_rows))
        matrix = np.stack(embeddings) if embeddings else np.zeros((0, self.audio_encoder.dim), np.float32)
        with atomic_path(self.view_dir / "segment_embeddings.npy") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, matrix)
        atomic_write_text(self.view_dir / "errors.jsonl", errors_text)
        view_settings = {"digest": digest, "audio": self.audio_settings, "text": self.text_encoder.settings(), "feature_settings": settings_dict(self.settings)}
        atomic_write_text(settings_file, json.dumps(view_settings, indent=2, default=str))


def _read_features(path: Path) -> dict[str, Any]:
    with safe_open(str(path), "np") as handle:
        data = {k: handle.get_tensor(k) for k in handle.keys()}
        data["segments"] = json.loads(handle.metadata()["sonalign"])["segments"]
    return data


def extract_features(
    source: str | Path,
    out: str | Path,
    settings: FeatureSettings | None = None,
    *,
    split: str | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
) -> ExtractionReport:
    """Public entry point behind ``sonalign features``: read ``source``, cache its features in ``out``.

    Under torchrun (``WORLD_SIZE > 1``) every rank runs this: a gloo process group is started (if
    none is up), the recordings are sharded by content hash and rank 0 writes the merged view.
    """
    from sonalign import distributed

    with distributed.session("gloo"):
        clips = load_clips(source, split=split)
        cache = FeatureCache(out, settings)
        report = cache.extract(clips, batch_size=batch_size, show_progress=show_progress)
        report.failures[:0] = problem_report(clips)  # manifest rows that were skipped, by file and line
        return report
