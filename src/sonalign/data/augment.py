"""Waveform-level training-data augmentation for audio-text alignment.

Frozen encoders see each training clip once, so variety has to be made in the audio itself:

* :func:`random_crop`: a random part of a clip (a search hit is often part of a sound);
* :func:`mix_pair` + :func:`compose_caption`: two sounds at once, captioned "rain and a dog
  barking";
* :func:`in_ambience` + :func:`cut_like_indexer`: an event placed in a real background recording
  at a given SNR and cut out again by the indexer's own silence-aware segmenter, so the model sees
  events the way ``sonalign index`` will hand them over inside long noisy recordings.

Every function takes a ``numpy.random.Generator``: the same seed gives the same audio.
``scripts/train_default_model.py`` shows them used to write an augmented training manifest.
"""

from __future__ import annotations

import numpy as np

from sonalign.audio.mix import active_rms, mix_at_snr


def random_crop(wave: np.ndarray, sr: int, rng: np.random.Generator, *, min_seconds: float = 0.8, min_fraction: float = 0.3) -> np.ndarray:
    """A random span of ``wave``, at least ``min_seconds`` and ``min_fraction`` of it (the whole of a short clip)."""
    n = len(wave)
    shortest = int(min(n, max(min_seconds * sr, min_fraction * n)))
    length = int(rng.integers(shortest, n + 1))
    start = int(rng.integers(0, n - length + 1))
    return wave[start : start + length]


def mix_pair(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, *, level_db: tuple[float, float] = (-5.0, 5.0)) -> np.ndarray:
    """``a`` and ``b`` overlaid at random offsets inside the longer one's length, ``b`` at a random
    level relative to ``a`` (active RMS); scaled down only if the sum would clip."""
    n = max(len(a), len(b))
    out = np.zeros(n, np.float64)
    gain = active_rms(a) / max(active_rms(b), 1e-9) * 10 ** (rng.uniform(*level_db) / 20)
    for wave, g in ((a, 1.0), (b, gain)):
        start = int(rng.integers(0, n - len(wave) + 1))
        out[start : start + len(wave)] += g * wave
    return _no_clip(out)


def compose_caption(first: str, second: str) -> str:
    """``"rain"`` + ``"a dog barking"`` -> ``"rain and a dog barking"``."""
    return f"{first.strip().rstrip('.')} and {second.strip().rstrip('.')}"


def in_ambience(event: np.ndarray, bed: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator, *,
                pad_seconds: tuple[float, float] = (1.0, 3.0)) -> tuple[np.ndarray, tuple[float, float]]:
    """``event`` inside ``bed`` (looped or cropped to fit) with some background before and after,
    the event's active level ``snr_db`` above the bed's. Returns the mixture and the event's span (s)."""
    before, after = (int(rng.uniform(*pad_seconds) * sr) for _ in range(2))
    signal = np.zeros(before + len(event) + after, np.float32)
    signal[before : before + len(event)] = event
    # mix_at_snr measures the signal's *active* level, so the silent padding does not lower it
    mixture = mix_at_snr(signal, np.asarray(bed, np.float32), snr_db, seed=rng)
    return _no_clip(mixture), (before / sr, (before + len(event)) / sr)


def cut_like_indexer(mixture: np.ndarray, sr: int, span: tuple[float, float], segmenter=None) -> tuple[float, float]:
    """The span ``sonalign index`` would embed for the event at ``span``: the silence-aware
    (``energy``) segment that overlaps it most; the event's own span where none does."""
    from sonalign.segmenters import get_segmenter

    segments = (segmenter or get_segmenter("energy")).segment_wave(np.asarray(mixture, np.float32), sr, "mixture")
    overlap = [max(0.0, min(s.end, span[1]) - max(s.start, span[0])) for s in segments]
    if not overlap or max(overlap) <= 0:
        return span
    best = segments[int(np.argmax(overlap))]
    return best.start, best.end


def _no_clip(wave: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
    return (wave * (0.999 / peak) if peak > 0.999 else wave).astype(np.float32)


__all__ = ["compose_caption", "cut_like_indexer", "in_ambience", "mix_pair", "random_crop"]
