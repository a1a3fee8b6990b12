"""``fixed``: windows, partial last window, short files, overlap, file == wave."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sonalign.segmenters import get_segmenter

from .conftest import events_wave, spans

SR = 16000


def noise(seconds: float, sr: int = SR, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def test_windows_with_partial_last_kept():
    segs = get_segmenter("fixed").segment_wave(noise(23.0), SR, "r")
    assert spans(segs) == [(0.0, 5.0), (5.0, 10.0), (10.0, 15.0), (15.0, 20.0), (20.0, 23.0)]
    assert [s.id for s in segs] == [f"r-{i:05d}" for i in range(5)]
    assert all(s.channel == 0 and s.custom["kind"] == "window" for s in segs)


def test_partial_last_window_shorter_than_min_duration_dropped():
    assert spans(get_segmenter("fixed").segment_wave(noise(20.5), SR, "r"))[-1] == (15.0, 20.0)
    assert spans(get_segmenter("fixed", min_duration=0.5).segment_wave(noise(20.5), SR, "r"))[-1] == (20.0, 20.5)


def test_exact_multiple_gives_no_empty_tail():
    assert spans(get_segmenter("fixed").segment_wave(noise(10.0), SR, "r")) == [(0.0, 5.0), (5.0, 10.0)]


def test_file_shorter_than_one_window_gives_one_segment_of_its_length():
    segs = get_segmenter("fixed").segment_wave(noise(0.3), SR, "short")
    assert spans(segs) == [(0.0, 0.3)] and segs[0].id == "short-00000"


def test_overlapping_windows_stop_once_the_end_is_reached():
    segs = get_segmenter("fixed", window=4.0, hop=2.0).segment_wave(noise(10.0), SR, "r")
    assert spans(segs) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    segs = get_segmenter("fixed", window=4.0, hop=2.0).segment_wave(noise(11.0), SR, "r")
    assert spans(segs) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0), (8.0, 11.0)]


def test_rms_db_reports_window_level():
    wave = events_wave([(5.0, 10.0, "tone")], 15.0, SR, snr_db=20.0)
    segs = get_segmenter("fixed").segment_wave(wave, SR, "r")
    levels = [s.custom["rms_db"] for s in segs]
    assert levels[1] == pytest.approx(10 * np.log10(0.1**2 / 2), abs=0.3)  # -23 dBFS tone
    assert levels[0] < levels[1] - 15 and levels[2] < levels[1] - 15


def test_segment_file_equals_segment_wave_and_is_deterministic(tmp_path):
    sr = 44_100
    stereo = np.stack([noise(12.34, sr, seed=1), noise(12.34, sr, seed=2)], axis=1)
    path = tmp_path / "s.flac"
    sf.write(path, stereo, sr)
    wave, _ = sf.read(path, dtype="float32")
    seg = get_segmenter("fixed", window=3.0, block_seconds=1.7)
    from_file = seg.segment_file(path, "s")
    assert from_file == seg.segment_wave(wave, sr, "s") == seg.segment_file(path, "s")
    assert spans(from_file)[-1] == (9.0, 12.0)  # the 0.34 s tail is under min_duration
    assert from_file == get_segmenter("fixed", window=3.0).segment_file(path, "s")  # block size does not matter
