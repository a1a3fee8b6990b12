"""Waveform augmentation: deterministic, the right lengths, levels and spans."""

import numpy as np

from sonalign.audio.mix import active_rms, rms
from sonalign.data.augment import compose_caption, cut_like_indexer, in_ambience, mix_pair, random_crop

SR = 16000


def tone(seconds, freq=440.0, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_random_crop_is_a_deterministic_span_of_the_clip():
    wave = np.arange(5 * SR, dtype=np.float32)
    a, b = (random_crop(wave, SR, np.random.default_rng(3)) for _ in range(2))
    assert np.array_equal(a, b) and len(a) >= int(0.8 * SR)
    assert np.array_equal(a, wave[int(a[0]) : int(a[0]) + len(a)])
    short = tone(0.5)
    assert len(random_crop(short, SR, np.random.default_rng(0))) == len(short)


def test_mix_pair_keeps_the_longer_length_and_never_clips():
    mixed = mix_pair(tone(2.0, amp=0.9), tone(0.5, 900, amp=0.9), np.random.default_rng(0))
    assert len(mixed) == 2 * SR and np.abs(mixed).max() <= 0.999
    assert compose_caption("rain.", " a dog barking") == "rain and a dog barking"


def test_event_in_ambience_at_the_asked_snr_and_cut_back_out():
    rng = np.random.default_rng(1)
    bed = (0.01 * np.random.default_rng(2).standard_normal(4 * SR)).astype(np.float32)
    event = tone(1.0, 1000)
    mixture, (start, end) = in_ambience(event, bed, SR, 10.0, rng)
    first, last = int(round(start * SR)), int(round(end * SR))
    assert abs(end - start - 1.0) < 1e-3 and 1.0 <= start <= 3.0
    background = mixture.copy()
    background[first:last] -= event
    assert abs(20 * np.log10(active_rms(event) / rms(background)) - 10.0) < 0.2
    cut = cut_like_indexer(mixture, SR, (start, end))
    assert cut[0] < start + 0.2 and cut[1] > end - 0.2 and cut[1] - cut[0] < 2.5
