"""``energy``: event boundaries in noise, splitting, merging, determinism, file == wave, memory."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sonalign.segmenters import get_segmenter

from .conftest import events_wave, spans, traced_segment_file, write_flac

TOL = 0.05  # seconds
EVENTS = [(2.0, 3.0, "tone"), (6.5, 8.0, "noise"), (12.0, 12.6, "tone"), (15.0, 18.0, "tone")]


def assert_matches(segments, truth, tol=TOL):
    got = spans(segments)
    assert len(got) == len(truth), f"got {got}, want {truth}"
    for (gs, ge), (ts, te, *_) in zip(got, truth):
        assert abs(gs - ts) <= tol and abs(ge - te) <= tol, f"got {got}, want {truth}"


@pytest.mark.parametrize("snr_db", [5.0, 10.0, 15.0])
@pytest.mark.parametrize("sr", [16000, 44100])
def test_events_in_white_noise_found_within_50ms(snr_db, sr):
    wave = events_wave(EVENTS, 20.0, sr, snr_db=snr_db, seed=int(snr_db))
    segs = get_segmenter("energy", padding=0.0).segment_wave(wave, sr, "rec")
    assert_matches(segs, EVENTS)
    assert [s.id for s in segs] == [f"rec-{i:05d}" for i in range(len(EVENTS))]
    for s in segs:
        assert s.custom["kind"] == "sound"
        # event + noise at SNR s is 10*log10(1 + 10^(-s/10)) above the event: report near the truth
        assert s.custom["snr_db"] == pytest.approx(snr_db + 10 * np.log10(1 + 10 ** (-snr_db / 10)), abs=1.5)


def test_events_in_digital_silence_and_8khz():
    wave = events_wave(EVENTS, 20.0, 8000, snr_db=None)
    assert_matches(get_segmenter("energy", padding=0.0).segment_wave(wave, 8000, "r"), EVENTS)


def test_events_in_fluctuating_noise():
    """Brown (1/f^2) noise swings by many dB between frames; the spread term keeps it from triggering."""
    sr, n = 16000, 20 * 16000
    rng = np.random.default_rng(3)
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[1:] /= np.arange(1, spec.size)
    brown = np.fft.irfft(spec, n)
    clean = events_wave(EVENTS, 20.0, sr, snr_db=None)
    brown *= np.sqrt(0.1**2 / 2 / 10 ** (10 / 10)) / brown.std()
    segs = get_segmenter("energy", padding=0.0).segment_wave((clean + brown).astype(np.float32), sr, "r")
    assert_matches(segs, EVENTS)


def test_hysteresis_holds_an_event_that_dips_below_the_onset_threshold():
    """An event alternating every 0.2 s between +6 dB and +2.5 dB over the noise: the quiet parts are
    above the offset threshold (~+1.5 dB) but below the onset (~+3.5 dB), so hysteresis keeps one run."""
    sr = 16000
    rng = np.random.default_rng(4)
    n = 20 * sr
    noise = rng.standard_normal(n) * 0.01
    t = np.arange(n) / sr
    ratio = np.zeros(n)
    for k in range(20):  # 8.0 .. 12.0 s
        i, j = int((8.0 + 0.2 * k) * sr), int((8.2 + 0.2 * k) * sr)
        ratio[i:j] = 10 ** 0.6 - 1 if k % 2 == 0 else 10 ** 0.25 - 1
    wave = (noise + np.sqrt(2 * ratio) * 0.01 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    seg = get_segmenter("energy", padding=0.0, merge_gap=0.0, min_duration=0.0)
    assert_matches(seg.segment_wave(wave, sr, "r"), [(8.0, 12.0)])
    without = get_segmenter("energy", padding=0.0, merge_gap=0.0, min_duration=0.0, hysteresis_db=0.0)
    assert len(without.segment_wave(wave, sr, "r")) >= 5  # the same gate without hysteresis chatters


def test_steady_noise_alone_gives_no_segments():
    wave = (0.05 * np.random.default_rng(0).standard_normal(16000 * 20)).astype(np.float32)
    assert get_segmenter("energy").segment_wave(wave, 16000, "r") == []


def test_padding_extends_and_clips_to_file():
    events = [(0.05, 1.0, "tone"), (4.0, 5.0, "tone"), (9.0, 9.98, "tone")]
    wave = events_wave(events, 10.0, 16000, snr_db=10.0)
    segs = get_segmenter("energy", padding=0.25).segment_wave(wave, 16000, "r")
    assert_matches(segs, [(0.0, 1.25), (3.75, 5.25), (8.75, 10.0)])


def test_long_tone_in_two_minute_file_split_at_max_duration():
    sr = 16000
    wave = events_wave([(10.0, 109.8, "tone")], 120.0, sr, snr_db=10.0)
    segs = get_segmenter("energy", padding=0.0, max_duration=10.0).segment_wave(wave, sr, "long")
    got = spans(segs)
    assert len(got) == 10  # 99.8 s -> ceil(99.8 / 10) near-equal pieces
    assert all(e - s <= 10.0 + 1e-6 for s, e in got)
    assert abs(got[0][0] - 10.0) <= TOL and abs(got[-1][1] - 109.8) <= TOL
    assert all(abs(e0 - s1) < 1e-6 for (_, e0), (s1, _) in zip(got, got[1:]))  # contiguous pieces
    # with the default padding (0.1 s) the run is ~100 s long -> 11 near-equal pieces
    segs = get_segmenter("energy").segment_wave(wave, sr, "long")
    lengths = [s.duration for s in segs]
    assert len(segs) == 11 and max(lengths) <= 10.0 + 1e-6 and max(lengths) - min(lengths) < 2.0


def test_split_lands_in_quiet_dip():
    sr = 16000
    # 20 s of tone with a 100 ms pause at 11.6 s (bridged by merge_gap); the ideal cut is 11.0 s
    wave = events_wave([(1.0, 11.6, "tone"), (11.7, 21.0, "tone")], 22.0, sr, snr_db=15.0)
    segs = get_segmenter("energy", padding=0.0, max_duration=12.0).segment_wave(wave, sr, "r")
    got = spans(segs)
    assert len(got) == 2
    assert 11.58 <= got[0][1] <= 11.72 and got[0][1] == got[1][0]


def test_short_gaps_merged_short_blips_dropped():
    sr = 16000
    bursts = [(1.0 + 0.5 * i, 1.35 + 0.5 * i, "tone") for i in range(6)]  # 0.35 s on, 0.15 s off
    wave = events_wave(bursts + [(6.0, 6.02, "tone")], 8.0, sr, snr_db=15.0)
    merged = get_segmenter("energy", padding=0.0).segment_wave(wave, sr, "r")
    assert_matches(merged, [(1.0, 3.85)])  # the 20 ms click at 6.0 s is dropped (< min_duration)
    separate = get_segmenter("energy", padding=0.0, merge_gap=0.05).segment_wave(wave, sr, "r")
    assert_matches(separate, bursts)
    kept = get_segmenter("energy", padding=0.0, short="extend", min_duration=0.5).segment_wave(wave, sr, "r")
    assert spans(kept)[-1][1] - spans(kept)[-1][0] == pytest.approx(0.5, abs=1e-6)
    assert abs(sum(spans(kept)[-1]) / 2 - 6.01) <= TOL


def test_dc_offset_does_not_count_as_sound():
    wave = events_wave(EVENTS, 20.0, 16000, snr_db=10.0)
    seg = get_segmenter("energy", padding=0.0)
    assert spans(seg.segment_wave(wave + 0.3, 16000, "r")) == spans(seg.segment_wave(wave, 16000, "r"))


def test_deterministic_and_file_equals_wave(tmp_path):
    sr = 22050
    wave = events_wave(EVENTS, 20.0, sr, snr_db=10.0, seed=11)
    path = write_flac(tmp_path / "ev.flac", np.stack([wave, wave], axis=1), sr)
    decoded, _ = sf.read(path, dtype="float32")
    seg = get_segmenter("energy")
    from_file = seg.segment_file(path, "ev")
    assert from_file == seg.segment_file(path, "ev")
    assert from_file == seg.segment_wave(decoded, sr, "ev")
    assert from_file == get_segmenter("energy", block_seconds=0.37).segment_file(path, "ev")
    assert from_file == seg.segment_wave(decoded.mean(axis=1), sr, "ev")
    assert_matches(get_segmenter("energy", padding=0.0).segment_file(path, "ev"), EVENTS)


def _write_long_flac(path, minutes: float, sr: int) -> list[tuple[float, float, str]]:
    """A long FLAC written block by block: a 1 s tone every 30 s in 10 dB SNR noise."""
    rng = np.random.default_rng(5)
    block = 30 * sr
    t = np.arange(sr) / sr
    events = []
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as out:
        for k in range(int(minutes * 2)):
            x = rng.standard_normal(block) * np.sqrt(0.1**2 / 2 / 10)
            x[10 * sr : 11 * sr] += 0.1 * np.sin(2 * np.pi * 800 * t)
            events.append((k * 30 + 10.0, k * 30 + 11.0, "tone"))
            out.write(x.astype(np.float32))
    return events


def test_twenty_minute_file_uses_bounded_memory(tmp_path):
    sr = 8000
    path = tmp_path / "long.flac"
    events = _write_long_flac(path, 20, sr)
    full_decode = 20 * 60 * sr * 4  # bytes the whole file would take as float32
    for name in ("energy", "fixed"):
        segs, elapsed, peak = traced_segment_file(get_segmenter(name, block_seconds=10.0), path, "long")
        assert peak < full_decode / 5, f"{name}: peak {peak / 1e6:.1f} MB vs {full_decode / 1e6:.1f} MB decoded"
        assert elapsed < 30
        if name == "energy":
            assert_matches([s for s in segs], [(s - 0.1, e + 0.1) for s, e, _ in events])
        else:
            assert len(segs) == 240
