"""minilm-l6: same vectors as the package's own sentence-transformers pipeline, sane semantics,
token states and masks, truncation, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sonalign.encoders.minilm import MAX_LENGTH, MiniLML6, model_dir

SENTENCES = ["a dog barks", "a puppy barking", "stock market news", "", "Rain falls on a tin roof while thunder rolls in the distance."]


@pytest.fixture(scope="module")
def enc() -> MiniLML6:
    return MiniLML6()


def test_attributes_and_lazy_load():
    e = MiniLML6()
    assert (e.name, e.dim, e.max_length) == ("minilm-l6", 384, 128)
    assert e._model is None
    assert (model_dir() / "config.json").is_file()


def test_matches_sentence_transformers(enc):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    ref = model.encode(SENTENCES, convert_to_numpy=True)  # the package pipeline normalises
    ours = enc.encode(SENTENCES, normalize_embeddings=True)["embedding"]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_semantic_sanity(enc):
    e = enc.encode(["a dog barks", "a puppy barking", "stock market news"], normalize_embeddings=True)["embedding"]
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_tokens_masks_and_mean_pooling(enc):
    out = enc.encode(SENTENCES, batch_size=2)
    b, length, d = out["tokens"].shape
    assert (b, d) == (5, 384) and out["tokens_mask"].shape == (5, length)
    assert out["tokens_mask"].dtype == bool and out["embedding"].dtype == np.float32
    lengths = out["tokens_mask"].sum(1)
    assert lengths[3] == 2  # "" -> [CLS] [SEP]
    assert lengths.max() == length
    for i in range(5):
        m = out["tokens_mask"][i]
        assert m[: lengths[i]].all() and not m[lengths[i] :].any()
        assert np.all(out["tokens"][i, ~m] == 0)
        np.testing.assert_allclose(out["embedding"][i], out["tokens"][i, m].mean(0), rtol=1e-5, atol=1e-6)


def test_truncation_to_max_length(enc):
    long = " ".join(["word"] * 400)
    out = enc.encode([long, "short"])
    assert out["tokens"].shape[1] == MAX_LENGTH
    assert out["tokens_mask"][0].sum() == MAX_LENGTH


def test_deterministic_and_batch_independent(enc):
    a = enc.encode(SENTENCES, batch_size=2)
    b = enc.encode(SENTENCES, batch_size=2)
    for k in a:
        assert np.array_equal(a[k], b[k])
    alone = enc.encode([SENTENCES[4]])["embedding"][0]
    np.testing.assert_allclose(alone, a["embedding"][4], rtol=1e-5, atol=1e-6)


def test_options_settings_errors(enc):
    t = enc.encode(["x"], convert_to_numpy=False, normalize_embeddings=True)
    assert isinstance(t["embedding"], torch.Tensor)
    assert torch.allclose(t["embedding"].norm(dim=1), torch.ones(1))
    assert enc.encode([])["embedding"].shape == (0, 384)
    with pytest.raises(ValueError):
        enc.encode("a single string")
    s = enc.settings()
    json.dumps(s)
    assert len(s["weights_sha256"]) == 12 and s["max_length"] == 128 and s["pooling"] == "mean"


def test_device_option(monkeypatch):
    from sonalign.errors import ConfigError

    monkeypatch.delenv("SONALIGN_DEVICE", raising=False)
    texts = ["a dog barks", "rain on a car roof"]
    np.testing.assert_array_equal(MiniLML6(device="cpu").encode(texts)["embedding"], MiniLML6().encode(texts)["embedding"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            MiniLML6(device="cuda")
