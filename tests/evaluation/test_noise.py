"""SNR mixing: exact SNR, active-signal level, determinism, looping/cropping, errors."""

from __future__ import annotations

import numpy as np
import pytest

from sonalign.errors import SonalignError
from sonalign.evaluation.noise import (
    NoiseBank,
    NoiseError,
    SilentSignalError,
    active_rms,
    fit_noise_length,
    measured_snr_db,
    mix_at_snr,
    rms,
)

SR = 16000


def _tone_with_silence(seconds: float = 1.0, dtype=np.float32) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    x[: SR // 4] = 0.0  # leading silence must not lower the signal level
    return x.astype(dtype)


@pytest.mark.parametrize("snr", [20.0, 15.0, 10.0, 5.0, 0.0, -5.0])
@pytest.mark.parametrize("noise_len", [SR // 10, 3 * SR])  # looped and cropped
def test_measured_snr_equals_target(snr: float, noise_len: int) -> None:
    rng = np.random.default_rng(0)
    x = _tone_with_silence()
    noise = rng.standard_normal(noise_len).astype(np.float32) * 0.05
    mix = mix_at_snr(x, noise, snr, seed=1)
    assert mix.shape == x.shape and mix.dtype == np.float32
    assert measured_snr_db(x, mix) == pytest.approx(snr, abs=0.1)
    assert measured_snr_db(x, mix) == pytest.approx(snr, abs=1e-3)


def test_active_rms_ignores_silence() -> None:
    x = _tone_with_silence().astype(np.float64)
    assert active_rms(x) == pytest.approx(0.3 / np.sqrt(2), rel=1e-3)
    assert rms(x) < active_rms(x)


def test_deterministic_and_seed_dependent() -> None:
    rng = np.random.default_rng(2)
    x = _tone_with_silence()
    noise = rng.standard_normal(5 * SR)
    a = mix_at_snr(x, noise, 10.0, seed=7)
    b = mix_at_snr(x, noise, 10.0, seed=7)
    c = mix_at_snr(x, noise, 10.0, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_noise_length_loops_and_crops() -> None:
    noise = np.arange(10, dtype=np.float64)
    looped = fit_noise_length(noise, 25, np.random.default_rng(0))
    assert looped.size == 25
    np.testing.assert_array_equal((looped[1:] - looped[:-1]) % 10, 1)  # consecutive, wrapping
    cropped = fit_noise_length(np.arange(100.0), 30, np.random.default_rng(0))
    assert cropped.size == 30
    np.testing.assert_array_equal(np.diff(cropped), 1)  # contiguous, no wrap when cropping


def test_clean_returns_copy() -> None:
    x = _tone_with_silence()
    for snr in (None, float("inf")):
        out = mix_at_snr(x, np.ones(10), snr)
        np.testing.assert_array_equal(out, x)
        assert out is not x


def test_avoid_clipping_keeps_snr() -> None:
    rng = np.random.default_rng(3)
    x = (0.95 * np.sign(np.sin(np.arange(SR) / 5.0))).astype(np.float64)
    noise = rng.standard_normal(SR)
    mix = mix_at_snr(x, noise, 0.0, avoid_clipping=True)
    assert np.max(np.abs(mix)) <= 1.0
    scale = np.dot(mix, x) / np.dot(x, x)  # recover the common scale factor
    assert measured_snr_db(scale * x, mix) == pytest.approx(0.0, abs=0.1)


def test_silent_and_bad_inputs() -> None:
    noise = np.random.default_rng(0).standard_normal(SR)
    with pytest.raises(SilentSignalError, match="silent"):
        mix_at_snr(np.zeros(SR), noise, 10.0)
    with pytest.raises(SilentSignalError):
        mix_at_snr(_tone_with_silence(), np.zeros(SR), 10.0)
    assert issubclass(SilentSignalError, SonalignError) and issubclass(SilentSignalError, ValueError)
    with pytest.raises(NoiseError, match="mono"):
        mix_at_snr(np.zeros((2, SR)), noise, 10.0)
    with pytest.raises(NoiseError, match="empty"):
        mix_at_snr(np.zeros(0), noise, 10.0)
    with pytest.raises(NoiseError, match="NaN"):
        mix_at_snr(np.full(10, np.nan), noise, 10.0)
    with pytest.raises(NoiseError, match="floating"):
        mix_at_snr(np.ones(10, dtype=np.int16), noise, 10.0)
    with pytest.raises(ValueError, match="NaN"):
        mix_at_snr(_tone_with_silence(), noise, float("nan"))


def test_noise_bank_deterministic_per_clip_and_snr() -> None:
    rng = np.random.default_rng(4)
    noises = [rng.standard_normal(n) for n in (SR // 2, 2 * SR, 3 * SR)]
    bank = NoiseBank(noises, names=["a.wav", "b.wav", "c.wav"], seed=5, sample_rate=SR, source="ESC-50 fold 5")
    bank2 = NoiseBank([n.copy() for n in noises], seed=5)
    x = _tone_with_silence()
    for clip in ("clip_001", "clip_002"):
        for snr in (15.0, 10.0, 5.0):
            m1 = bank.mix(x, clip, snr)
            np.testing.assert_array_equal(m1, bank.mix(x, clip, snr))
            np.testing.assert_array_equal(m1, bank2.mix(x, clip, snr))
            assert measured_snr_db(x, m1) == pytest.approx(snr, abs=0.1)
    # the same clip uses the same noise segment at every SNR (only the gain differs)
    d15 = bank.mix(x, "clip_001", 15.0).astype(np.float64) - x
    d5 = bank.mix(x, "clip_001", 5.0).astype(np.float64) - x
    np.testing.assert_allclose(d5, d15 * 10 ** (10 / 20), rtol=1e-3, atol=1e-6)
    # different clips get different noise (overwhelmingly likely)
    assert not np.array_equal(bank.mix(x, "clip_001", 10.0), bank.mix(x, "clip_002", 10.0))
    np.testing.assert_array_equal(bank.mix(x, "clip_001", None), x)
    info = bank.describe()
    assert info["n_noises"] == 3 and info["source"] == "ESC-50 fold 5"
    assert info["total_seconds"] == pytest.approx(5.5)


def test_noise_bank_rejects_bad_noise() -> None:
    with pytest.raises(NoiseError, match="at least one"):
        NoiseBank([])
    with pytest.raises(SilentSignalError, match="noise 1"):
        NoiseBank([np.ones(10), np.zeros(10)])
    with pytest.raises(NoiseError, match="noise 0"):
        NoiseBank([np.ones((2, 10))])
