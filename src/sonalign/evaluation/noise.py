"""Additive-noise robustness: mix noise into a clip at a target SNR, deterministically.

The mixing itself (levels, SNR, fitting noise to length) is :mod:`sonalign.audio.mix`.

:class:`NoiseBank` holds noise recordings (from outside the evaluated set) and gives each
``clip_id`` its own noise recording and offset, derived from ``(seed, clip_id)`` with a stable
hash; the SNR only sets the gain, so the same clip gets the same noise segment at every SNR
and a robustness curve compares like with like.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from sonalign.audio.mix import (  # noqa: F401 (the mixing names are re-exported for callers of this module)
    _SILENCE_RMS,
    NoiseError,
    SilentSignalError,
    _is_clean,
    _mix_fitted,
    _mono,
    active_rms,
    fit_noise_length,
    measured_snr_db,
    mix_at_snr,
    rms,
)

__all__ = [
    "NoiseError",
    "SilentSignalError",
    "rms",
    "active_rms",
    "fit_noise_length",
    "mix_at_snr",
    "measured_snr_db",
    "NoiseBank",
    "DEFAULT_SNRS",
]

DEFAULT_SNRS: tuple[float | None, ...] = (None, 15.0, 10.0, 5.0)  # None = clean


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


class NoiseBank:
    """Noise recordings that yield deterministic mixtures per ``(clip_id, snr_db)``.

    Args:
        noises: mono float waveforms (same sample rate as the clips), from recordings that are
            not part of the evaluated set.
        names: a name per noise (file name, say) for the report; default ``noise_0``...
        seed: global seed; with ``clip_id`` it fixes the noise recording and offset per clip.
        sample_rate: recorded in :meth:`describe` (and used for durations).
        source: free-text description of where the noises come from, for the report.
        frame_length, threshold_db: active-signal detection for the signal level.

    Raises:
        NoiseError / SilentSignalError: a noise that is empty, not mono, non-finite or silent.
    """

    def __init__(
        self,
        noises: Sequence[Any],
        *,
        names: Sequence[str] | None = None,
        seed: int = 0,
        sample_rate: int | None = None,
        source: str | None = None,
        frame_length: int = 400,
        threshold_db: float = -40.0,
    ) -> None:
        if len(noises) == 0:
            raise NoiseError("NoiseBank needs at least one noise recording")
        self.names = list(names) if names is not None else [f"noise_{i}" for i in range(len(noises))]
        if len(self.names) != len(noises):
            raise NoiseError(f"{len(self.names)} names for {len(noises)} noises")
        self.noises: list[np.ndarray] = []
        for i, noise in enumerate(noises):
            try:
                arr = _mono(noise, "noise")
            except NoiseError as exc:
                raise NoiseError(f"noise {i} ({self.names[i]}): {exc}") from None
            if rms(arr) <= _SILENCE_RMS:
                raise SilentSignalError(f"noise {i} ({self.names[i]}) is silent")
            self.noises.append(arr)
        self.seed = int(seed)
        self.sample_rate = sample_rate
        self.source = source
        self.frame_length = frame_length
        self.threshold_db = threshold_db

    def __len__(self) -> int:
        return len(self.noises)

    def choice(self, clip_id: str) -> tuple[int, np.random.Generator]:
        """Index of the noise used for ``clip_id`` and the generator that then picks its offset."""
        rng = np.random.default_rng(_stable_seed("sonalign-noise", self.seed, clip_id))
        return int(rng.integers(0, len(self.noises))), rng

    def segment(self, clip_id: str, length: int) -> tuple[int, np.ndarray]:
        """``(noise_index, segment)``: the length-matched noise used for ``clip_id``."""
        index, rng = self.choice(clip_id)
        return index, fit_noise_length(self.noises[index], length, rng)

    def mix(self, signal: Any, clip_id: str, snr_db: float | None, *, avoid_clipping: bool = False) -> np.ndarray:
        """Mixture of ``signal`` with this clip's noise segment at ``snr_db`` (None/inf = clean)."""
        x = _mono(signal, "signal")
        if _is_clean(snr_db):
            return x.copy()
        _, segment = self.segment(str(clip_id), x.size)
        return _mix_fitted(x, segment, float(snr_db), self.frame_length, self.threshold_db, avoid_clipping)

    def describe(self) -> dict[str, Any]:
        """Metadata for the report: names, counts, durations, seed, source and level conventions."""
        total = sum(n.size for n in self.noises)
        return {
            "n_noises": len(self.noises),
            "names": list(self.names),
            "seed": self.seed,
            "sample_rate": self.sample_rate,
            "total_seconds": (total / self.sample_rate) if self.sample_rate else None,
            "total_samples": int(total),
            "source": self.source,
            "signal_level": (
                f"active RMS: frames of {self.frame_length} samples within {self.threshold_db} dB of the loudest"
            ),
            "noise_level": "RMS of the added noise segment",
            "selection": "noise recording and offset fixed per (seed, clip_id); crop if longer, loop if shorter",
        }
