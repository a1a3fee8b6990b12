"""MGA-CLAP: shared codebook, locality-aware block, hard-negative loss, frame-level grounding scores
(its contract, gradients, training, padding, saving: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch

from model_checks import frames_and_tokens, opened, params_without_finite_grad, with_pooled
from sonalign.models import create_model
from sonalign.models.mga_clap import MGAClap

SMALL = dict(dim=32, embed_dim=16, num_codes=32, num_heads=2, ff_mult=2, audio_layers=1, text_layers=1)


def _model(**overrides) -> MGAClap:
    torch.manual_seed(0)
    return opened(create_model("mga-clap", **{**SMALL, **overrides}))


def random_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    return frames_and_tokens(n, seed)


def test_registered_config_uses_the_papers_hard_negative_weight():
    """(Class, eval mode, ``required_inputs`` with and without the pooled residual: test_model_contract.py.)"""
    model = create_model("mga-clap")
    assert model.contrastive.beta == pytest.approx(0.15)


def test_code_weights_are_sparse_distributions_over_the_codebook():
    """(Loss terms, embedding norms: test_model_contract.py.)"""
    model = _model().train()
    out = model(random_batch())
    for side in ("audio", "text"):
        w = out[side]["code_weights"]
        assert w.shape == (8, 32) and (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(8), atol=1e-5)
    # sparsemax at a low temperature: most codewords get exactly zero weight
    sharp = _model(codebook_temperature=0.05).eval()
    with torch.no_grad():
        assert ((sharp.encode_audio(random_batch())["code_weights"] == 0).float().mean() > 0.5)


def test_frame_scores_one_value_per_valid_frame():
    model = _model().eval()
    audio_batch, text_batch = random_batch(4), random_batch(3, seed=5)
    with torch.no_grad():
        audio, text = model.encode_audio(audio_batch), model.encode_text(text_batch)
        scores = model.frame_scores(audio, text)
        raw = model.frame_scores(audio_batch, text_batch)  # raw batches are encoded on the fly
    assert scores.shape == (4, 3, 14) and torch.allclose(raw, scores, equal_nan=True)
    valid = audio_batch["audio_frames_mask"]
    for i in range(4):
        n = int(valid[i].sum())
        assert torch.isfinite(scores[i, :, :n]).all() and (scores[i, :, n:] == float("-inf")).all()
        assert (scores[i, :, :n].abs() <= 1 + 1e-5).all()
    # a frame's score is the cosine between that frame's embedding and the text's global codebook embedding
    expected = audio["frames"][1, 2] @ text["shared_embedding"][0]
    assert scores[1, 0, 2].item() == pytest.approx(expected.item(), abs=1e-6)


def _grounding_batch(n: int, g: torch.Generator, protos: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
    """T=12 frames of noise with a 3-frame event of one of 4 classes; caption = filler tokens + the class word."""
    proto_a, proto_t, filler = protos
    cls = torch.randint(0, 4, (n,), generator=g)
    start = torch.randint(0, 9, (n,), generator=g)
    frames = torch.randn(n, 12, 512, generator=g)
    event = torch.zeros(n, 12, dtype=torch.bool)
    for i in range(n):
        event[i, start[i] : start[i] + 3] = True
    frames = frames + 2.0 * event[..., None] * proto_a[cls][:, None, :]
    tokens = filler.expand(n, 4, 384).clone() + 0.3 * torch.randn(n, 4, 384, generator=g)
    tokens[torch.arange(n), torch.randint(0, 4, (n,), generator=g)] += 2.0 * proto_t[cls]
    batch = with_pooled({"audio_frames": frames, "text_tokens": tokens})
    return batch, event


def test_planted_event_frames_score_highest_after_training():
    g = torch.Generator().manual_seed(3)
    protos = (torch.randn(4, 512, generator=g), torch.randn(4, 384, generator=g), torch.randn(4, 384, generator=g))
    model = _model(dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(25):
        batch, _ = _grounding_batch(16, g, protos)
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    batch, event = _grounding_batch(24, torch.Generator().manual_seed(99), protos)
    with torch.no_grad():
        scores = model.frame_scores(batch, batch)[torch.arange(24), torch.arange(24)]  # own caption, (24, T)
    hit = event[torch.arange(24), scores.argmax(-1)].float().mean()
    assert hit >= 0.8, hit
    assert scores[event].mean() > scores[~event].mean() + 0.2


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_codebook": False},
        {"use_locality_block": False},
        {"locality_mode": "window", "locality_window": 1},
        {"sparsify": "topk", "top_k": 4},
        {"sparsify": "softmax", "hard_negative_beta": 0.0},
        {"text_layers": 0},
    ],
)
def test_ablations_run_and_train(overrides):
    model = _model(**overrides).train()
    out = model(random_batch())
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert params_without_finite_grad(model) == []
    if overrides.get("use_codebook") is False:
        assert "code_weights" not in out["audio"]


# ------------------------------------------------------------------ issue 13 item 5
def test_embedding_regulariser_follows_the_reference_code():
    """``mean|E| / ||E||_F`` on each side's batch of normalised global embeddings, added to the loss."""
    model = _model(embed_reg_weight=0.5).eval()
    with torch.no_grad():
        out = model(random_batch())
    reg = lambda e: e.abs().mean() / torch.sqrt((e**2).sum())  # noqa: E731  (ASE.forward of github.com/Ming-er/MGA-CLAP)
    expected = reg(out["audio"]["embedding"]) + reg(out["text"]["embedding"])
    assert out["losses"]["embed_reg"].item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert out["losses"]["diag_embed_reg"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert "embed_reg" not in _model(embed_reg_weight=0.0)(random_batch())["losses"]


def test_codebook_presets_and_diagnostics_are_logged_not_trained():
    reference = create_model("mga-clap", codebook_preset="reference")
    assert (reference.config["num_codes"], reference.config["codebook_temperature"]) == (4096, 1000.0)
    default = create_model("mga-clap")
    assert default.config["codebook_preset"] == "small-data" and default.codebook.codes.shape[0] < 4096
    assert create_model("mga-clap", codebook_preset="small-data", num_codes=64).codebook.codes.shape[0] == 64  # explicit keys win
    model = _model().train()
    out = model(random_batch())
    diag = {k for k in out["losses"] if k.startswith("diag_")}
    assert diag == {"diag_codebook_support_audio", "diag_codebook_support_text", "diag_embed_reg", "diag_audio_mean_cosine"}
    terms = [v for k, v in out["losses"].items() if not k.startswith("diag_")]
    assert torch.allclose(out["loss"], torch.stack(terms).sum())  # diagnostics never enter the loss
    assert all(not out["losses"][k].requires_grad for k in diag)
    support = out["losses"]["diag_codebook_support_audio"].item()
    assert support == pytest.approx((out["audio"]["code_weights"] > 0).sum(-1).float().mean().item())


def test_small_data_preset_is_sparse_where_the_old_default_was_dense():
    """At the sizes of real features (embed 256), the small-data preset starts with a sparse support
    without collapsing onto one code; the earlier default (1024 codes, temperature 100) kept every code."""
    batch = random_batch(16)
    full = dict(dim=256, embed_dim=256, num_heads=4, ff_mult=2)
    with torch.no_grad():
        torch.manual_seed(0)
        old = create_model("mga-clap", **full, num_codes=1024, codebook_temperature=100.0).eval()
        torch.manual_seed(0)
        new = create_model("mga-clap", **full).eval()
        old_support = (old.encode_audio(batch)["code_weights"] > 0).sum(-1).float().mean().item()
        new_w = new.encode_audio(batch)["code_weights"]
    new_support = (new_w > 0).sum(-1).float().mean().item()
    assert old_support > 0.9 * 1024
    assert 2 <= new_support <= 0.25 * new_w.shape[1]
