"""audio/io.py: decoding round trips, mono mixdown, resampling, streaming, and errors naming the file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from sonalign.audio.io import audio_info, find_audio_files, load_audio, load_audio_query, stream_audio
from sonalign.errors import AudioError


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(wave: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spec) * sr / wave.size)


def busy_signal(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Gated tones over noise: plenty of transients for codecs and resamplers to get wrong."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    gate = (np.sin(2 * np.pi * 0.3 * t) > 0).astype(np.float32)
    return (0.2 * np.sin(2 * np.pi * 440 * t) * gate + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext,lossless", [("wav", True), ("flac", True), ("ogg", False), ("mp3", False)])
def test_round_trip_through_soundfile(tmp_path, ext, lossless):
    sr = 22050
    x = tone(2.0, sr)
    path = tmp_path / f"t.{ext}"
    sf.write(path, x, sr)
    info = audio_info(path)
    assert info.sample_rate == sr and info.channels == 1
    wave, rate = load_audio(path)
    assert rate == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - x.size) <= 0.01 * x.size
    assert dominant_hz(wave, sr) == pytest.approx(440.0, abs=2.0)
    if lossless:
        assert wave.size == x.size and np.max(np.abs(wave - x)) <= 1e-4
    else:
        n = min(wave.size, x.size)
        assert np.corrcoef(wave[:n], x[:n])[0, 1] > 0.95
    streamed = np.concatenate(list(stream_audio(path, sr, block_seconds=0.3)))
    assert np.max(np.abs(streamed - wave)) <= 1e-4


def test_stereo_is_mixed_to_mono(tmp_path):
    sr = 16000
    left, right = tone(1.0, sr, 440), tone(1.0, sr, 1000, amp=0.2)
    path = tmp_path / "st.flac"
    sf.write(path, np.stack([left, right], axis=1), sr)
    assert audio_info(path).channels == 2
    wave, _ = load_audio(path)
    assert wave.shape == left.shape
    assert np.max(np.abs(wave - (left + right) / 2)) <= 1e-4
    streamed = np.concatenate(list(stream_audio(path, sr, block_seconds=0.25)))
    assert np.array_equal(streamed, wave)


@pytest.mark.parametrize("orig,target", [(44100, 16000), (8000, 16000), (48000, 22050)])
def test_resampling_gives_requested_rate(tmp_path, orig, target):
    path = tmp_path / "r.wav"
    sf.write(path, tone(3.0, orig, 1000.0), orig)
    wave, rate = load_audio(path, target)
    assert rate == target
    assert abs(wave.size - round(3.0 * target)) <= 1
    assert dominant_hz(wave, target) == pytest.approx(1000.0, abs=1.0)
    assert float(np.sqrt(np.mean(wave[target // 10 : -target // 10] ** 2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def test_stream_equals_load_and_resample_for_30s_file(tmp_path):
    sr, target, block = 44100, 16000, 7.3
    path = tmp_path / "long.flac"
    sf.write(path, busy_signal(30.0, sr), sr)
    whole, _ = load_audio(path, target)
    blocks = list(stream_audio(path, target, block_seconds=block))
    assert all(b.size == round(block * target) for b in blocks[:-1]) and 0 < blocks[-1].size <= round(block * target)
    streamed = np.concatenate(blocks)
    assert streamed.size == whole.size
    assert np.max(np.abs(streamed - whole)) <= 1e-4


def test_stream_at_native_rate_is_exact(tmp_path):
    sr = 16000
    path = tmp_path / "n.wav"
    sf.write(path, busy_signal(5.0, sr), sr, subtype="FLOAT")
    whole, _ = load_audio(path)
    for block in (0.01, 1.0, 5.0, 60.0):  # including a file length that is an exact multiple of the block
        assert np.array_equal(np.concatenate(list(stream_audio(path, sr, block_seconds=block))), whole)


@pytest.mark.parametrize("sr", [22050, 44100])
def test_mp3_stream_matches_whole_read(tmp_path, sr):
    """Regression: SoundFile.read re-seeks after every read, and an MP3 seek loses mpg123's bit
    reservoir, so blocks after the first decoded as garbage (errors ~0.3 on a plain tone)."""
    path = tmp_path / "b.mp3"
    sf.write(path, np.concatenate([tone(10.0, sr), busy_signal(10.0, sr)]), sr)
    whole, _ = load_audio(path)
    for block in (0.05, 1.0, 7.3):
        streamed = np.concatenate(list(stream_audio(path, sr, block_seconds=block)))
        assert streamed.size == whole.size
        assert np.max(np.abs(streamed - whole)) <= 1e-4, f"block {block}s"
    resampled, _ = load_audio(path, 16000)
    assert np.max(np.abs(np.concatenate(list(stream_audio(path, 16000, block_seconds=2.0))) - resampled)) <= 1e-4


def test_load_excerpt(tmp_path):
    sr = 8000
    x = busy_signal(4.0, sr)
    path = tmp_path / "e.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    part, _ = load_audio(path, start=1.5, duration=0.5)
    assert np.array_equal(part, x[12000:16000])
    assert audio_info(path).duration == pytest.approx(4.0)


# ----------------------------------------------------------------------------- errors


def _bad_files(tmp: os.PathLike) -> dict[str, tuple[str, str]]:
    """name -> (path, expected message fragment)."""
    tmp = str(tmp)
    out = {}
    sr = 16000
    good = os.path.join(tmp, "good.wav")
    sf.write(good, busy_signal(1.0, sr), sr)
    raw = open(good, "rb").read()
    good_flac = os.path.join(tmp, "good.flac")
    sf.write(good_flac, busy_signal(2.0, sr), sr)
    flac = bytearray(open(good_flac, "rb").read())

    def put(name, data, why):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(data)
        out[name] = (p, why)

    put("empty.wav", b"", "empty")
    put("notes.wav", b"this is a text file, not audio\n" * 20, "unreadable or corrupt")
    put("junk.flac", np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(), "unreadable or corrupt")
    put("header-cut.wav", raw[:30], "unreadable or corrupt")
    put("data-cut.flac", bytes(flac[: len(flac) // 2]), "unreadable or corrupt")
    corrupt = bytearray(flac)
    corrupt[len(corrupt) // 3 : len(corrupt) // 3 + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    put("garbled.flac", bytes(corrupt), "unreadable or corrupt")
    zero = os.path.join(tmp, "zero.wav")
    sf.write(zero, np.zeros(0, dtype=np.float32), sr)
    out["zero.wav"] = (zero, "zero-length")
    silent = os.path.join(tmp, "silent.flac")
    sf.write(silent, np.zeros(sr, dtype=np.float32), sr)
    out["silent.flac"] = (silent, "all-silent")
    nan = os.path.join(tmp, "nan.wav")
    sf.write(nan, np.full(100, np.nan, dtype=np.float32), sr, subtype="FLOAT")
    out["nan.wav"] = (nan, "NaN")
    out["missing.wav"] = (os.path.join(tmp, "missing.wav"), "no such file")
    return out


BAD = ["empty.wav", "notes.wav", "junk.flac", "header-cut.wav", "data-cut.flac", "garbled.flac", "zero.wav", "silent.flac", "nan.wav", "missing.wav"]


@pytest.mark.parametrize("name", BAD)
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, name):
    path, why = _bad_files(tmp_path)[name]
    with pytest.raises(AudioError, match=why) as err:
        load_audio(path)
    assert name in str(err.value) and err.value.path == path
    with pytest.raises(AudioError, match=why) as err:
        list(stream_audio(path, 16000, block_seconds=0.5))
    assert name in str(err.value)


def test_silent_files_allowed_on_request(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(800, dtype=np.float32), 8000)
    wave, _ = load_audio(path, allow_silent=True)
    assert wave.size == 800 and not wave.any()
    assert sum(b.size for b in stream_audio(path, 16000, allow_silent=True)) == 1600


def test_find_audio_files_sorted_and_skips_hidden(tmp_path):
    for rel in ["b/2.flac", "a.wav", "b/1.MP3", ".hidden/x.wav", "b/.y.wav", "notes.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert found == ["a.wav", "b/1.MP3", "b/2.flac"]
    assert find_audio_files(tmp_path / "a.wav") == [tmp_path / "a.wav"]
    with pytest.raises(FileNotFoundError):
        find_audio_files(tmp_path / "nope")


def test_find_audio_files_follows_folder_links_once(tmp_path):
    import os

    import numpy as np
    import soundfile as sf

    from sonalign.audio.io import find_audio_files

    real = tmp_path / "real"
    real.mkdir()
    sf.write(real / "a.wav", np.zeros(160, np.float32), 16000)
    (real / ".hidden.wav").write_bytes(b"")
    (real / "notes.txt").write_text("x")
    top = tmp_path / "top"
    top.mkdir()
    os.symlink(real, top / "linked", target_is_directory=True)
    os.symlink(top, real / "loop", target_is_directory=True)  # a cycle
    assert [p.relative_to(top).as_posix() for p in find_audio_files(top)] == ["linked/a.wav"]


# ----------------------------------------------------------------------------- query clips


def silent_flac(seconds: float, sr: int, channels: int, *, unknown_length: bool = False) -> bytes:
    """A silent FLAC written block by block; ``unknown_length`` zeroes STREAMINFO's total-samples field."""
    import io

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=sr, channels=channels, format="FLAC") as f:
        block = np.zeros((sr * 10, channels), np.float32)
        for _ in range(int(seconds // 10)):
            f.write(block)
    data = bytearray(buf.getvalue())
    if unknown_length:  # "fLaC", block header, then 13 bytes into STREAMINFO: 36 bits of total samples
        data[21] &= 0xF0
        data[22:26] = b"\0\0\0\0"
    return bytes(data)


def test_load_audio_query_reads_paths_bytes_and_files_as_mono(tmp_path):
    import io

    sr = 16000
    left, right = tone(1.0, sr, 440), tone(1.0, sr, 1000, amp=0.2)
    path = tmp_path / "q.flac"
    sf.write(path, np.stack([left, right], axis=1), sr)
    expected, _ = load_audio(path)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        wave, rate = load_audio_query(source, 5.0)
        assert rate == sr and wave.dtype == np.float32 and wave.ndim == 1
        np.testing.assert_allclose(wave, expected, atol=1e-6)


def test_load_audio_query_refuses_a_long_clip_from_its_header(monkeypatch):
    """Ten minutes of stereo silence against a 2 s limit: refused before a single frame is decoded."""
    data = silent_flac(600, 48000, 2)
    reads = []
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: reads.append(a) or real_read(self, *a, **k))
    with pytest.raises(AudioError, match=r"too long \(600 s; at most 2 s\)") as err:
        load_audio_query(data, 2.0, name="long.flac")
    assert err.value.path == "long.flac" and reads == []


def test_load_audio_query_stops_decoding_at_the_limit_when_the_length_is_unknown():
    """A FLAC whose header does not say its length: decoding stops after the limit, memory stays small."""
    import tracemalloc

    data = silent_flac(600, 48000, 2, unknown_length=True)  # decoded whole: 600 s x 48 kHz x 2 x 4 bytes
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"too long \(more than 1 s\)"):
            load_audio_query(data, 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 600 * 48000 * 2 * 4 / 20
    wave, rate = load_audio_query(data, 700.0)  # within the limit it reads to the end
    assert rate == 48000 and wave.size == 600 * 48000


def test_load_audio_query_mp3_length_is_checked_while_decoding(tmp_path):
    path = tmp_path / "q.mp3"
    sf.write(path, tone(3.0, 22050), 22050)
    with pytest.raises(AudioError, match=r"too long \(more than 2 s\)"):
        load_audio_query(path, 2.0)
    wave, rate = load_audio_query(path, 5.0)
    assert rate == 22050 and abs(wave.size - 3 * 22050) <= 0.05 * 3 * 22050


def test_load_audio_query_errors_name_the_source(tmp_path):
    import io

    with pytest.raises(AudioError, match="could not decode the audio") as err:
        load_audio_query(b"not audio at all", 5.0, name="notes.wav")
    assert str(err.value).startswith("notes.wav: ") and "BytesIO" not in str(err.value)
    with pytest.raises(AudioError, match="no such file"):
        load_audio_query(tmp_path / "missing.wav", 5.0)
    with pytest.raises(AudioError, match="^uploaded audio: "):
        load_audio_query(b"", 5.0)
    hi = io.BytesIO()
    sf.write(hi, np.zeros(100, np.float32), 384000, format="WAV")
    with pytest.raises(AudioError, match="sample rate 384000 Hz"):
        load_audio_query(hi.getvalue(), 5.0)
