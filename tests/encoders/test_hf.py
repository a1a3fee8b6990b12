"""hf:PATH on tiny random models saved to disk: dispatch, shapes, masks, determinism, agreement
with the models' own feature functions, the CLAP pair, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sonalign.encoders import get_audio_encoder, get_text_encoder
from sonalign.encoders.hf import ClapPair, HFClapAudioEncoder, HFSSLAudioEncoder, HFWhisperEncoder, load_clap_pair
from sonalign.errors import ConfigError

from .conftest import noise

SR = 16000
TEXTS = ["a dog barks", "the sound of rain on a car", "", "loud music and people talking in the door"]


def _check_audio_output(out, n, dim):
    assert out["embedding"].shape == (n, dim) and out["embedding"].dtype == np.float32
    assert out["frames"].ndim == 3 and out["frames"].shape[0] == n and out["frames"].shape[2] == dim
    assert out["frames_mask"].shape == out["frames"].shape[:2] and out["frames_mask"].dtype == bool
    for i in range(n):
        m = out["frames_mask"][i]
        k = int(m.sum())
        assert k >= 1 and m[:k].all() and not m[k:].any()  # valid frames first, then padding


# ------------------------------------------------------------------------------------------ CLAP
def test_clap_audio(tiny_hf):
    enc = get_audio_encoder(f"hf:{tiny_hf['clap']}")
    assert isinstance(enc, HFClapAudioEncoder) and enc.sample_rate == SR and enc.dim == 12
    assert enc.frames_per_window == 32 and enc.hidden_dim == 16
    waves = [noise(1.0, SR, 0), noise(0.5, SR, 1), noise(2.5, SR, 2), noise(0.001, SR, 3), np.zeros(0, np.float32)]
    out = enc.encode(waves, batch_size=2)
    _check_audio_output(out, 5, 12)
    # tiny config: 32 frames per 1 s window; the 2.5 s clip spans three windows (32 + 32 + 16)
    assert enc.frames_per_second == pytest.approx(32) and enc.frame_hop_seconds == pytest.approx(1 / 32)
    assert out["frames"].shape[1] == 80
    np.testing.assert_array_equal(out["frames_mask"].sum(1), [32, 16, 80, 1, 1])
    again = enc.encode(waves, batch_size=2)
    for k in out:
        assert np.array_equal(out[k], again[k])  # no random crop, no random is_longer


def test_clap_frames_are_in_time_order(tiny_hf):
    """Changing only the end (start) of a clip changes only the last (first) frames."""
    enc = get_audio_encoder(f"hf:{tiny_hf['clap']}")
    rng = np.random.default_rng(0)
    a = noise(1.0, SR, 10)
    late, early = a.copy(), a.copy()
    late[12000:] = 0.5 * rng.standard_normal(4000)
    early[:3000] = 0.5 * rng.standard_normal(3000)
    fa, fl, fe = (enc.encode([x])["frames"][0] for x in (a, late, early))
    d_late, d_early = np.abs(fa - fl).mean(1), np.abs(fa - fe).mean(1)
    assert d_late[:16].max() < 0.1 * d_late[-8:].max()
    assert d_early[-16:].max() < 0.1 * d_early[:6].max()


def test_clap_matches_get_features(tiny_hf):
    from transformers import ClapFeatureExtractor, ClapModel, AutoTokenizer

    path = tiny_hf["clap"]
    model = ClapModel.from_pretrained(str(path), local_files_only=True).eval()
    fe = ClapFeatureExtractor.from_pretrained(str(path), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    waves = [noise(1.0, SR, 5), noise(0.3, SR, 6)]
    with torch.no_grad():
        ref_a = model.get_audio_features(**fe(waves, sampling_rate=SR, truncation="rand_trunc", return_tensors="pt")).pooler_output.numpy()
        ref_t = model.get_text_features(**tok(TEXTS, padding=True, return_tensors="pt")).pooler_output.numpy()
    pair = load_clap_pair(f"hf:{path}")
    assert isinstance(pair, ClapPair) and pair.sample_rate == SR and pair.dim == 12
    np.testing.assert_allclose(pair.encode_audio(waves), ref_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pair.encode_text(TEXTS), ref_t, rtol=1e-5, atol=1e-6)
    # long audio: duration-weighted mean of the normalised window embeddings
    long = noise(1.5, SR, 7)
    parts = pair.encode_audio([long[:SR], long[SR:]])
    expected = (parts[0] * 1.0 + parts[1] * 0.5) / 1.5
    np.testing.assert_allclose(pair.encode_audio([long])[0], expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)


def test_clap_text(tiny_hf):
    enc = get_text_encoder(f"hf:{tiny_hf['clap']}")
    out = enc.encode(TEXTS, batch_size=3)
    assert out["embedding"].shape == (4, 12) and out["tokens"].shape[0] == 4 and out["tokens"].shape[2] == 12
    assert out["tokens_mask"].sum(1)[2] == 2  # [CLS] [SEP]
    assert np.all(out["tokens"][~out["tokens_mask"]] == 0)
    assert np.array_equal(enc.encode(TEXTS, batch_size=3)["embedding"], out["embedding"])
    s = enc.settings()
    json.dumps(s)
    assert s["model_type"] == "clap" and s["kind"] == "text" and len(s["weights_sha256"]) == 12


# ------------------------------------------------------------------------------- wav2vec2 family
@pytest.mark.parametrize("kind", ["w2v_layer", "w2v_group", "hubert", "wavlm"])
def test_ssl_models(tiny_hf, kind):
    enc = get_audio_encoder(f"hf:{tiny_hf[kind]}")
    assert isinstance(enc, HFSSLAudioEncoder) and enc.dim == 16 and enc.sample_rate == SR
    assert enc.min_samples == 20 and enc.frame_hop_seconds == pytest.approx(10 / SR)
    waves = [noise(0.1, SR, 0), noise(0.05, SR, 1), noise(0.0005, SR, 2), np.zeros(0, np.float32)]
    out = enc.encode(waves, batch_size=4)
    _check_audio_output(out, 4, 16)
    # conv output lengths: (n - 10) // 5 + 1, then (m - 3) // 2 + 1 ; short inputs padded to 20 samples
    def frames(n):
        n = max(n, 20)
        return ((n - 10) // 5 + 1 - 3) // 2 + 1

    np.testing.assert_array_equal(out["frames_mask"].sum(1), [frames(1600), frames(800), frames(8), frames(0)])
    for i in range(4):
        k = int(out["frames_mask"][i].sum())
        np.testing.assert_allclose(out["embedding"][i], out["frames"][i, :k].mean(0), rtol=1e-5, atol=1e-6)
    again = enc.encode(waves, batch_size=4)
    for key in out:
        assert np.array_equal(out[key], again[key])
    alone = enc.encode([waves[1]])
    k = int(alone["frames_mask"][0].sum())
    if kind == "w2v_layer":  # batched with an attention mask: equal up to float rounding
        np.testing.assert_allclose(alone["frames"][0, :k], out["frames"][1, :k], rtol=1e-4, atol=1e-5)
    else:  # no attention mask: one wave at a time, so padding never leaks in
        assert np.array_equal(alone["frames"][0, :k], out["frames"][1, :k])


# --------------------------------------------------------------------------------------- whisper
def test_whisper_encoder(tiny_hf):
    enc = get_audio_encoder(f"hf:{tiny_hf['whisper']}")
    assert isinstance(enc, HFWhisperEncoder) and enc.dim == 16 and enc.frame_hop_seconds == pytest.approx(0.02)
    waves = [noise(0.5, SR, 0), noise(1.0, SR, 1), noise(2.3, SR, 2), noise(0.001, SR, 3)]
    out = enc.encode(waves, batch_size=2)
    _check_audio_output(out, 4, 16)
    # 1 s windows of 50 frames; frames past the real audio are cut
    np.testing.assert_array_equal(out["frames_mask"].sum(1), [25, 50, 50 + 50 + 15, 1])
    again = enc.encode(waves, batch_size=2)
    for key in out:
        assert np.array_equal(out[key], again[key])
    k = 25
    np.testing.assert_allclose(out["embedding"][0], out["frames"][0, :k].mean(0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ text (bert)
def test_generic_text_model(tiny_hf):
    enc = get_text_encoder(f"hf:{tiny_hf['bert']}")
    assert enc.dim == 16
    out = enc.encode(TEXTS, batch_size=3)
    assert out["embedding"].shape == (4, 16) and out["tokens"].shape[2] == 16
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_hf["bert"]), local_files_only=True)
    model = AutoModel.from_pretrained(str(tiny_hf["bert"]), local_files_only=True).eval()
    enc_in = tok(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc_in).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(out["embedding"][0], ref, rtol=1e-5, atol=1e-6)
    norm = enc.encode(TEXTS, normalize_embeddings=True)["embedding"]
    np.testing.assert_allclose(np.linalg.norm(norm, axis=1), 1.0, rtol=1e-5)
    assert enc.settings()["max_length"] == 40


# ---------------------------------------------------------------------------------------- errors
def test_errors(tiny_hf, tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        get_audio_encoder(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        get_text_encoder(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="not a supported audio model"):
        get_audio_encoder(f"hf:{tiny_hf['bert']}")
    with pytest.raises(ConfigError, match="audio model"):
        get_text_encoder(f"hf:{tiny_hf['whisper']}")
    with pytest.raises(ConfigError, match="not CLAP"):
        load_clap_pair(tiny_hf["bert"])
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"hidden_size": 4}))
    with pytest.raises(ConfigError, match="model_type"):
        get_audio_encoder(f"hf:{odd}")
    with pytest.raises(ConfigError):
        get_audio_encoder("hf:")


def test_device_option(tiny_hf, monkeypatch):
    """``device=`` reaches every hf encoder (factory, CLAP pair); the CPU result is the default's."""
    monkeypatch.delenv("SONALIGN_DEVICE", raising=False)
    waves = [noise(1.0, SR, 21), noise(0.4, SR, 22)]
    for name in ("clap", "w2v_layer", "whisper"):
        default, on_cpu = get_audio_encoder(f"hf:{tiny_hf[name]}"), get_audio_encoder(f"hf:{tiny_hf[name]}", device="cpu")
        assert on_cpu.device == torch.device("cpu")
        np.testing.assert_array_equal(default.encode(waves)["embedding"], on_cpu.encode(waves)["embedding"])
    for name in ("clap", "bert"):
        default, on_cpu = get_text_encoder(f"hf:{tiny_hf[name]}"), get_text_encoder(f"hf:{tiny_hf[name]}", device="cpu")
        np.testing.assert_array_equal(default.encode(TEXTS)["embedding"], on_cpu.encode(TEXTS)["embedding"])
    pair = load_clap_pair(tiny_hf["clap"], device="cpu")
    assert pair.audio.device == pair.text.device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            get_audio_encoder(f"hf:{tiny_hf['w2v_layer']}", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_gives_the_cpu_result(tiny_hf):
    waves = [noise(1.0, SR, 23), noise(2.5, SR, 24)]
    for name in ("clap", "w2v_layer", "whisper"):
        cpu = get_audio_encoder(f"hf:{tiny_hf[name]}", device="cpu").encode(waves)
        gpu = get_audio_encoder(f"hf:{tiny_hf[name]}", device="cuda").encode(waves)
        np.testing.assert_allclose(gpu["embedding"], cpu["embedding"], rtol=1e-3, atol=1e-4)
    for name in ("clap", "bert"):
        cpu = get_text_encoder(f"hf:{tiny_hf[name]}", device="cpu").encode(TEXTS)
        gpu = get_text_encoder(f"hf:{tiny_hf[name]}", device="cuda").encode(TEXTS)
        np.testing.assert_allclose(gpu["embedding"], cpu["embedding"], rtol=1e-3, atol=1e-4)
