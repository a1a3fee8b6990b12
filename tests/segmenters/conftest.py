"""Synthetic test audio for the segmenter tests: events at known times in (optionally) noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

EVENT_AMP = 0.1  # tone amplitude: event power 0.005 (-23 dBFS)


def events_wave(
    events: list[tuple[float, float, str]],
    duration: float,
    sample_rate: int = 16000,
    snr_db: float | None = None,
    seed: int = 0,
    freq: float = 1000.0,
) -> np.ndarray:
    """Tones ("tone") or noise bursts ("noise") at ``(start, end, kind)`` seconds, plus white noise at
    ``snr_db`` relative to the event power (None: digital silence between events)."""
    rng = np.random.default_rng(seed)
    n = int(round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    x = np.zeros(n)
    power = EVENT_AMP**2 / 2
    for start, end, kind in events:
        i, j = int(round(start * sample_rate)), int(round(end * sample_rate))
        if kind == "tone":
            x[i:j] = EVENT_AMP * np.sin(2 * np.pi * freq * t[i:j])
        elif kind == "noise":
            x[i:j] = rng.standard_normal(j - i) * np.sqrt(power)
        else:
            raise ValueError(kind)
    if snr_db is not None:
        x += rng.standard_normal(n) * np.sqrt(power / 10 ** (snr_db / 10))
    return x.astype(np.float32)


def write_flac(path: Path, wave: np.ndarray, sample_rate: int) -> Path:
    sf.write(str(path), wave, sample_rate, subtype="PCM_16")
    return path


def spans(segments) -> list[tuple[float, float]]:
    return [(s.start, s.end) for s in segments]


def traced_segment_file(segmenter, path: Path, recording_id: str) -> tuple[list, float, int]:
    """``segmenter.segment_file`` with its wall time (s) and its peak traced memory (bytes)."""
    import time
    import tracemalloc

    tracemalloc.start()
    try:
        started = time.perf_counter()
        segments = segmenter.segment_file(path, recording_id)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return segments, elapsed, peak
