"""HADE: hierarchical (token/block/sequence) alignment with confidence-weighted disentangled factors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.hade import HADE
from model_checks import params_without_finite_grad, train_briefly


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster (and far more predictably on a shared 2-core box) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = dict(dim=32, embed_dim=16, num_blocks=3, block_levels=[0, 1], num_heads=2, ff_mult=2, num_factors=4, factor_dim=8)


def _model(**overrides) -> HADE:
    torch.manual_seed(0)
    return opened(create_model("hade", **{**SMALL, **overrides}))


def opened(model):
    """Open the pooled-residual gates (0 at initialisation, i.e. the learned branch switched off), as
    training does, so these tests exercise the method's own pooling inside the global embedding."""
    for gate in getattr(model, "residual", None).values() if getattr(model, "residual", None) is not None else ():
        gate.alpha.data.fill_(1.0)
    return model


def _padded(n: int, t: int, d: int, min_len: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, t, d, generator=g)
    lengths = torch.randint(min_len, t + 1, (n,), generator=g)
    lengths[0] = min_len  # at least one clearly padded row
    return x, torch.arange(t)[None, :] < lengths[:, None]


AUDIO_LEVELS = {"audio_frames_block2": 128, "audio_frames_block3": 256}
TEXT_LEVELS = ("text_tokens_layer2", "text_tokens_layer4")


def with_levels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a ``with_levels`` cache gives: intermediate encoder levels on the same frames / tokens (here
    fixed random maps of the final features) and the frozen pooled vectors (max over frames, mean over tokens)."""
    g = torch.Generator().manual_seed(1234)
    out = dict(batch)
    frames, tokens = batch["audio_frames"], batch["text_tokens"]
    fm = batch.get("audio_frames_mask", torch.ones(frames.shape[:2], dtype=torch.bool))
    tm = batch.get("text_tokens_mask", torch.ones(tokens.shape[:2], dtype=torch.bool))
    for key, dim in AUDIO_LEVELS.items():
        out[key] = torch.tanh(frames @ (torch.randn(512, dim, generator=g) / 512**0.5))
    for key in TEXT_LEVELS:
        out[key] = torch.tanh(tokens @ (torch.randn(384, 384, generator=g) / 384**0.5))
    out["audio_embedding"] = frames.masked_fill(~fm[..., None], float("-inf")).amax(1)
    out["text_embedding"] = (tokens * tm[..., None]).sum(1) / tm.sum(1, keepdim=True)
    return out


def random_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames, frames_mask = _padded(n, 14, 512, 4, g)
    tokens, tokens_mask = _padded(n, 7, 384, 2, g)
    return with_levels({"audio_frames": frames, "audio_frames_mask": frames_mask, "text_tokens": tokens, "text_tokens_mask": tokens_mask})


def paired_set(n: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    """Audio frames from a per-clip latent; text tokens = a fixed random linear map of the clip's mean frame + noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, 512, generator=g)
    frames = z + 0.5 * torch.randn(n, 12, 512, generator=g)
    frames_mask = torch.arange(12)[None, :] < torch.randint(6, 13, (n, 1), generator=g)
    mapping = torch.randn(512, 384, generator=g) / 512**0.5
    mean = (frames * frames_mask[..., None]).sum(1) / frames_mask.sum(1, keepdim=True)
    tokens = (mean @ mapping)[:, None, :] + 0.5 * torch.randn(n, 6, 384, generator=g)
    tokens_mask = torch.arange(6)[None, :] < torch.randint(3, 7, (n, 1), generator=g)
    return with_levels({"audio_frames": frames, "audio_frames_mask": frames_mask, "text_tokens": tokens, "text_tokens_mask": tokens_mask})


def test_registry_builds_hade_in_eval_mode():
    model = create_model("hade")
    assert isinstance(model, HADE) and not model.training
    assert model.required_inputs == ("audio_frames", "text_tokens", *AUDIO_LEVELS, *TEXT_LEVELS, "audio_embedding", "text_embedding")
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


def test_forward_gives_finite_losses_and_unit_embeddings():
    model = _model().train()
    out = model(random_batch())
    assert set(out["losses"]) == {"sequence", "token", "block", "factor", "disentangle"}
    assert torch.isfinite(out["loss"]) and all(torch.isfinite(v) for v in out["losses"].values())
    for side in ("audio", "text"):
        emb = out[side]["embedding"]
        assert emb.shape == (8, 16 + 4 * 8)
        assert torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-5)
        assert torch.allclose(out[side]["confidence"].sum(-1), torch.ones(8), atol=1e-5)


def test_every_trainable_parameter_gets_a_finite_gradient():
    assert params_without_finite_grad(_model(), random_batch()) == []


def test_short_training_lowers_the_loss():
    model = _model(dropout=0.0)
    data = paired_set()
    initial, final = train_briefly(model, data, 10)
    with torch.no_grad():
        sim = model.similarity(model.encode_audio(data), model.encode_text(data))
    assert final < 0.7 * initial, (initial, final)
    assert (sim.argmax(1) == torch.arange(16)).float().mean() >= 0.9


def test_padded_positions_do_not_change_outputs():
    model = _model().eval()
    batch = random_batch()
    poisoned = {k: v.clone() for k, v in batch.items()}
    for key in ("audio_frames", *AUDIO_LEVELS):
        poisoned[key][~batch["audio_frames_mask"]] = 1e3
    for key in ("text_tokens", *TEXT_LEVELS):
        poisoned[key][~batch["text_tokens_mask"]] = -1e3
    with torch.no_grad():
        a, t = model.encode_audio(batch), model.encode_text(batch)
        a2, t2 = model.encode_audio(poisoned), model.encode_text(poisoned)
    for key in ("embedding", "seq", "factors", "confidence", "tokens", "block0"):
        assert torch.allclose(a[key], a2[key], atol=1e-5) and torch.allclose(t[key], t2[key], atol=1e-5), key
    # and the mask is used: treating padding as valid changes the embedding
    unmasked = {**poisoned, "audio_frames_mask": torch.ones_like(batch["audio_frames_mask"])}
    with torch.no_grad():
        assert not torch.allclose(model.encode_audio(unmasked)["embedding"], a["embedding"], atol=1e-3)


def test_padded_row_equals_the_unpadded_sequence_alone():
    model = _model().eval()
    batch = random_batch()
    n_a, n_t = int(batch["audio_frames_mask"][0].sum()), int(batch["text_tokens_mask"][0].sum())
    alone = {k: v[:1, :n_a] for k, v in batch.items() if k.startswith("audio_frames") and k != "audio_frames_mask"}
    alone.update({k: v[:1, :n_t] for k, v in batch.items() if k.startswith("text_tokens") and k != "text_tokens_mask"})
    alone.update(audio_embedding=batch["audio_embedding"][:1], text_embedding=batch["text_embedding"][:1])
    with torch.no_grad():
        a, t = model.encode_audio(batch), model.encode_audio(alone)  # t: the lone clip's outputs
        assert torch.allclose(model.encode_text(batch)["embedding"][:1], model.encode_text(alone)["embedding"], atol=1e-5)
    for key in ("embedding", "seq", "tokens"):
        ref = a[key][:1, :n_a] if a[key].dim() == 3 else a[key][:1]  # per-frame outputs: valid frames only
        assert torch.allclose(ref, t[key], atol=1e-5), key


def test_eval_is_deterministic():
    model = _model().eval()
    batch = random_batch()
    with torch.no_grad():
        first, second = model(batch), model(batch)
    assert torch.equal(first["loss"], second["loss"])
    assert torch.equal(first["audio"]["embedding"], second["audio"]["embedding"])


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
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
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
