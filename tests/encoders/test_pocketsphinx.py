"""pocketsphinx cascade: transcripts of synthetic (espeak-ng) and real (asterisk prompts) speech,
order-independent decoding, the empty-transcript convention, and the encoder outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sonalign.encoders import get_audio_encoder, get_text_encoder
from sonalign.encoders.pocketsphinx_asr import PocketsphinxASR, to_pcm16

pytest.importorskip("pocketsphinx")

DIGITS = "one two three four five six seven"
STOP = {"a", "an", "the", "and", "or", "of", "to", "by", "on", "in", "at", "be", "is", "are", "your", "you", "please", "as"}


@pytest.fixture(scope="module")
def asr() -> PocketsphinxASR:
    return get_audio_encoder("pocketsphinx")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_pcm_conversion():
    pcm = np.frombuffer(to_pcm16(np.array([0.0, 0.5, -1.0, 2.0], np.float32)), dtype="<i2")
    np.testing.assert_array_equal(pcm, [0, 16384, -32767, 32767])


def test_synthetic_speech_transcript_and_outputs(asr, espeak):
    wave = espeak(DIGITS)
    out = asr.encode([wave, np.zeros(0, np.float32)])
    transcript = out["transcripts"][0]
    assert words(transcript) & words(DIGITS), transcript
    assert out["transcripts"][1] == ""
    assert out["embedding"].shape == (2, 384) and out["frames"].shape[0] == 2 and out["frames"].shape[2] == 384
    assert out["frames_mask"].sum(1)[1] == 2  # "" -> [CLS] [SEP]
    text = get_text_encoder("minilm-l6").encode([transcript, ""])
    np.testing.assert_allclose(out["embedding"], text["embedding"], rtol=1e-5, atol=1e-6)


def test_decoding_does_not_depend_on_previous_utterances(asr, espeak):
    a, b = espeak("two three four", speed=160), espeak("hello world", speed=160)
    first = asr.transcribe(a)
    asr.transcribe(b)
    assert asr.transcribe(a) == first
    assert asr.transcribe(np.zeros(0, np.float32)) == ""


def test_settings(asr):
    s = asr.settings()
    json.dumps(s)
    assert s["sample_rate"] == 16000 and s["dim"] == 384 and s["text_encoder"]["name"] == "minilm-l6"
    assert asr.sample_rate == 16000 and asr.dim == 384


@pytest.mark.realdata
def test_asterisk_prompts(asr, shared_data):
    root = shared_data / "asterisk"
    if not (root / "manifest.jsonl").is_file():
        pytest.skip("../shared/data/asterisk is not present")
    from sonalign.audio.io import load_audio

    rows = {r["id"]: r for r in map(json.loads, (root / "manifest.jsonl").read_text().splitlines())}
    for clip_id in ("cannot-complete-as-dialed", "check-number-dial-again"):
        if clip_id not in rows:
            pytest.skip(f"{clip_id} not in the asterisk manifest")
        wave, _ = load_audio(root / rows[clip_id]["audio"], 16000)
        hyp = asr.transcribe(wave)
        overlap = (words(hyp) & words(rows[clip_id]["text"])) - STOP
        assert overlap, (hyp, rows[clip_id]["text"])


def test_fast_decoder_is_a_distinct_setting_and_still_transcribes(shared_data):
    import json

    from sonalign.audio.io import load_audio
    from sonalign.encoders import get_audio_encoder

    fast = get_audio_encoder("pocketsphinx", fast=True)
    accurate = get_audio_encoder("pocketsphinx")
    assert fast.settings() != accurate.settings()  # cache keys differ
    row = next(json.loads(l) for l in (shared_data / "asterisk" / "manifest.jsonl").open() if json.loads(l)["id"] == "agent-alreadyon")
    wave, _ = load_audio(shared_data / "asterisk" / row["audio"], 16000)
    words = set(fast.transcribe(wave).split())
    assert words & {"agent", "already", "logged", "number", "please"}
