"""Log-mel spectrograms with ``torch.stft`` (no librosa / torchaudio needed).

The filterbank follows ``librosa.filters.mel`` exactly (same formulas, same normalisation
semantics), and :func:`log_mel` follows ``librosa.feature.melspectrogram`` with librosa >= 0.9
defaults: a periodic Hann window zero-padded to ``n_fft``, ``center=True`` with *constant* (zero)
padding of ``n_fft // 2`` samples on both sides, so a wave of ``n`` samples gives
``1 + n // hop_length`` frames.

Mel scales (``htk``):

* ``htk=True``:  ``mel = 2595 * log10(1 + f / 700)``.
* ``htk=False`` (Slaney's Auditory Toolbox): linear ``f / (200/3)`` below 1 kHz, logarithmic above
  (``15 + ln(f / 1000) / (ln(6.4) / 27)``).

Filter normalisation (``norm``), as librosa:

* ``None``: triangles peak at 1.
* ``"slaney"``: each triangle is divided by half its bandwidth in Hz (``2 / (f[i+2] - f[i])``), so
  filters have roughly constant energy per Hz.
* a number ``p`` (``1.0``, ``2.0``, ``np.inf`` ...): each row is divided by its ``p``-norm (rows
  that are all zero are left alone).

Compression (``compression``):

* ``"log10p"``: ``log10(1 + 10000 * S)`` (Essentia's ``shift_scale_log``; what aisfx uses).
* ``"db"``: ``10 * log10(max(S, 1e-10))`` (librosa ``power_to_db`` with ``ref=1``, no ``top_db``).
* ``"log"``: ``ln(S + 1e-6)``.
* ``None`` / ``"none"``: the mel power itself.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["hz_to_mel", "mel_to_hz", "mel_frequencies", "mel_filterbank", "log_mel", "n_frames"]

_COMPRESSIONS = ("log10p", "db", "log", "none")


def hz_to_mel(freq, htk: bool = False):
    """Hz -> mel (scalar or array), librosa's ``hz_to_mel``."""
    f = np.asanyarray(freq, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz(mels, htk: bool = False):
    """mel -> Hz (scalar or array), librosa's ``mel_to_hz``."""
    m = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_frequencies(n_mels: int, f_min: float = 0.0, f_max: float = 11025.0, htk: bool = False) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on the mel scale from ``f_min`` to ``f_max``."""
    mels = np.linspace(hz_to_mel(f_min, htk=htk), hz_to_mel(f_max, htk=htk), n_mels)
    return mel_to_hz(mels, htk=htk)


def _check_norm(norm) -> None:
    if norm is None or norm == "slaney":
        return
    if isinstance(norm, str) or not isinstance(norm, (int, float, np.integer, np.floating)) or isinstance(norm, bool):
        raise ValueError(f"mel norm must be None, 'slaney' or a number (p-norm), got {norm!r}")
    if not float(norm) > 0:
        raise ValueError(f"mel norm p must be > 0, got {norm!r}")


def mel_filterbank(
    sample_rate: float,
    n_fft: int,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
    htk: bool = False,
    norm: str | float | None = "slaney",
) -> np.ndarray:
    """Mel filterbank, shape ``(n_mels, 1 + n_fft // 2)`` float64 (librosa ``filters.mel`` semantics)."""
    _check_norm(norm)
    if f_max is None:
        f_max = sample_rate / 2.0
    if not 0 <= f_min < f_max:
        raise ValueError(f"need 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    fftfreqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_f = mel_frequencies(n_mels + 2, f_min=f_min, f_max=f_max, htk=htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    elif norm is not None:
        p = float(norm)
        mag = np.abs(weights)
        length = mag.max(axis=1) if math.isinf(p) else (mag**p).sum(axis=1) ** (1.0 / p)
        length = np.where(length < np.finfo(weights.dtype).tiny, 1.0, length)
        weights = weights / length[:, None]
    return weights


@lru_cache(maxsize=16)
def _fb_tensor(sample_rate, n_fft, n_mels, f_min, f_max, htk, norm) -> torch.Tensor:
    # float32 like librosa's default dtype; (n_freqs, n_mels) so frames @ fb works.
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, htk, norm).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(fb.T))


@lru_cache(maxsize=16)
def _window_tensor(win_length: int, n_fft: int) -> torch.Tensor:
    win = torch.hann_window(win_length, periodic=True, dtype=torch.float32)
    if win_length < n_fft:  # centre the window inside the frame, as librosa's util.pad_center
        left = (n_fft - win_length) // 2
        win = torch.nn.functional.pad(win, (left, n_fft - win_length - left))
    return win


def n_frames(n_samples: int, hop_length: int, n_fft: int, center: bool = True) -> int:
    """How many frames :func:`log_mel` gives for ``n_samples`` samples."""
    if center:
        return 1 + n_samples // hop_length
    return max(0, 1 + (n_samples - n_fft) // hop_length)


def log_mel(
    wave: np.ndarray | torch.Tensor,
    sample_rate: int,
    n_fft: int = 2048,
    hop_length: int | None = None,
    win_length: int | None = None,
    n_mels: int = 128,
    f_min: float = 0.0,
    f_max: float | None = None,
    htk: bool = False,
    norm: str | float | None = "slaney",
    power: float = 2.0,
    compression: str | None = "db",
    *,
    center: bool = True,
) -> np.ndarray | torch.Tensor:
    """(Log-)mel spectrogram of ``wave`` ``(n,)`` or ``(B, n)``, returned as ``(frames, n_mels)``
    or ``(B, frames, n_mels)`` float32, numpy in -> numpy out, tensor in -> tensor out.

    ``hop_length`` defaults to ``win_length // 4``, ``win_length`` to ``n_fft``. ``power`` 1 gives
    magnitude, 2 power. With ``center`` the wave is zero-padded by ``n_fft // 2`` both sides
    (librosa >= 0.9 ``pad_mode="constant"``), so even an empty wave gives one (silent) frame.
    Rows of a batch are computed independently: a wave's result does not depend on its batch.
    """
    if compression is None:
        compression = "none"
    if compression not in _COMPRESSIONS:
        raise ValueError(f"compression must be one of {_COMPRESSIONS} or None, got {compression!r}")
    win_length = n_fft if win_length is None else int(win_length)
    hop_length = win_length // 4 if hop_length is None else int(hop_length)
    if not 0 < win_length <= n_fft or hop_length <= 0:
        raise ValueError(f"need 0 < win_length <= n_fft and hop_length > 0 (n_fft={n_fft}, win_length={win_length}, hop_length={hop_length})")
    as_numpy = not isinstance(wave, torch.Tensor)
    x = torch.from_numpy(np.asarray(wave, dtype=np.float32)) if as_numpy else wave.to(torch.float32)
    single = x.dim() == 1
    if single:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"wave must be 1-D (n,) or 2-D (B, n), got shape {tuple(x.shape)}")
    if center:
        x = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    if x.shape[-1] < n_fft:  # only possible without centring: one zero-padded frame
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=_window_tensor(win_length, n_fft).to(x.device),
        center=False,
        return_complex=True,
    )  # (B, F, T)
    if power == 2.0:
        mag = spec.real.square() + spec.imag.square()
    elif power == 1.0:
        mag = spec.abs()
    else:
        mag = spec.abs().pow(power)
    fb = _fb_tensor(float(sample_rate), int(n_fft), int(n_mels), float(f_min), None if f_max is None else float(f_max), bool(htk), norm).to(x.device)
    mel = torch.matmul(mag.transpose(1, 2), fb)  # (B, T, n_mels)
    if compression == "log10p":
        mel = torch.log10(1.0 + 10000.0 * mel)
    elif compression == "db":
        mel = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
    elif compression == "log":
        mel = torch.log(mel + 1e-6)
    if single:
        mel = mel[0]
    return mel.contiguous().numpy() if as_numpy else mel
