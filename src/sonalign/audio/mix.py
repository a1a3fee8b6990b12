"""Mixing a sound with noise (or a background) at a target SNR, deterministically.

Definitions:

* **Signal level** is the RMS of the *active* part of the signal: the signal is cut into
  non-overlapping frames of ``frame_length`` samples (400 = 25 ms at 16 kHz; the last frame may
  be shorter) and frames whose mean power is within ``threshold_db`` (default -40 dB) of the
  loudest frame are kept. Leading/trailing silence therefore does not lower the signal level.
* **Noise level** is the plain RMS of the noise segment actually added (the whole segment).
* ``SNR_dB = 20 * log10(active_rms(signal) / rms(noise_segment * gain))``; the gain is solved
  for exactly, so the measured SNR equals the target up to floating-point rounding.
* **Fitting noise to length**: a noise longer than the signal is cropped at a random offset; a
  shorter one is looped (wrapping around) from a random start. The randomness comes only from
  the given seed, so mixtures are reproducible.
* ``snr_db=None`` or ``+inf`` means clean: the signal is returned unchanged (as a copy).
* The mixture is not clipped or rescaled (that would change the SNR); callers that need
  ``[-1, 1]`` can pass ``avoid_clipping=True``, which scales signal and noise together so the
  SNR is preserved.

Used by the robustness evaluation (:mod:`sonalign.evaluation.noise`) and by training-data
augmentation (:mod:`sonalign.data.augment`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sonalign.errors import SonalignError

_SILENCE_RMS = 1e-8  # -160 dBFS: anything quieter is treated as digital silence


class NoiseError(SonalignError, ValueError):
    """A signal or noise that cannot be used for SNR mixing (bad shape, non-finite, empty)."""


class SilentSignalError(NoiseError):
    """The signal (or noise) is silent, so its level and hence an SNR are undefined."""


def _mono(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise NoiseError(f"{name} must be a mono 1-D waveform, got shape {arr.shape}; mix channels down first")
    if arr.size == 0:
        raise NoiseError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.floating):
        raise NoiseError(f"{name} must be floating point, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise NoiseError(f"{name} contains NaN or infinite samples")
    return arr


def rms(x: Any) -> float:
    """Root mean square of a waveform."""
    a = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def active_rms(signal: Any, frame_length: int = 400, threshold_db: float = -40.0) -> float:
    """RMS over the frames whose power is within ``threshold_db`` of the loudest frame.

    Raises:
        SilentSignalError: the signal is (digitally) silent.
    """
    x = _mono(signal, "signal").astype(np.float64)
    if frame_length < 1:
        raise ValueError(f"frame_length must be >= 1, got {frame_length}")
    if threshold_db > 0:
        raise ValueError(f"threshold_db must be <= 0 (relative to the loudest frame), got {threshold_db}")
    n_frames = -(-x.size // frame_length)
    padded = np.zeros(n_frames * frame_length)
    padded[: x.size] = x
    sq = (padded * padded).reshape(n_frames, frame_length).sum(1)
    lengths = np.full(n_frames, frame_length)
    lengths[-1] = x.size - (n_frames - 1) * frame_length
    power = sq / lengths
    if power.max() <= _SILENCE_RMS**2:
        raise SilentSignalError(f"signal is silent (RMS {math.sqrt(power.max()):.3g}); an SNR is undefined")
    active = power >= power.max() * 10.0 ** (threshold_db / 10.0)
    return float(math.sqrt(sq[active].sum() / lengths[active].sum()))


def fit_noise_length(noise: Any, length: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (random offset) or loop (random start) ``noise`` to exactly ``length`` samples."""
    n = _mono(noise, "noise")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if n.size >= length:
        start = int(rng.integers(0, n.size - length + 1))
        return n[start : start + length].copy()
    start = int(rng.integers(0, n.size))
    return np.take(n, (start + np.arange(length)) % n.size)


def _is_clean(snr_db: float | None) -> bool:
    if snr_db is None:
        return True
    if math.isnan(snr_db):
        raise ValueError("snr_db is NaN")
    return math.isinf(snr_db) and snr_db > 0


def _mix_fitted(
    x: np.ndarray,
    segment: np.ndarray,
    snr_db: float,
    frame_length: int,
    threshold_db: float,
    avoid_clipping: bool,
) -> np.ndarray:
    """Mix an already length-matched noise segment into ``x`` at ``snr_db``."""
    s_level = active_rms(x, frame_length, threshold_db)
    n_level = rms(segment)
    if n_level <= _SILENCE_RMS:
        raise SilentSignalError(f"noise segment is silent (RMS {n_level:.3g}); cannot reach an SNR with it")
    gain = s_level / (n_level * 10.0 ** (snr_db / 20.0))
    mix = x.astype(np.float64) + gain * segment.astype(np.float64)
    if avoid_clipping:
        peak = float(np.max(np.abs(mix)))
        if peak > 1.0:
            mix *= 0.999 / peak
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    return mix.astype(out_dtype, copy=False)


def mix_at_snr(
    signal: Any,
    noise: Any,
    snr_db: float | None,
    *,
    seed: int | np.random.Generator = 0,
    frame_length: int = 400,
    threshold_db: float = -40.0,
    avoid_clipping: bool = False,
) -> np.ndarray:
    """Add ``noise`` to ``signal`` at ``snr_db`` (see the module docstring for definitions).

    Args:
        signal: mono float waveform.
        noise: mono float waveform at the same sample rate, any length.
        snr_db: target SNR in dB; ``None`` or ``inf`` returns a copy of the signal.
        seed: seed (or generator) for the crop/loop offset.
        frame_length, threshold_db: active-signal detection (see :func:`active_rms`).
        avoid_clipping: scale the mixture to peak 0.999 if it would clip (SNR unchanged).

    Returns:
        The mixture, same length and float dtype as ``signal``.

    Raises:
        SilentSignalError: silent signal or noise segment.
        NoiseError: not mono, empty, non-float or non-finite input.
    """
    x = _mono(signal, "signal")
    if _is_clean(snr_db):
        return x.copy()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    segment = fit_noise_length(noise, x.size, rng)
    return _mix_fitted(x, segment, float(snr_db), frame_length, threshold_db, avoid_clipping)


def measured_snr_db(signal: Any, mixture: Any, frame_length: int = 400, threshold_db: float = -40.0) -> float:
    """SNR of ``mixture`` relative to the clean ``signal``, with the same level definitions.

    Only meaningful for mixtures that were not rescaled (``avoid_clipping=False`` or no clipping).
    """
    x = _mono(signal, "signal").astype(np.float64)
    m = _mono(mixture, "mixture").astype(np.float64)
    if m.shape != x.shape:
        raise NoiseError(f"mixture has {m.size} samples but signal has {x.size}")
    n_level = rms(m - x)
    if n_level == 0.0:
        return math.inf
    return 20.0 * math.log10(active_rms(x, frame_length, threshold_db) / n_level)
