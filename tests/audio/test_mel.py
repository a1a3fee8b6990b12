"""audio/mel.py: filterbank against a from-the-formulas numpy reference of librosa.filters.mel,
STFT against a numpy framing reference, tone placement, batch/single identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sonalign.audio.mel import hz_to_mel, log_mel, mel_filterbank, mel_to_hz, n_frames

# ---------------------------------------------------------------------------------------------
# An independent reference, written loop-by-loop from librosa's documented formulas
# (librosa.core.convert.hz_to_mel / mel_to_hz, librosa.filters.mel, librosa.util.normalize).
# ---------------------------------------------------------------------------------------------


def ref_hz_to_mel(f: float, htk: bool) -> float:
    if htk:
        return 2595.0 * math.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    if f < 1000.0:
        return f / f_sp
    return 1000.0 / f_sp + math.log(f / 1000.0) / (math.log(6.4) / 27.0)


def ref_mel_to_hz(m: float, htk: bool) -> float:
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    if m < min_log_mel:
        return f_sp * m
    return 1000.0 * math.exp((math.log(6.4) / 27.0) * (m - min_log_mel))


def ref_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm) -> tuple[np.ndarray, np.ndarray]:
    """(weights, mel band edges in Hz) by explicit loops."""
    n_freq = 1 + n_fft // 2
    freqs = sr / 2 * np.arange(n_freq) / (n_freq - 1)
    lo, hi = ref_hz_to_mel(fmin, htk), ref_hz_to_mel(fmax, htk)
    edges = [ref_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1), htk) for i in range(n_mels + 2)]
    w = np.zeros((n_mels, n_freq))
    for i in range(n_mels):
        left, centre, right = edges[i], edges[i + 1], edges[i + 2]
        rising = (freqs - left) / (centre - left)
        falling = (right - freqs) / (right - centre)
        w[i] = np.maximum(0.0, np.minimum(rising, falling))
        if norm == "slaney":
            w[i] *= 2.0 / (right - left)
        elif norm is not None:
            p = float(norm)
            length = np.max(np.abs(w[i])) if math.isinf(p) else np.sum(np.abs(w[i]) ** p) ** (1.0 / p)
            if length > 0:
                w[i] /= length
    return w, np.array(edges)


@pytest.mark.parametrize("htk", [True, False])
@pytest.mark.parametrize("freq", [0.0, 200.0, 999.0, 1000.0, 4321.0, 22050.0])
def test_mel_scale_matches_reference_and_inverts(htk, freq):
    assert float(hz_to_mel(freq, htk=htk)) == pytest.approx(ref_hz_to_mel(freq, htk), rel=1e-12, abs=1e-12)
    assert float(mel_to_hz(hz_to_mel(freq, htk=htk), htk=htk)) == pytest.approx(freq, rel=1e-9, abs=1e-9)


CASES = [
    (44100, 2048, 96, 0.0, 22050.0),  # aisfx
    (16000, 400, 64, 0.0, 8000.0),  # CALM-style
    (22050, 1024, 40, 50.0, 7000.0),
]


@pytest.mark.parametrize("htk", [True, False])
@pytest.mark.parametrize("norm", [None, "slaney", 1.0, 2.0, np.inf])
@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", CASES)
def test_filterbank_matches_reference(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk=htk, norm=norm)
    ref, _ = ref_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    assert ours.shape == (n_mels, 1 + n_fft // 2)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("htk", [True, False])
def test_triangles_peak_at_their_mel_centres(htk):
    sr, n_fft, n_mels = 44100, 8192, 40  # fine bins so every triangle has a clear peak
    fb = mel_filterbank(sr, n_fft, n_mels, 0.0, sr / 2, htk=htk, norm=None)
    _, edges = ref_filterbank(sr, n_fft, n_mels, 0.0, sr / 2, htk, None)
    freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    for i in range(n_mels):
        centre = edges[i + 1]
        peak = int(np.argmax(fb[i]))
        # the sampled maximum is one of the two bins around the centre (triangles are asymmetric)
        assert abs(freqs[peak] - centre) < sr / n_fft, (i, freqs[peak], centre)
        # zero outside (left edge, right edge), at most 1 inside
        outside = (freqs <= edges[i]) | (freqs >= edges[i + 2])
        assert np.all(fb[i][outside] == 0)
        assert fb[i].max() <= 1.0 + 1e-12


def test_one_norm_rows_sum_to_one():
    fb = mel_filterbank(44100, 2048, 96, 0.0, 22050.0, htk=True, norm=1.0)
    np.testing.assert_allclose(fb.sum(axis=1), 1.0, rtol=1e-12)
    fb2 = mel_filterbank(16000, 512, 40, htk=False, norm=2.0)
    np.testing.assert_allclose(np.sqrt((fb2**2).sum(axis=1)), 1.0, rtol=1e-12)


def test_slaney_norm_is_constant_area_per_hz():
    fb = mel_filterbank(16000, 512, 40, htk=False, norm="slaney")
    _, edges = ref_filterbank(16000, 512, 40, 0.0, 8000.0, False, None)
    peaks_unnorm = mel_filterbank(16000, 512, 40, htk=False, norm=None).max(axis=1)
    np.testing.assert_allclose(fb.max(axis=1), peaks_unnorm * 2.0 / (edges[2:] - edges[:-2]), rtol=1e-12)


def test_bad_norm_and_compression_rejected():
    with pytest.raises(ValueError):
        mel_filterbank(16000, 512, 40, norm="area")
    with pytest.raises(ValueError):
        mel_filterbank(16000, 512, 40, norm=0)
    with pytest.raises(ValueError):
        log_mel(np.zeros(1000, np.float32), 16000, 512, compression="log2")
    with pytest.raises(ValueError):
        log_mel(np.zeros((2, 2, 1000), np.float32), 16000, 512)


def _tone(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("htk,norm", [(True, 1.0), (False, "slaney"), (True, None)])
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_pure_tone_peaks_in_expected_mel_bin(freq, htk, norm):
    sr, n_fft = 16000, 1024
    mel = log_mel(_tone(freq, sr), sr, n_fft=n_fft, hop_length=256, n_mels=64, htk=htk, norm=norm, compression="none")
    fb = mel_filterbank(sr, n_fft, 64, htk=htk, norm=norm)
    expected = int(np.argmax(fb[:, int(round(freq * n_fft / sr))]))
    got = np.argmax(mel[2:-2].mean(axis=0))  # away from the zero-padded edges
    assert got == expected
    # and its centre frequency is near the tone
    _, edges = ref_filterbank(sr, n_fft, 64, 0.0, sr / 2, htk, None)
    assert edges[got] < freq < edges[got + 2]


def _numpy_reference_mel(wave, sr, n_fft, hop, win, n_mels, htk, norm, power):
    padded = np.pad(wave.astype(np.float64), (n_fft // 2, n_fft // 2))
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    n = 1 + (padded.size - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(n)])
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** power
    fb, _ = ref_filterbank(sr, n_fft, n_mels, 0.0, sr / 2, htk, norm)
    return spec @ fb.T


@pytest.mark.parametrize("win", [2048, 1536])
def test_log_mel_matches_numpy_stft_reference(win):
    rng = np.random.default_rng(1)
    sr = 44100
    wave = (0.3 * rng.standard_normal(sr // 2)).astype(np.float32)
    ref = _numpy_reference_mel(wave, sr, 2048, 1024, win, 96, True, 1.0, 2.0)
    power = log_mel(wave, sr, 2048, 1024, win, 96, 0.0, None, True, 1.0, 2.0, None)
    assert power.shape == ref.shape == (1 + wave.size // 1024, 96)
    np.testing.assert_allclose(power, ref, rtol=2e-4, atol=1e-6 * ref.max())
    compressed = log_mel(wave, sr, 2048, 1024, win, 96, 0.0, None, True, 1.0, 2.0, "log10p")
    np.testing.assert_allclose(compressed, np.log10(1 + 1e4 * ref), rtol=1e-4, atol=1e-5)
    db = log_mel(wave, sr, 2048, 1024, win, 96, 0.0, None, True, 1.0, 2.0, "db")
    np.testing.assert_allclose(db, 10 * np.log10(np.maximum(ref, 1e-10)), atol=1e-3)
    mag = log_mel(wave, sr, 2048, 1024, win, 96, 0.0, None, True, 1.0, 1.0, None)
    np.testing.assert_allclose(mag, _numpy_reference_mel(wave, sr, 2048, 1024, win, 96, True, 1.0, 1.0), rtol=2e-4, atol=1e-5)


def test_batch_and_single_identical_and_types():
    rng = np.random.default_rng(2)
    batch = (0.2 * rng.standard_normal((4, 30000))).astype(np.float32)
    kw = dict(sample_rate=44100, n_fft=2048, hop_length=1024, win_length=2048, n_mels=96, htk=True, norm=1.0, compression="log10p")
    out = log_mel(batch, **kw)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (4, 30, 96)
    for i in range(4):
        assert np.array_equal(out[i], log_mel(batch[i], **kw))
    t = log_mel(torch.from_numpy(batch), **kw)
    assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), out)
    assert np.array_equal(log_mel(batch, **kw), out)  # deterministic


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1025, 5000])
def test_frame_count(n):
    out = log_mel(np.zeros(n, np.float32), 44100, 2048, 1024, n_mels=8, compression="log10p")
    assert out.shape == (n_frames(n, 1024, 2048), 8) == (1 + n // 1024, 8)
    assert np.all(out == 0)  # silence -> log10(1 + 0) = 0
