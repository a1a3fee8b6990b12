"""``speech``: speech chunking with silero-vad (the TorchScript model shipped in the ``silero-vad``
package, loaded offline; onnxruntime is not needed).

1. The file is streamed and resampled to 16 kHz (``stream_audio``); every 512-sample window
   (32 ms) gets a speech probability from the recurrent model. The last partial window is
   zero-padded, as silero's ``get_speech_timestamps`` does. Only the probabilities (and window
   levels) are kept. The model is run on *streams* of 10.24 s (``STREAM_WINDOWS``), 32 streams per
   batched call: each call of the recurrent model has a fixed interpreter overhead whatever the
   batch, so batched streams cost a fraction of one pass (docs/performance.md). The first stream of a file starts from a reset state, exactly like one pass over the
   file; every later stream starts from a reset state primed with the 1.02 s of audio before it
   (``WARMUP_WINDOWS``). Silero's state carries long context, so the probabilities differ from a
   single pass (a small share of windows fall on the other side of 0.5); the segments after
   post-processing are nearly the same (see ``tests/segmenters/test_speech.py``).
   :meth:`SpeechSegmenter.segment_waves` batches the streams of many short files together.
2. Thresholds with hysteresis as in ``get_speech_timestamps``: speech starts where the probability
   reaches ``threshold`` (0.5) and continues until it drops below ``neg_threshold`` (default
   ``threshold - 0.15``); runs also extend backwards while above ``neg_threshold``.
3. The shared post-processing (see ``base``), with defaults chosen for utterance-sized chunks that
   an ASR cascade or a text search can use: merge pauses shorter than ``merge_gap`` (0.5 s; silero's
   100 ms would split at most word pauses), drop runs shorter than ``min_duration`` (0.25 s,
   silero's default ``min_speech_duration_ms``), pad by ``padding`` (0.1 s: the VAD reacts a few
   windows late at onsets and early at offsets), split runs longer than ``max_duration`` (15 s:
   sentence-sized search hits, well inside Whisper's 30 s window) at the least speech-like window
   within ``split_search`` (1 s) of each near-equal cut.

Deterministic: the model runs single-threaded (``torch.set_num_threads(1)`` for the duration of a
file, restored afterwards; a small recurrent model gains nothing from a thread team) in inference
mode on the plain TorchScript interpreter (no warm-up re-optimisation), state reset per file. One
segmenter instance processes one file at a time (a lock). ``custom={"kind": "speech",
"speech_prob": mean probability, "rms_db": level}``.
"""

from __future__ import annotations

import importlib.metadata
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import ConfigError
from sonalign.segmenters.base import (
    DEFAULT_BLOCK_SECONDS,
    Framer,
    Segmenter,
    check_positive,
    frame_mean_square,
    to_db,
)
from sonalign.segmenters.postprocess import (
    frame_range,
    hysteresis,
    make_segments,
)
from sonalign.segments import Segment
from sonalign.utils.paths import package_file

SAMPLE_RATE = 16000
WINDOW = 512  # samples per VAD decision at 16 kHz (32 ms)
STREAM_WINDOWS = 320  # 10.24 s: the recurrent state restarts every stream (see module docstring)
WARMUP_WINDOWS = 32  # 1.02 s of the preceding audio primes each stream after the first
STREAM_BATCH = 32  # streams per batched model call (bounds a long file's buffer to ~21 MB)
MANY_BATCH = 128  # streams per call in segment_waves (short files: the batch is the speed-up)


def silero_model_path() -> Path:
    """The TorchScript silero-vad model inside the installed package (whose ``__init__`` would set
    torch's global thread count)."""
    return package_file("silero_vad", "data/silero_vad.jit", "the speech segmenter")


def silero_version() -> str:
    try:
        return importlib.metadata.version("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextmanager
def _single_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)


class SpeechSegmenter(Segmenter):
    name = "speech"
    description = (
        "Speech chunks from silero-vad at 16 kHz (threshold 0.5 / 0.35 hysteresis); merges pauses < 0.5 s, "
        "drops < 0.25 s, pads 0.1 s, splits runs longer than max_duration (default 15 s)."
    )
    version = 2  # 2: batched streams of 10.24 s (1: one recurrent pass over the whole file)

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        merge_gap: float = 0.5, min_duration: float = 0.25, max_duration: float | None = 15.0,
        padding: float = 0.1, short: str = "drop", split_search: float = 1.0,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
    ):
        self.threshold = check_positive("threshold", threshold)
        if self.threshold >= 1:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        self.neg_threshold = max(self.threshold - 0.15, 0.01) if neg_threshold is None else check_positive("neg_threshold", neg_threshold)
        if self.neg_threshold > self.threshold:
            raise ConfigError(f"neg_threshold ({self.neg_threshold}) must not exceed threshold ({self.threshold})")
        self.set_activity_options(merge_gap, min_duration, max_duration, padding, short, split_search)
        self.block_seconds = check_positive("block_seconds", block_seconds)
        self._model = None
        self._lock = threading.Lock()

    def settings(self) -> dict[str, Any]:
        return {
            "segmenter": self.name,
            "version": self.version,
            "model": f"silero-vad=={silero_version()}",
            "sample_rate": SAMPLE_RATE,
            "window": WINDOW,
            "stream_windows": STREAM_WINDOWS,
            "warmup_windows": WARMUP_WINDOWS,
            "threshold": self.threshold,
            "neg_threshold": round(self.neg_threshold, 6),
            **self.activity_options(),
        }

    def analysis_rate(self, native_rate: int) -> int:
        return SAMPLE_RATE

    def model(self):
        if self._model is None:
            import torch

            with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit.load deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(silero_model_path()), map_location="cpu")
            model.eval()
            self._model = model
        return self._model

    def speech_probabilities(self, blocks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        """(probability per 512-sample window, window mean squares, total samples) for 16 kHz blocks.

        Windows are gathered into super-chunks of ``STREAM_BATCH`` streams of ``STREAM_WINDOWS``
        windows and run as one batch (see the module docstring), so memory stays bounded by one
        super-chunk (~21 MB) whatever the file's length.
        """
        framer = Framer(WINDOW, WINDOW)
        probs: list[np.ndarray] = []
        levels: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        n_pending = 0
        history = np.zeros((0, WINDOW), np.float32)
        chunk = STREAM_BATCH * STREAM_WINDOWS

        def flush(frames: np.ndarray) -> None:
            nonlocal history
            first = not probs
            probs.extend(self._run_streams(_streams(frames, history, first)))
            history = frames[-WARMUP_WINDOWS:].copy()

        for block in blocks:
            frames = framer.push(block)
            if not frames.shape[0]:
                continue
            levels.append(frame_mean_square(frames))
            pending.append(np.array(frames, dtype=np.float32, copy=True))
            n_pending += frames.shape[0]
            while n_pending >= chunk:
                stacked = np.concatenate(pending)
                flush(stacked[:chunk])
                pending, n_pending = [stacked[chunk:].copy()], n_pending - chunk  # not a view that keeps `stacked` alive
        for tail in framer.tail():  # at most one: hop == length; zero-padded as get_speech_timestamps does
            levels.append(frame_mean_square(tail))
            padded = np.zeros((1, WINDOW), dtype=np.float32)
            padded[0, : tail.size] = tail
            pending.append(padded)
            n_pending += 1
        if n_pending:
            flush(np.concatenate(pending))
        ms = np.concatenate(levels) if levels else np.zeros(0)
        return (np.concatenate(probs) if probs else np.zeros(0)).astype(np.float64), ms, framer.total

    def segment_waves(self, waves: list[np.ndarray], recording_ids: list[str]) -> list[list[Segment]]:
        """Segment several in-memory mono 16 kHz waves at once: their VAD streams share batches.

        For folders of short files this is several times faster than one :meth:`segment_wave` per
        file (one file of a few seconds is a batch of one). Each wave's streams start from a reset
        state exactly as in :meth:`segment_wave`, so the result for a wave does not depend on the
        others beyond float rounding in the batched matrix products.
        """
        framed = []
        for wave in waves:
            wave = np.asarray(wave, dtype=np.float32).reshape(-1)
            n = -(-wave.size // WINDOW)
            padded = np.zeros(n * WINDOW, np.float32)
            padded[: wave.size] = wave
            framed.append((padded.reshape(n, WINDOW), wave.size))
        jobs, owner = [], []
        for i, (frames, _) in enumerate(framed):
            for job in _streams(frames, np.zeros((0, WINDOW), np.float32), True):
                jobs.append(job)
                owner.append(i)
        outputs = self._run_streams(jobs, MANY_BATCH)
        per_wave: list[list[np.ndarray]] = [[] for _ in waves]
        for i, out in zip(owner, outputs):
            per_wave[i].append(out)
        result = []
        for (frames, total), parts, rid in zip(framed, per_wave, recording_ids):
            probs = (np.concatenate(parts) if parts else np.zeros(0)).astype(np.float64)
            result.append(self._segments_from(probs, frame_mean_square(frames) if len(frames) else np.zeros(0), total, rid))
        return result

    def _run_streams(self, jobs: list[tuple[np.ndarray, int]], batch: int = STREAM_BATCH) -> list[np.ndarray]:
        """Speech probabilities of independent streams, ``batch`` at a time.

        A job is ``(windows, warmup)``: the first ``warmup`` windows only prime the recurrent
        state (their outputs are dropped); a job with ``warmup == 0`` starts from a reset state.
        The model is causal, so padding a shorter stream at its end does not change its outputs.
        """
        import torch

        if not jobs:
            return []
        order = sorted(range(len(jobs)), key=lambda i: -(len(jobs[i][0]) - jobs[i][1]))
        out: list[np.ndarray | None] = [None] * len(jobs)
        # optimized_execution(False): always the plain TorchScript interpreter, never a graph the
        # profiling executor re-optimises after warm-up, so the first file decodes like the rest.
        with self._lock, _single_thread(), torch.inference_mode(), torch.jit.optimized_execution(False):
            net = self.model()._model  # the stateless 16 kHz network under silero's stateful wrapper
            context = int(net.context_size_samples)
            for lo in range(0, len(order), batch):
                idx = order[lo : lo + batch]
                prefix = max(jobs[i][1] for i in idx)
                steps = prefix + max(len(jobs[i][0]) - jobs[i][1] for i in idx)
                inp = np.zeros((len(idx), steps, WINDOW), np.float32)
                resets: dict[int, list[int]] = {}
                for row, i in enumerate(idx):
                    windows, warmup = jobs[i]
                    start = prefix - warmup
                    inp[row, start : start + len(windows)] = windows
                    if start:
                        resets.setdefault(start, []).append(row)
                x_all = torch.from_numpy(inp)
                state = torch.zeros(2, len(idx), 128)
                ctx = torch.zeros(len(idx), context)
                probs = torch.zeros(len(idx), steps - prefix)
                for t in range(steps):
                    if t in resets:
                        state[:, resets[t]] = 0.0
                        ctx[resets[t]] = 0.0
                    x = x_all[:, t]
                    p, state = net(torch.cat([ctx, x], dim=1), state)
                    ctx = x[:, -context:]
                    if t >= prefix:
                        probs[:, t - prefix] = p[:, 0]
                for row, i in enumerate(idx):
                    out[i] = probs[row, : len(jobs[i][0]) - jobs[i][1]].numpy().copy()
        return out  # type: ignore[return-value]

    def _segment_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int, recording_id: str) -> list[Segment]:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"speech segmenter analyses {SAMPLE_RATE} Hz, got {sample_rate}")
        probs, ms, total = self.speech_probabilities(blocks)
        return self._segments_from(probs, ms, total, recording_id)

    def _segments_from(self, probs: np.ndarray, ms: np.ndarray, total: int, recording_id: str) -> list[Segment]:
        if total == 0:
            return []
        active = hysteresis(probs, self.threshold, self.neg_threshold)
        hop_s = WINDOW / SAMPLE_RATE
        spans = self.activity_spans(active, frame_hop=hop_s, total_duration=total / SAMPLE_RATE, scores=probs)

        def custom(s: float, e: float) -> dict[str, Any]:
            sl = frame_range(s, e, hop_s, 0.0, probs.size)
            return {"kind": "speech", "speech_prob": round(float(probs[sl].mean()), 3), "rms_db": round(float(to_db(ms[sl].mean())), 2)}

        return make_segments(spans, recording_id, custom)


def _streams(frames: np.ndarray, history: np.ndarray, file_start: bool) -> list[tuple[np.ndarray, int]]:
    """Cut consecutive windows into stream jobs of ``STREAM_WINDOWS`` for :meth:`SpeechSegmenter._run_streams`.

    Every stream but the file's first is primed with the ``WARMUP_WINDOWS`` windows before it:
    inside ``frames`` a view reaches back, the chunk's first stream takes them from ``history`` (the
    windows preceding ``frames``), so a super-chunk is not copied here.
    """
    jobs = []
    for start in range(0, len(frames), STREAM_WINDOWS):
        stop = min(len(frames), start + STREAM_WINDOWS)
        if start:  # STREAM_WINDOWS > WARMUP_WINDOWS: the warm-up lies inside ``frames``
            jobs.append((frames[start - WARMUP_WINDOWS : stop], WARMUP_WINDOWS))
        elif file_start:
            jobs.append((frames[:stop], 0))
        else:
            warmup = history[-WARMUP_WINDOWS:]
            jobs.append((np.concatenate([warmup, frames[:stop]]), len(warmup)))
    return jobs
