"""``speech``: silero-vad chunking on synthesized speech (espeak-ng) and a real 8 kHz prompt."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonalign.audio.io import load_audio
from sonalign.segmenters import get_segmenter
from sonalign.segmenters.speech import silero_model_path

from .conftest import spans, traced_segment_file, write_flac

pytest.importorskip("torch")
try:
    silero_model_path()
except Exception as exc:  # pragma: no cover - environment without silero-vad
    pytest.skip(f"silero-vad model unavailable: {exc}", allow_module_level=True)

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng not installed")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please enter your account number, followed by the pound key.",
    "All circuits are busy now. Please try your call again later.",
]


def speak(text: str, tmp: Path) -> tuple[np.ndarray, int]:
    out = tmp / f"tts_{abs(hash(text))}.wav"
    subprocess.run([ESPEAK, "-w", str(out), text], check=True, capture_output=True, timeout=60)
    wave, sr = sf.read(out, dtype="float32")
    return wave, sr


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    if ESPEAK is None:
        pytest.skip("espeak-ng not installed")
    tmp = tmp_path_factory.mktemp("tts")
    return [speak(s, tmp) for s in SENTENCES]


@pytest.fixture(scope="module")
def speech_silence_speech(tts):
    (a, sr), (b, _) = tts[0], tts[1]
    gap = np.zeros(2 * sr, dtype=np.float32)
    wave = np.concatenate([a, gap, b])
    return wave, sr, len(a) / sr, (len(a) + len(gap)) / sr


@needs_espeak
@pytest.mark.parametrize("noise_dbfs", [None, -50.0])
def test_speech_silence_speech_gives_two_segments(speech_silence_speech, noise_dbfs):
    wave, sr, first_end, second_start = speech_silence_speech
    if noise_dbfs is not None:
        rng = np.random.default_rng(0)
        wave = wave + (10 ** (noise_dbfs / 20) * rng.standard_normal(wave.size)).astype(np.float32)
    segs = get_segmenter("speech").segment_wave(wave, sr, "tts")
    got = spans(segs)
    assert len(got) == 2, got
    (s0, e0), (s1, e1) = got
    assert s0 <= 0.3 and first_end - 0.4 <= e0 <= first_end + 0.4
    assert second_start - 0.4 <= s1 <= second_start + 0.4 and e1 >= len(wave) / sr - 0.4
    assert e0 < first_end + 0.5 and s1 > second_start - 0.5  # the middle of the pause is not speech
    assert [s.id for s in segs] == ["tts-00000", "tts-00001"]
    assert all(s.custom["kind"] == "speech" and s.custom["speech_prob"] > 0.5 for s in segs)


def test_noise_and_tones_are_not_speech():
    sr = 16000
    rng = np.random.default_rng(1)
    t = np.arange(8 * sr) / sr
    noise = (0.05 * rng.standard_normal(t.size)).astype(np.float32)
    tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    seg = get_segmenter("speech")
    assert seg.segment_wave(noise, sr, "n") == []
    assert seg.segment_wave(tone, sr, "t") == []


@needs_espeak
def test_deterministic_and_file_equals_wave(speech_silence_speech, tmp_path):
    import torch

    wave, sr, _, _ = speech_silence_speech
    path = write_flac(tmp_path / "tts.flac", wave, sr)
    decoded, _ = load_audio(path)
    threads = torch.get_num_threads()
    seg = get_segmenter("speech")
    from_file = seg.segment_file(path, "tts")
    assert torch.get_num_threads() == threads  # the single-thread VAD run restores torch's setting
    assert len(from_file) == 2
    assert from_file == seg.segment_file(path, "tts")
    assert from_file == seg.segment_wave(decoded, sr, "tts")
    assert from_file == get_segmenter("speech").segment_wave(decoded, sr, "tts")  # fresh model, same result


@needs_espeak
def test_model_state_reset_per_file(tts):
    """Probabilities for a file do not depend on what the instance processed before."""
    from sonalign.segmenters.base import wave_blocks

    (a, sr), (b, _) = tts[0], tts[1]
    seg = get_segmenter("speech")
    first, _, _ = seg.speech_probabilities(wave_blocks(a, sr, 16000, 30.0))
    seg.speech_probabilities(wave_blocks(b, sr, 16000, 30.0))
    again, _, _ = seg.speech_probabilities(wave_blocks(a, sr, 16000, 30.0))
    assert np.array_equal(first, again)
    fresh, _, _ = get_segmenter("speech").speech_probabilities(wave_blocks(a, sr, 16000, 30.0))
    assert np.array_equal(first, fresh)


@needs_espeak
def test_long_speech_split_at_max_duration(tts):
    sr = tts[0][1]
    wave = np.concatenate([w for w, _ in tts] * 2)  # ~18 s of continuous speech
    segs = get_segmenter("speech", max_duration=4.0, merge_gap=1.0).segment_wave(wave, sr, "long")
    assert len(segs) >= 4
    assert all(s.duration <= 4.0 + 1e-6 for s in segs)
    covered = sum(s.duration for s in segs)
    assert covered >= 0.8 * len(wave) / sr


@pytest.mark.realdata
def test_real_8khz_prompt_covered(shared_data):
    path = shared_data / "asterisk" / "audio" / "agent-alreadyon.flac"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    segs = get_segmenter("speech").segment_file(path, "agent-alreadyon")
    assert segs and all(s.custom["kind"] == "speech" for s in segs)
    wave, sr = load_audio(path)
    hop = sr // 100
    frames = wave[: wave.size // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - 30)  # the spoken part
    times = (loud + 0.5) * hop / sr
    inside = np.zeros(times.size, dtype=bool)
    for s in segs:
        inside |= (times >= s.start) & (times < s.end)
    assert inside.mean() >= 0.9, f"speech segments {spans(segs)} cover {inside.mean():.0%} of the loud frames"


@pytest.mark.slow
def test_hour_long_file_uses_bounded_memory(tmp_path):
    from sonalign.segmenters.speech import STREAM_BATCH, STREAM_WINDOWS, WINDOW

    sr = 16000
    path = tmp_path / "long.flac"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as out:
        for _ in range(120):
            out.write((0.01 * rng.standard_normal(30 * sr)).astype(np.float32))
    segs, elapsed, peak = traced_segment_file(get_segmenter("speech", block_seconds=10.0), path, "long")
    assert segs == []
    chunk_bytes = STREAM_BATCH * STREAM_WINDOWS * WINDOW * 4  # one 327 s super-chunk (21 MB)
    assert peak < 5 * chunk_bytes < 0.5 * 60 * 60 * sr * 4, f"peak {peak / 1e6:.1f} MB"  # a few super-chunks, not the 230 MB file
    assert elapsed < 600


def one_pass_probabilities(wave16k: np.ndarray) -> np.ndarray:
    """Silero's own stateful wrapper, one window at a time over the whole wave (the reference)."""
    import warnings

    import torch

    from sonalign.segmenters.speech import WINDOW

    with warnings.catch_warnings():  # torch >= 2.9 marks torch.jit.load deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(silero_model_path()))
    n = -(-wave16k.size // WINDOW)
    padded = np.zeros(n * WINDOW, np.float32)
    padded[: wave16k.size] = wave16k
    with torch.inference_mode():
        return np.array([float(model(torch.from_numpy(row.copy()), 16000)) for row in padded.reshape(n, WINDOW)])


def speech_mask(segs, seconds: float, step: float = 0.01) -> np.ndarray:
    t = np.arange(0.0, seconds, step)
    inside = np.zeros(t.size, bool)
    for s in segs:
        inside |= (t >= s.start) & (t < s.end)
    return inside


@needs_espeak
def test_short_file_equals_one_silero_pass(tts):
    """A file shorter than one stream (10.24 s) runs exactly as one pass of silero's own wrapper."""
    from sonalign.audio.io import resample
    from sonalign.segmenters.base import wave_blocks

    wave, sr = tts[1]
    wave16 = resample(wave, sr, 16000)
    assert wave16.size / 16000 < 10.0
    probs, _, _ = get_segmenter("speech").speech_probabilities(wave_blocks(wave16, 16000, 16000, 1.0))
    np.testing.assert_allclose(probs, one_pass_probabilities(wave16), atol=1e-5)


@needs_espeak
def test_long_file_streams_agree_with_one_pass_and_ignore_block_size(tts):
    from sonalign.audio.io import resample
    from sonalign.segmenters.base import wave_blocks
    from sonalign.segmenters.speech import STREAM_BATCH, STREAM_WINDOWS, WINDOW

    sr = tts[0][1]
    gap = np.zeros(sr, np.float32)
    wave = resample(np.concatenate([np.concatenate([w, gap]) for w, _ in tts] * 4), sr, 16000)  # ~40 s: several streams
    assert wave.size > 3 * STREAM_WINDOWS * WINDOW
    seg = get_segmenter("speech")
    by_block = [seg.speech_probabilities(wave_blocks(wave, 16000, 16000, b))[0] for b in (0.7, 30.0)]
    assert np.array_equal(by_block[0], by_block[1])  # streams are cut at fixed windows, not at block edges
    ref = one_pass_probabilities(wave)
    assert by_block[0].shape == ref.shape
    # first stream = one pass, up to float32 rounding (batched and single calls sum in different orders)
    np.testing.assert_allclose(by_block[0][:STREAM_WINDOWS], ref[:STREAM_WINDOWS], atol=1e-4)
    assert np.mean((by_block[0] >= 0.5) != (ref >= 0.5)) < 0.03
    one_pass = seg._segments_from(ref, np.ones_like(ref), wave.size, "x")
    batched = seg.segment_wave(wave, 16000, "x")
    a, b = speech_mask(one_pass, wave.size / 16000), speech_mask(batched, wave.size / 16000)
    assert (a & b).sum() / (a | b).sum() > 0.9
    assert STREAM_BATCH * STREAM_WINDOWS * WINDOW * 4 < 32e6  # the buffer bound the docstring promises


@needs_espeak
def test_segment_waves_equals_one_file_at_a_time(tts):
    from sonalign.audio.io import resample

    waves = [resample(w, sr, 16000) for w, sr in tts]
    waves.append(np.concatenate(waves * 3))  # one longer than a stream, split inside
    seg = get_segmenter("speech")
    together = seg.segment_waves(waves, [f"r{i}" for i in range(len(waves))])
    alone = [seg.segment_wave(w, 16000, f"r{i}") for i, w in enumerate(waves)]
    assert together == alone
    assert all(together)
