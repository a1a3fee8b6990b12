"""MGA-CLAP: shared codebook, locality-aware block, hard-negative loss, frame-level grounding scores."""

from __future__ import annotations

import pytest
import torch

from sonalign.models import create_model
from sonalign.models.mga_clap import MGAClap
from model_checks import params_without_finite_grad, train_briefly


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster (and far more predictably on a shared 2-core box) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(dim=32, embed_dim=16, num_codes=32, num_heads=2, ff_mult=2, audio_layers=1, text_layers=1)


def _model(**overrides) -> MGAClap:
    torch.manual_seed(0)
    return opened(create_model("mga-clap", **{**SMALL, **overrides}))


def opened(model):
    """Open the pooled-residual gates (0 at initialisation, i.e. the learned branch switched off), as
    training does, so these tests exercise the method's own pooling inside the global embedding."""
    for gate in getattr(model, "residual", None).values() if getattr(model, "residual", None) is not None else ():
        gate.alpha.data.fill_(1.0)
    return model


def _padded(n: int, t: int, d: int, min_len: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, t, d, generator=g)
    lengths = torch.randint(min_len, t + 1, (n,), generator=g)
    lengths[0] = min_len
    return x, torch.arange(t)[None, :] < lengths[:, None]


def with_pooled(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the frozen encoders' pooled vectors, as the cache gives them: max over valid frames (aisfx),
    mean over valid tokens (MiniLM)."""
    fm = batch.get("audio_frames_mask", torch.ones(batch["audio_frames"].shape[:2], dtype=torch.bool))
    tm = batch.get("text_tokens_mask", torch.ones(batch["text_tokens"].shape[:2], dtype=torch.bool))
    audio = batch["audio_frames"].masked_fill(~fm[..., None], float("-inf")).amax(1)
    text = (batch["text_tokens"] * tm[..., None]).sum(1) / tm.sum(1, keepdim=True)
    return {**batch, "audio_embedding": audio, "text_embedding": text}


def random_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames, frames_mask = _padded(n, 14, 512, 4, g)
    tokens, tokens_mask = _padded(n, 7, 384, 2, g)
    return with_pooled({"audio_frames": frames, "audio_frames_mask": frames_mask, "text_tokens": tokens, "text_tokens_mask": tokens_mask})


def paired_set(n: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    """Audio frames from a per-clip latent; text tokens = a fixed random linear map of the clip's mean frame + noise."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(n, 1, 512, generator=g) + 0.5 * torch.randn(n, 12, 512, generator=g)
    frames_mask = torch.arange(12)[None, :] < torch.randint(6, 13, (n, 1), generator=g)
    mapping = torch.randn(512, 384, generator=g) / 512**0.5
    mean = (frames * frames_mask[..., None]).sum(1) / frames_mask.sum(1, keepdim=True)
    tokens = (mean @ mapping)[:, None, :] + 0.5 * torch.randn(n, 6, 384, generator=g)
    tokens_mask = torch.arange(6)[None, :] < torch.randint(3, 7, (n, 1), generator=g)
    return with_pooled({"audio_frames": frames, "audio_frames_mask": frames_mask, "text_tokens": tokens, "text_tokens_mask": tokens_mask})


def test_registry_builds_mga_clap():
    model = create_model("mga-clap")
    assert isinstance(model, MGAClap) and not model.training
    assert model.required_inputs == ("audio_frames", "text_tokens", "audio_embedding", "text_embedding")
    assert create_model("mga-clap", pooled_residual=False).required_inputs == ("audio_frames", "text_tokens")
    assert model.contrastive.beta == pytest.approx(0.15)


def test_forward_finite_loss_and_sparse_code_weights():
    model = _model().train()
    out = model(random_batch())
    assert {"contrastive", "embed_reg"} <= set(out["losses"]) and torch.isfinite(out["loss"])
    for side in ("audio", "text"):
        assert torch.allclose(out[side]["embedding"].norm(dim=-1), torch.ones(8), atol=1e-5)
        w = out[side]["code_weights"]
        assert w.shape == (8, 32) and (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(8), atol=1e-5)
    # sparsemax at a low temperature: most codewords get exactly zero weight
    sharp = _model(codebook_temperature=0.05).eval()
    with torch.no_grad():
        assert ((sharp.encode_audio(random_batch())["code_weights"] == 0).float().mean() > 0.5)


def test_every_trainable_parameter_gets_a_finite_gradient():
    assert params_without_finite_grad(_model(), random_batch()) == []


def test_short_training_lowers_the_loss():
    model = _model(dropout=0.0)
    data = paired_set()
    initial, final = train_briefly(model, data, 25)
    with torch.no_grad():
        sim = model.similarity(model.encode_audio(data), model.encode_text(data))
    assert final < 0.7 * initial, (initial, final)
    assert (sim.argmax(1) == torch.arange(16)).float().mean() >= 0.9


def test_padded_positions_do_not_change_outputs():
    model = _model().eval()
    batch = random_batch()
    poisoned = {k: v.clone() for k, v in batch.items()}
    poisoned["audio_frames"][~batch["audio_frames_mask"]] = 1e3
    poisoned["text_tokens"][~batch["text_tokens_mask"]] = -1e3
    with torch.no_grad():
        a, t = model.encode_audio(batch), model.encode_text(batch)
        a2, t2 = model.encode_audio(poisoned), model.encode_text(poisoned)
        assert torch.allclose(a["embedding"], a2["embedding"], atol=1e-5) and torch.allclose(a["frames"], a2["frames"], atol=1e-5)
        assert torch.allclose(t["embedding"], t2["embedding"], atol=1e-5)
        unmasked = {**poisoned, "text_tokens_mask": torch.ones_like(batch["text_tokens_mask"])}
        assert not torch.allclose(model.encode_text(unmasked)["embedding"], t["embedding"], atol=1e-3)


def test_padded_row_equals_the_unpadded_sequence_alone():
    model = _model().eval()
    batch = random_batch()
    n_a, n_t = int(batch["audio_frames_mask"][0].sum()), int(batch["text_tokens_mask"][0].sum())
    alone = with_pooled({"audio_frames": batch["audio_frames"][:1, :n_a], "text_tokens": batch["text_tokens"][:1, :n_t]})
    with torch.no_grad():
        a, t = model.encode_audio(batch), model.encode_audio(alone)  # t: the lone clip's outputs
        assert torch.allclose(model.encode_text(batch)["embedding"][:1], model.encode_text(alone)["embedding"], atol=1e-5)
    for key in ("embedding", "frames"):
        ref = a[key][:1, :n_a] if a[key].dim() == 3 else a[key][:1]  # per-frame outputs: valid frames only
        assert torch.allclose(ref, t[key], atol=1e-5), key


def test_eval_is_deterministic():
    model = _model().eval()
    batch = random_batch()
    with torch.no_grad():
        first, second = model(batch), model(batch)
    assert torch.equal(first["loss"], second["loss"]) and torch.equal(first["text"]["embedding"], second["text"]["embedding"])


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
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
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
