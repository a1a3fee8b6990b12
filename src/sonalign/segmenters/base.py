"""The segmenter contract, streaming framing and the shared post-processing of activity runs.

A segmenter cuts one recording into time spans (:class:`~sonalign.segments.Segment`) that the
encoders embed and the index searches. Every segmenter is a small class with

* ``name`` and ``description`` (class attributes; the registry in ``segmenters/__init__`` lists them),
* ``settings() -> dict``: every parameter that changes the output, plus the segmenter's name and
  algorithm ``version`` (and, for ``speech``, the silero-vad version). Use it in cache keys.
* ``segment_file(path, recording_id) -> list[Segment]``: reads the file with
  :func:`~sonalign.audio.io.stream_audio` in blocks of ``block_seconds``, so a 2-hour file uses
  bounded memory: only one block of samples plus one small number per analysis frame (frame
  energies, VAD probabilities) are ever kept.
* ``segment_wave(wave, sample_rate, recording_id) -> list[Segment]``: the same for audio already in
  memory. It feeds the wave through exactly the blocks ``stream_audio`` would produce (same block
  sizes, same streaming resampler), so both give identical segments for the same audio.

Segments have float-second ``start``/``duration`` (rounded to microseconds), ids
``{recording_id}-{n:05d}`` numbered from 0 in time order, ``channel=0``, no text, and ``custom``
holding what the segmenter measured, e.g. ``{"kind": "speech"|"sound"|"window", "rms_db": -23.4}``
(``rms_db``: RMS level of the segment in dBFS, DC removed, measured on the analysis frames).
Segments never overlap, lie within ``[0, duration]`` and are deterministic: same audio and settings,
same segments (the VAD runs single-threaded with its state reset per file).

Errors: unreadable, corrupt, empty, zero-length and all-silent inputs raise
:class:`~sonalign.errors.AudioError` (from the audio layer); bad options raise
:class:`~sonalign.errors.ConfigError`.

The shared post-processing of activity runs into segments is :mod:`sonalign.segmenters.postprocess`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soxr

from sonalign.audio.io import audio_info, check_not_silent, stream_audio, to_mono
from sonalign.errors import ConfigError
from sonalign.segmenters.postprocess import SHORT_POLICIES
from sonalign.segments import Segment

#: Streaming block length in seconds (memory per block: block_seconds * rate * 4 bytes). Not an
#: output-changing setting.
DEFAULT_BLOCK_SECONDS = 30.0

#: Level reported for digital silence (the mean square is floored at 1e-12).
SILENCE_DB = -120.0



# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


class Segmenter(ABC):
    """Base class; subclasses set ``name``/``description``/``version`` and implement
    :meth:`analysis_rate`, :meth:`settings` and :meth:`_segment_blocks`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Bump when the algorithm changes output for the same settings (invalidates caches).
    version: ClassVar[int] = 1
    block_seconds: float = DEFAULT_BLOCK_SECONDS

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every parameter that changes the output, with ``segmenter`` and ``version``."""

    def analysis_rate(self, native_rate: int) -> int:
        """Sample rate the segmenter analyses a file of ``native_rate`` at (default: native)."""
        return native_rate

    @abstractmethod
    def _segment_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int, recording_id: str) -> list[Segment]:
        """Segment a stream of mono float32 blocks at ``sample_rate`` (the analysis rate)."""

    def segment_file(self, path: str | Path, recording_id: str) -> list[Segment]:
        """Segment an audio file, streaming it in blocks (bounded memory for any length)."""
        info = audio_info(path)
        rate = self.analysis_rate(info.sample_rate)
        return self._segment_blocks(stream_audio(path, rate, self.block_seconds), rate, recording_id)

    def segment_wave(self, wave: np.ndarray, sample_rate: int, recording_id: str) -> list[Segment]:
        """Segment audio in memory: ``(samples,)`` or ``(samples, channels)`` at ``sample_rate``."""
        if int(sample_rate) <= 0:
            raise ConfigError(f"sample_rate must be positive, got {sample_rate}")
        source = f"<wave {recording_id}>"
        wave = to_mono(np.asarray(wave, dtype=np.float32))
        check_not_silent(wave, source)
        rate = self.analysis_rate(int(sample_rate))
        return self._segment_blocks(wave_blocks(wave, int(sample_rate), rate, self.block_seconds), rate, recording_id)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k not in ("segmenter", "version"))
        return f"{type(self).__name__}({opts})"

    def set_activity_options(self, merge_gap: float, min_duration: float, max_duration: float | None, padding: float, short: str,
                             split_search: float) -> None:
        """Check and keep the options of :meth:`activity_spans` (see the module docstring)."""
        check_post(merge_gap, min_duration, max_duration, padding, short)
        self.merge_gap, self.min_duration, self.padding, self.short = float(merge_gap), float(min_duration), float(padding), short
        self.max_duration = None if max_duration is None else float(max_duration)
        self.split_search = check_positive("split_search", split_search, allow_zero=True)

    def activity_options(self) -> dict[str, Any]:
        """The activity options as they enter :meth:`settings`."""
        return {"merge_gap": self.merge_gap, "min_duration": self.min_duration, "max_duration": self.max_duration, "padding": self.padding,
                "short": self.short, "split_search": self.split_search}

    def activity_spans(self, active: np.ndarray, *, frame_hop: float, total_duration: float, scores: np.ndarray,
                       frame_offset: float = 0.0) -> list[tuple[float, float]]:
        """:func:`~sonalign.segmenters.postprocess.postprocess_activity` with this segmenter's options
        (``merge_gap``, ``min_duration``, ``max_duration``, ``padding``, ``short``, ``split_search``)."""
        from sonalign.segmenters.postprocess import postprocess_activity

        return postprocess_activity(active, frame_hop=frame_hop, frame_offset=frame_offset, total_duration=total_duration, merge_gap=self.merge_gap,
                                    min_duration=self.min_duration, max_duration=self.max_duration, padding=self.padding, short=self.short,
                                    scores=scores, split_search=self.split_search)


def wave_blocks(wave: np.ndarray, sample_rate: int, target_rate: int, block_seconds: float) -> Iterator[np.ndarray]:
    """Blocks of an in-memory mono wave exactly as :func:`stream_audio` yields them for a file.

    Same input block size, same streaming soxr resampler fed the same chunks, same output block
    size, so ``segment_wave`` and ``segment_file`` see bit-identical samples.
    """
    in_block = max(1, int(block_seconds * sample_rate))
    out_block = max(1, int(round(block_seconds * target_rate)))
    resampler = None if sample_rate == target_rate else soxr.ResampleStream(sample_rate, target_rate, 1, dtype="float32", quality="HQ")
    pending = np.zeros(0, dtype=np.float32)
    pos = 0
    while True:
        chunk = np.ascontiguousarray(wave[pos : pos + in_block], dtype=np.float32)
        pos += chunk.size
        last = chunk.size < in_block
        if resampler is not None:
            chunk = resampler.resample_chunk(chunk, last=last)
        pending = np.concatenate([pending, chunk]) if pending.size else chunk
        while pending.size >= out_block:
            yield pending[:out_block]
            pending = pending[out_block:]
        if last:
            break
    if pending.size:
        yield pending


# --------------------------------------------------------------------------------------------
# Streaming framing
# --------------------------------------------------------------------------------------------


class Framer:
    """Cuts a stream of sample blocks into frames of ``length`` samples every ``hop`` samples.

    :meth:`push` returns the complete frames a block finishes, as a ``(n, length)`` view;
    :meth:`tail` returns the frames that start before the end of the stream but run past it (each
    shorter than ``length``). Frame ``i`` starts at sample ``i * hop``; there are
    ``ceil(total / hop)`` frames in all. Block boundaries never change a frame's samples, and only
    fewer than ``length`` leftover samples are kept between blocks.
    """

    def __init__(self, length: int, hop: int):
        if hop <= 0 or length < hop:
            raise ValueError(f"need 0 < hop <= length, got length={length}, hop={hop}")
        self.length = int(length)
        self.hop = int(hop)
        self.total = 0
        self._buffer = np.zeros(0, dtype=np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        self.total += block.size
        buf = np.concatenate([self._buffer, block]) if self._buffer.size else block
        if buf.size < self.length:
            self._buffer = buf.copy()
            return np.zeros((0, self.length), dtype=np.float32)
        count = (buf.size - self.length) // self.hop + 1
        frames = np.lib.stride_tricks.sliding_window_view(buf, self.length)[:: self.hop][:count]
        self._buffer = buf[count * self.hop :].copy()
        return frames

    def tail(self) -> list[np.ndarray]:
        """The partial frames at the end (call once, after the last push)."""
        out = []
        start = 0
        while start < self._buffer.size:
            out.append(self._buffer[start:])
            start += self.hop
        self._buffer = np.zeros(0, dtype=np.float32)
        return out


def frame_mean_square(frames: np.ndarray, chunk_bytes: int = 1 << 22) -> np.ndarray:
    """Mean square of each frame (rows) with the frame's mean (DC) removed, in float64.

    Computed row by row from each frame's own samples, in chunks of at most ``chunk_bytes``, so the
    value never depends on how the stream was split into blocks.
    """
    frames = np.asarray(frames)
    if frames.ndim == 1:
        frames = frames[None, :]
    n, length = frames.shape
    out = np.empty(n, dtype=np.float64)
    step = max(1, chunk_bytes // (8 * max(1, length)))
    for i in range(0, n, step):
        f = frames[i : i + step].astype(np.float64)
        mean = f.mean(axis=1)
        out[i : i + step] = np.maximum((f * f).mean(axis=1) - mean * mean, 0.0)
    return out


def to_db(mean_square: np.ndarray | float) -> np.ndarray:
    """10*log10 of a mean square, floored at :data:`SILENCE_DB`."""
    return 10.0 * np.log10(np.maximum(np.asarray(mean_square, dtype=np.float64), 1e-12))


class FrameEnergies:
    """Streaming per-frame mean squares (DC removed): push blocks, then :meth:`finish`."""

    def __init__(self, length: int, hop: int):
        self.framer = Framer(length, hop)
        self._parts: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        frames = self.framer.push(block)
        if frames.shape[0]:
            self._parts.append(frame_mean_square(frames))

    def finish(self) -> tuple[np.ndarray, int]:
        """(mean squares of all ``ceil(total/hop)`` frames, total samples)."""
        tail = [frame_mean_square(t)[0] for t in self.framer.tail()]
        if tail:
            self._parts.append(np.asarray(tail, dtype=np.float64))
        ms = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.float64)
        self._parts = []
        return ms, self.framer.total


# --------------------------------------------------------------------------------------------
# Activity -> spans -> segments
# --------------------------------------------------------------------------------------------


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


def check_post(merge_gap: float, min_duration: float, max_duration: float | None, padding: float, short: str) -> None:
    check_positive("merge_gap", merge_gap, allow_zero=True)
    check_positive("min_duration", min_duration, allow_zero=True)
    check_positive("padding", padding, allow_zero=True)
    if max_duration is not None:
        check_positive("max_duration", max_duration)
        if min_duration > max_duration:
            raise ConfigError(f"min_duration ({min_duration}) must not exceed max_duration ({max_duration})")
    if short not in SHORT_POLICIES:
        raise ConfigError(f"short must be one of {SHORT_POLICIES}, got {short!r}")


__all__ = [
    "DEFAULT_BLOCK_SECONDS",
    "FrameEnergies",
    "Framer",
    "Segmenter",
    "frame_mean_square",
    "to_db",
    "wave_blocks",
]
