"""``speech``: speech chunking with silero-vad (the TorchScript model shipped in the ``silero-vad``
package, loaded offline; onnxruntime is not needed).

1. The file is streamed and resampled to 16 kHz (``stream_audio``); every 512-sample window
   (32 ms) gets a speech probability from the recurrent model, in order, with the model state
   reset at the start of each file. The last partial window is zero-padded, as silero's
   ``get_speech_timestamps`` does. Only the probabilities (and window levels) are kept.
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
file, restored afterwards; this is also ~10x faster than two threads on small CPUs) in inference
mode on the plain TorchScript interpreter (no warm-up re-optimisation), state reset per file. One segmenter instance processes one file at a time (a lock).
Speed: ~50x real time on one CPU core. ``custom={"kind": "speech", "speech_prob": mean
probability, "rms_db": level}``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
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
    check_post,
    frame_mean_square,
    frame_range,
    hysteresis,
    make_segments,
    postprocess_activity,
    to_db,
)
from sonalign.segments import Segment

SAMPLE_RATE = 16000
WINDOW = 512  # samples per VAD decision at 16 kHz (32 ms)


def silero_model_path() -> Path:
    """Path of the TorchScript silero-vad model inside the installed package (no import of the
    package itself, whose ``__init__`` sets torch's global thread count)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the speech segmenter needs the silero-vad package (pip install silero-vad)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise ConfigError(f"silero-vad is installed but its model file is missing: {path}")
    return path


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
    version = 1

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        merge_gap: float = 0.5,
        min_duration: float = 0.25,
        max_duration: float | None = 15.0,
        padding: float = 0.1,
        short: str = "drop",
        split_search: float = 1.0,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
    ):
        self.threshold = check_positive("threshold", threshold)
        if self.threshold >= 1:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        self.neg_threshold = max(self.threshold - 0.15, 0.01) if neg_threshold is None else check_positive("neg_threshold", neg_threshold)
        if self.neg_threshold > self.threshold:
            raise ConfigError(f"neg_threshold ({self.neg_threshold}) must not exceed threshold ({self.threshold})")
        check_post(merge_gap, min_duration, max_duration, padding, short)
        self.merge_gap = float(merge_gap)
        self.min_duration = float(min_duration)
        self.max_duration = None if max_duration is None else float(max_duration)
        self.padding = float(padding)
        self.short = short
        self.split_search = check_positive("split_search", split_search, allow_zero=True)
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
            "threshold": self.threshold,
            "neg_threshold": round(self.neg_threshold, 6),
            "merge_gap": self.merge_gap,
            "min_duration": self.min_duration,
            "max_duration": self.max_duration,
            "padding": self.padding,
            "short": self.short,
            "split_search": self.split_search,
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
        """(probability per 512-sample window, window mean squares, total samples) for 16 kHz blocks."""
        import torch

        framer = Framer(WINDOW, WINDOW)
        probs: list[float] = []
        levels: list[np.ndarray] = []
        # optimized_execution(False): always the plain TorchScript interpreter, never a graph the
        # profiling executor re-optimises after warm-up, so the first file decodes like the rest.
        with self._lock, _single_thread(), torch.inference_mode(), torch.jit.optimized_execution(False):
            model = self.model()
            model.reset_states()

            def run(frames: np.ndarray) -> None:
                if not frames.shape[0]:
                    return
                levels.append(frame_mean_square(frames))
                batch = torch.from_numpy(np.array(frames, dtype=np.float32, copy=True))
                for row in batch:
                    probs.append(float(model(row, SAMPLE_RATE).item()))

            for block in blocks:
                run(framer.push(block))
            for tail in framer.tail():  # at most one: hop == length
                levels.append(frame_mean_square(tail))
                padded = np.zeros(WINDOW, dtype=np.float32)
                padded[: tail.size] = tail
                probs.append(float(model(torch.from_numpy(padded), SAMPLE_RATE).item()))
            model.reset_states()
        ms = np.concatenate(levels) if levels else np.zeros(0)
        return np.asarray(probs, dtype=np.float64), ms, framer.total

    def _segment_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int, recording_id: str) -> list[Segment]:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"speech segmenter analyses {SAMPLE_RATE} Hz, got {sample_rate}")
        probs, ms, total = self.speech_probabilities(blocks)
        if total == 0:
            return []
        active = hysteresis(probs, self.threshold, self.neg_threshold)
        hop_s = WINDOW / SAMPLE_RATE
        spans = postprocess_activity(
            active,
            frame_hop=hop_s,
            total_duration=total / SAMPLE_RATE,
            merge_gap=self.merge_gap,
            min_duration=self.min_duration,
            max_duration=self.max_duration,
            padding=self.padding,
            short=self.short,
            scores=probs,
            split_search=self.split_search,
        )

        def custom(s: float, e: float) -> dict[str, Any]:
            sl = frame_range(s, e, hop_s, 0.0, probs.size)
            return {"kind": "speech", "speech_prob": round(float(probs[sl].mean()), 3), "rms_db": round(float(to_db(ms[sl].mean())), 2)}

        return make_segments(spans, recording_id, custom)
