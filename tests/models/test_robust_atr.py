"""Robust-ATR: hybrid-loss wiring, the pairwise refined similarity, ablations and fallbacks (its
contract, gradients, small-batch training, padding, saving: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model_checks import params_without_finite_grad, segment_pairs
from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.losses.hybrid import contrastive_from_scores
from sonalign.models.robust_atr import RobustATR

SMALL = dict(embed_dim=32, pool_hidden=16, transformer_heads=2, transformer_ff=64, refine_heads=2, refine_dim=16)
FLAT_TERMS = {"flat_cos", "flat_l1", "flat_con"}
REFINED_TERMS = {"refined_cos", "refined_l1", "refined_con"}


def _clips(n: int, chunks: int = 10, tokens: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Paired long clips: chunk embeddings and caption tokens, with the frozen pooled vectors (see ``segment_pairs``)."""
    return segment_pairs(n, chunks, tokens, seed=seed, text_key="text_tokens", pooled=True)


def test_registry_builds_robust_atr_on_silence_aware_chunks():
    assert create_model("robust-atr").config["features"]["segmenter"] == "energy"  # the paper's silence-aware chunks, not fixed windows


def test_loss_wiring_and_train_test_consistency():
    model = create_model("robust-atr", w_cos=0.5, w_l1=2.0, w_con=0.7, **SMALL)
    batch = _clips(8, seed=1)
    with torch.no_grad():
        out = model(batch)
        a, t = out["audio"]["embedding"], out["text"]["embedding"]
        losses = out["losses"]
        assert losses["flat_cos"].item() == pytest.approx(0.5 * (1 - (a * t).sum(-1)).mean().item(), rel=1e-5)
        assert losses["flat_l1"].item() == pytest.approx(2.0 * (a - t).abs().mean().item(), rel=1e-5)
        assert losses["flat_con"].item() == pytest.approx(0.7 * contrastive_from_scores(a @ t.T, model.flat_loss.logit_scale).item(), rel=1e-5)
        # the refined contrastive term is computed on exactly the scores similarity() returns at retrieval time
        scores = model.similarity(out["audio"], out["text"])
        assert losses["refined_con"].item() == pytest.approx(0.7 * contrastive_from_scores(scores, model.refined_loss.logit_scale).item(), rel=1e-5)
        assert losses["refined_cos"].item() == pytest.approx(0.5 * (1 - scores.diagonal()).mean().item(), rel=1e-5)


def test_refined_similarity_is_chunked_exactly_depends_on_the_pair_and_falls_back_to_the_cosine():
    """(Per-item encoders and pairwise scores, as every method: test_model_contract.py.)"""
    model = create_model("robust-atr", **SMALL)
    with torch.no_grad():
        audio, text = model.encode_audio(_clips(5, seed=2)), model.encode_text(_clips(7, seed=3))
        sim = model.similarity(audio, text)
        # chunked evaluation is exact
        model.config["similarity_max_elements"] = 1
        assert torch.allclose(model.similarity(audio, text), sim, atol=1e-6)
        # the refinement really depends on the pair (not just the two flat embeddings)
        assert not torch.allclose(sim, audio["embedding"] @ text["embedding"].T, atol=1e-3)
        # dicts without sequences (e.g. from a flat index) fall back to the cosine
        flat = {"embedding": audio["embedding"]}
        assert torch.allclose(model.similarity(flat, text), audio["embedding"] @ text["embedding"].T)


def test_flat_similarity_and_no_refinement_ablation():
    batch = _clips(8, seed=4)
    flat = create_model("robust-atr", similarity="flat", **SMALL)
    with torch.no_grad():
        out = flat(batch)
        assert torch.allclose(flat.similarity(out["audio"], out["text"]), out["audio"]["embedding"] @ out["text"]["embedding"].T)
    plain = create_model("robust-atr", use_refinement=False, **SMALL).train()
    out = plain(batch)
    assert set(out["losses"]) == FLAT_TERMS
    out["loss"].backward()
    assert params_without_finite_grad(plain) == []


def _pair_terms(model: RobustATR, audio: dict, text: dict) -> torch.Tensor:
    """The refined score from its formula for one chunk per clip and one token per caption:
    attention over a single key is the identity, so
    s(i, j) = 1/3 [cos(U_a a_i, V_t T_j) + cos(V_a A_i, U_t t_j) + cos(U_a a_i, U_t t_j)] -- every term pairs audio with text."""
    r = model.refine
    cos = lambda x, y: F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T  # noqa: E731
    a_bar, t_bar = audio["pooled"], text["pooled"]
    a_seq, t_seq = audio["sequence"][:, 0], text["sequence"][:, 0]
    return (cos(r.res_audio(a_bar), r.v_text(t_seq)) + cos(r.v_audio(a_seq), r.res_text(t_bar)) + cos(r.res_audio(a_bar), r.res_text(t_bar))) / 3


def test_refined_score_has_no_per_item_terms():
    """Issue 13 item 3: the refined pair score must not contain terms of one item alone (hubs)."""
    model = create_model("robust-atr", **SMALL).eval()
    audio_batch, text_batch = _clips(6, chunks=1, seed=20), _clips(5, tokens=1, seed=21)
    with torch.no_grad():
        audio, text = model.encode_audio(audio_batch), model.encode_text(text_batch)
        scores = model.similarity(audio, text)
        # one chunk / one token: the score is exactly the cross-modal formula, nothing else
        assert torch.allclose(scores, _pair_terms(model, audio, text), atol=1e-5)
        # an item with nothing in it (all-zero summary and sequence) scores 0 against every item of
        # the other side: no term of the score depends on one side alone
        zero_text = {"sequence": torch.zeros(1, 1, 32), "mask": torch.ones(1, 1, dtype=torch.bool), "pooled": torch.zeros(1, 32)}
        zero_audio = {"sequence": torch.zeros(1, 3, 32), "mask": torch.ones(1, 3, dtype=torch.bool), "pooled": torch.zeros(1, 32)}
        assert torch.allclose(model.refine.score_matrix(audio, zero_text), torch.zeros(6, 1), atol=1e-6)
        assert torch.allclose(model.refine.score_matrix(zero_audio, text), torch.zeros(1, 5), atol=1e-6)
        # scaling one audio item's inputs leaves its scores unchanged (no additive offset per item)
        scaled = {k: (v * 3.0 if k in ("sequence", "pooled") else v) for k, v in audio.items()}
        assert torch.allclose(model.refine.score_matrix(scaled, text), scores, atol=1e-5)


def test_text_embedding_fallback():
    model = create_model("robust-atr", **SMALL)
    with torch.no_grad():
        text = model.encode_text({"text_embedding": torch.randn(3, 384)})
        assert text["embedding"].shape == (3, 32) and text["sequence"].shape == (3, 1, 32)
        audio = model.encode_audio(_clips(2, seed=7))
        assert model.similarity(audio, text).shape == (2, 3)
    with pytest.raises(KeyError):
        model.encode_text({})


def test_config_errors():
    with pytest.raises(ConfigError, match="w_con"):
        create_model("robust-atr", w_con=0.0)
    with pytest.raises(ConfigError, match="similarity"):
        create_model("robust-atr", similarity="maxsim")
    with pytest.raises(ConfigError, match="refine_dim"):
        create_model("robust-atr", refine_dim=30, refine_heads=4)
    with pytest.raises(ConfigError, match="unknown"):
        create_model("robust-atr", w_l2=1.0)
