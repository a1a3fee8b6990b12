"""HADE: hierarchical (token/block/sequence) alignment with confidence-weighted disentangled factors
(its contract, gradients, training, padding, saving: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model_checks import frames_and_tokens, opened, params_without_finite_grad
from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.hade import HADE

SMALL = dict(dim=32, embed_dim=16, num_blocks=3, block_levels=[0, 1], num_heads=2, ff_mult=2, num_factors=4, factor_dim=8)
AUDIO_LEVELS = {"audio_frames_block2": 128, "audio_frames_block3": 256}
TEXT_LEVELS = ("text_tokens_layer2", "text_tokens_layer4")


def _model(**overrides) -> HADE:
    torch.manual_seed(0)
    return opened(create_model("hade", **{**SMALL, **overrides}))


def with_levels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a ``with_levels`` cache gives: intermediate encoder levels on the same frames / tokens (here
    fixed random maps of the final features)."""
    g = torch.Generator().manual_seed(1234)
    out = dict(batch)
    for key, dim in AUDIO_LEVELS.items():
        out[key] = torch.tanh(batch["audio_frames"] @ (torch.randn(512, dim, generator=g) / 512**0.5))
    for key in TEXT_LEVELS:
        out[key] = torch.tanh(batch["text_tokens"] @ (torch.randn(384, 384, generator=g) / 384**0.5))
    return out


def random_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    return with_levels(frames_and_tokens(n, seed))


def test_registered_config_reads_the_encoder_levels_and_bad_hierarchies_fail():
    """(Class, eval mode, ``required_inputs``: test_model_contract.py.)"""
    model = create_model("hade")
    assert model.config["features"] == {"with_levels": True} and model.block_levels == [0, 1]
    assert create_model("hade", hierarchy="stream", num_blocks=2, block_levels=[0]).block_levels == [0]
    with pytest.raises(ConfigError):
        create_model("hade", hierarchy="stream", num_blocks=2, block_levels=[5])
    with pytest.raises(ConfigError):
        create_model("hade", hierarchy="layers")
    with pytest.raises(ConfigError):
        create_model("hade", confidence="other")
    with pytest.raises(ConfigError):
        create_model("hade", weights={"tokens": 1.0})


def test_confidences_are_distributions_over_the_factors():
    """(Loss terms, embedding shapes and norms: test_model_contract.py.)"""
    model = _model().train()
    out = model(random_batch())
    for side in ("audio", "text"):
        assert out[side]["confidence"].shape == (8, 4) and (out[side]["confidence"] >= 0).all()
        assert torch.allclose(out[side]["confidence"].sum(-1), torch.ones(8), atol=1e-5)


def _slow_similarity(model: HADE, audio: dict, text: dict) -> torch.Tensor:
    na, nt = audio["seq"].shape[0], text["seq"].shape[0]
    out = torch.zeros(na, nt)
    lam = model.factor_mix
    for i in range(na):
        for j in range(nt):
            ca, ct = audio["confidence"][i], text["confidence"][j]
            if model.confidence_mode == "geometric":
                w = (ca * ct).sqrt()
            else:
                w = ca * ct / (ca * ct).sum()
            cos = [F.cosine_similarity(audio["factors"][i, k], text["factors"][j, k], dim=0) for k in range(len(w))]
            factor_score = sum(w[k] * cos[k] for k in range(len(w)))
            seq = F.cosine_similarity(audio["seq"][i], text["seq"][j], dim=0)
            out[i, j] = (1 - lam) * seq + lam * factor_score
    return out


@pytest.mark.parametrize("mode", ["geometric", "product"])
def test_similarity_matches_per_pair_loop(mode):
    model = _model(confidence=mode, factor_mix=0.6).eval()
    batch = random_batch(6)
    text_batch = random_batch(5, seed=3)
    with torch.no_grad():
        audio, text = model.encode_audio(batch), model.encode_text(text_batch)
        fast = model.similarity(audio, text)
    assert fast.shape == (6, 5)
    assert torch.allclose(fast, _slow_similarity(model, audio, text), atol=1e-5)
    flat = audio["embedding"] @ text["embedding"].T
    if mode == "geometric":  # a flat inner-product index returns the exact HADE score
        assert torch.allclose(flat, fast, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"use_factors": False}, {"sequence", "token", "block"}),
        ({"use_token_level": False, "use_block_level": False}, {"sequence", "factor", "disentangle"}),
        ({"weights": {"token": 0.0, "disentangle": 0.0}}, {"sequence", "block", "factor"}),
    ],
)
def test_ablations_switch_components_off(overrides, expected):
    model = _model(**overrides).train()
    out = model(random_batch())
    assert set(out["losses"]) == expected and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert params_without_finite_grad(model) == []
    if overrides.get("use_factors") is False:
        model.eval()
        with torch.no_grad():
            a, t = model.encode_audio(random_batch()), model.encode_text(random_batch())
        assert torch.allclose(model.similarity(a, t), a["embedding"] @ t["embedding"].T)


# ------------------------------------------------------------------ issue 13 item 4
def test_hierarchy_reads_the_encoders_own_levels():
    model = _model().eval()
    batch = random_batch()
    with torch.no_grad():
        a = model.encode_audio(batch)
        low = model.encode_audio({**batch, "audio_frames_block2": batch["audio_frames_block2"] + 1.0})
        t = model.encode_text(batch)
        mid = model.encode_text({**batch, "text_tokens_layer4": -batch["text_tokens_layer4"]})
    # block 0 reads encoder level 0 (aisfx block 2) and everything above it reads it too
    assert not torch.allclose(a["block0"], low["block0"], atol=1e-4) and not torch.allclose(a["seq"], low["seq"], atol=1e-4)
    # MiniLM layer 4 enters at block 1: block 0 does not see it, block 1 and the sequence level do
    assert torch.allclose(t["block0"], mid["block0"], atol=1e-6) and not torch.allclose(t["block1"], mid["block1"], atol=1e-4)
    without = {k: v for k, v in batch.items() if k != "audio_frames_block3"}
    with pytest.raises(KeyError, match="with_levels"):
        model.encode_audio(without)
    stream = _model(hierarchy="stream")  # the ablation needs no levels
    with torch.no_grad():
        assert stream.encode_audio({k: v for k, v in batch.items() if "block" not in k})["seq"].shape == (8, 16)


def test_pooling_follows_the_encoders_max_for_audio_mean_for_text():
    from sonalign.models.components.projection import masked_max, masked_mean

    model = _model(pooled_residual=False).eval()
    batch = random_batch()
    fm, tm = batch["audio_frames_mask"], batch["text_tokens_mask"]
    with torch.no_grad():
        a_outs = model.audio_stream([batch["audio_frames_block2"], batch["audio_frames_block3"], batch["audio_frames"]], fm)
        t_outs = model.text_stream([batch["text_tokens_layer2"], batch["text_tokens_layer4"], batch["text_tokens"]], tm)
        assert torch.allclose(model.encode_audio(batch)["seq"], F.normalize(model.audio_seq(masked_max(a_outs[-1], fm)), dim=-1), atol=1e-6)
        assert torch.allclose(model.encode_text(batch)["seq"], F.normalize(model.text_seq(masked_mean(t_outs[-1], tm)), dim=-1), atol=1e-6)
