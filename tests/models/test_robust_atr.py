"""Robust-ATR: contract, hybrid-loss wiring, pairwise refined similarity, masks, small-batch training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.losses.hybrid import contrastive_from_scores
from sonalign.models.robust_atr import RobustATR

SMALL = dict(embed_dim=32, pool_hidden=16, transformer_heads=2, transformer_ff=64, refine_heads=2, refine_dim=16)
STEPS = 30  # enough: the synthetic pairs are easy, and the test must stay fast
FLAT_TERMS = {"flat_cos", "flat_l1", "flat_con"}
REFINED_TERMS = {"refined_cos", "refined_l1", "refined_con"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to oversubscribed CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clips(n: int, chunks: int = 10, tokens: int = 8, seed: int = 0, noise: float = 0.5) -> dict[str, torch.Tensor]:
    """Paired long clips: chunk embeddings share a clip latent (plus per-chunk noise); each caption
    token = fixed random linear map of the clip's mean chunk + noise. Garbage in padded positions."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 1, 16, generator=g)
    audio = latent @ torch.randn(16, 512, generator=g) + noise * torch.randn(n, chunks, 512, generator=g)
    a_len = torch.randint(1, chunks + 1, (n, 1), generator=g)
    a_mask = torch.arange(chunks)[None] < a_len
    mean_audio = (audio * a_mask[..., None]).sum(1, keepdim=True) / a_len[..., None]
    text = mean_audio @ (torch.randn(512, 384, generator=g) / 512**0.5) + noise * torch.randn(n, tokens, 384, generator=g)
    t_mask = torch.arange(tokens)[None] < torch.randint(1, tokens + 1, (n, 1), generator=g)
    garbage = lambda x, m: torch.where(m[..., None], x, 30 * torch.randn(x.shape, generator=g))  # noqa: E731
    mean = lambda x, m: (x * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # noqa: E731  (the frozen pooled vectors)
    return {
        "audio_segments": garbage(audio, a_mask),
        "audio_segments_mask": a_mask,
        "text_tokens": garbage(text, t_mask),
        "text_tokens_mask": t_mask,
        "audio_embedding": mean(audio, a_mask),
        "text_embedding": mean(text, t_mask),
    }


def _rows(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def _scramble_pads(batch: dict[str, torch.Tensor], seed: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for key in ("audio_segments", "text_tokens"):
        m = batch[f"{key}_mask"][..., None]
        out[key] = torch.where(m, batch[key], 100 * torch.randn(batch[key].shape, generator=g))
    return out


def _assert_all_grads(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


def test_registry_and_contract():
    model = create_model("robust-atr")
    assert isinstance(model, RobustATR) and not model.training
    assert model.required_inputs == ("audio_segments", "text_tokens", "audio_embedding", "text_embedding")
    assert create_model("robust-atr", pooled_residual=False).required_inputs == ("audio_segments", "text_tokens")
    assert model.config["features"]["segmenter"] == "energy"  # the paper's silence-aware chunks, not fixed windows
    out = model(_clips(8))
    for side in ("audio", "text"):
        assert out[side]["embedding"].shape == (8, 256)
        assert torch.allclose(out[side]["embedding"].norm(dim=-1), torch.ones(8), atol=1e-5)
    assert set(out["losses"]) == FLAT_TERMS | REFINED_TERMS
    assert torch.isfinite(out["loss"])


def test_every_parameter_gets_a_finite_gradient():
    model = create_model("robust-atr").train()
    model(_clips(8))["loss"].backward()
    _assert_all_grads(model)


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


def test_encoders_are_per_item_and_similarity_is_pairwise():
    model = create_model("robust-atr", **SMALL)
    audio_batch, text_batch = _clips(5, seed=2), _clips(7, seed=3)
    with torch.no_grad():
        audio, text = model.encode_audio(audio_batch), model.encode_text(text_batch)
        # an item's embedding does not depend on what else is in the batch (computable alone)
        alone = model.encode_audio(_rows(audio_batch, torch.tensor([3])))
        assert torch.allclose(alone["embedding"][0], audio["embedding"][3], atol=1e-6)
        sim = model.similarity(audio, text)
        assert sim.shape == (5, 7)
        # the (i, j) score needs only audio i and text j
        pair = model.similarity(_rows(audio, torch.tensor([1])), _rows(text, torch.tensor([4])))
        assert pair.item() == pytest.approx(sim[1, 4].item(), abs=1e-6)
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
    _assert_all_grads(plain)


def test_padded_values_do_not_change_outputs():
    model = create_model("robust-atr", **SMALL)
    for gate in model.residual.values():  # open the pooled-residual gates (0 at init): the attentive pooling counts
        gate.alpha.data.fill_(1.0)
    batch = _clips(8, seed=5)
    with torch.no_grad():
        out, out2 = model(batch), model(_scramble_pads(batch))
        for side in ("audio", "text"):
            assert torch.allclose(out[side]["embedding"], out2[side]["embedding"], atol=1e-6)
        assert torch.allclose(model.similarity(out["audio"], out["text"]), model.similarity(out2["audio"], out2["text"]), atol=1e-6)
        assert out["loss"].item() == pytest.approx(out2["loss"].item(), abs=1e-5)
        changed = dict(batch, text_tokens=batch["text_tokens"] + 1.0)
        assert not torch.allclose(model.encode_text(changed)["embedding"], out["text"]["embedding"], atol=1e-4)


def test_eval_is_deterministic():
    model = create_model("robust-atr", **SMALL)
    batch = _clips(8, seed=6)
    with torch.no_grad():
        assert torch.equal(model(batch)["loss"], model(batch)["loss"])
        a, t = model.encode_audio(batch), model.encode_text(batch)
        assert torch.equal(model.similarity(a, t), model.similarity(a, t))


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


def test_small_batch_training_is_stable_lowers_loss_and_retrieves():
    torch.manual_seed(0)
    data = _clips(32, seed=8)
    model = create_model("robust-atr", **SMALL)
    batches = [torch.arange(i, i + 8) for i in range(0, 32, 8)]

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return sum(model(_rows(data, b))["loss"].item() for b in batches) / len(batches)

    initial = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(STEPS):
        loss = model(_rows(data, torch.randperm(32, generator=g)[:8]))["loss"]  # batch size 8
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = eval_loss()
    assert final < 0.7 * initial, (initial, final)
    with torch.no_grad():
        audio, text = model.encode_audio(data), model.encode_text(data)
        refined = model.similarity(audio, text)
        flat = audio["embedding"] @ text["embedding"].T
    for sim in (refined, flat):
        r1 = (sim.argmax(dim=1) == torch.arange(32)).float().mean().item()
        assert r1 > 0.25, r1  # chance is 1/32


def test_run_directory_round_trip(tmp_path):
    model = create_model("robust-atr", **SMALL)
    (tmp_path / "config.json").write_text(json.dumps(model.config))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    loaded = create_model(tmp_path)
    batch = _clips(4, seed=9)
    with torch.no_grad():
        a, t = loaded.encode_audio(batch), loaded.encode_text(batch)
        assert torch.equal(model.similarity(model.encode_audio(batch), model.encode_text(batch)), loaded.similarity(a, t))


def test_works_with_the_shared_encode_and_score_helpers():
    """Encode outputs of batches with different chunk counts concatenate (train.encode pads dim 1)."""
    import numpy as np

    from sonalign.batches import encode_audio_items, score_matrix

    model = create_model("robust-atr", **SMALL)
    g = np.random.default_rng(0)
    items = [{"embedding": g.standard_normal((n, 512)).astype(np.float32)} for n in (2, 7, 3, 5, 1)]
    audio = encode_audio_items(model, items, batch_size=2)  # three batches, padded to 2, 7 and 1 chunks
    together = encode_audio_items(model, items, batch_size=8)
    assert torch.allclose(audio["embedding"], together["embedding"], atol=1e-5)
    with torch.no_grad():
        text = model.encode_text(_clips(4, seed=10))
    scores = score_matrix(model, audio, text, chunk=2)
    with torch.no_grad():
        expected = model.similarity(together, text).numpy()
    assert scores.shape == (5, 4) and np.allclose(scores, expected, atol=1e-5)


def test_extra_padding_does_not_change_outputs():
    """Padded positions must be excluded (not merely zeroed): more padding gives the same outputs."""
    model = create_model("robust-atr", **SMALL)
    batch = _clips(6, seed=11)
    longer = dict(batch)
    for key in ("audio_segments", "text_tokens"):
        x, m = batch[key], batch[f"{key}_mask"]
        longer[key] = torch.cat([x, torch.randn(x.shape[0], 9, x.shape[2])], dim=1)
        longer[f"{key}_mask"] = torch.cat([m, torch.zeros(m.shape[0], 9, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        out, out2 = model(batch), model(longer)
        for side in ("audio", "text"):
            assert torch.allclose(out[side]["embedding"], out2[side]["embedding"], atol=1e-5)
        sim = model.similarity(out["audio"], out["text"])
        assert torch.allclose(sim, model.similarity(out2["audio"], out2["text"]), atol=1e-5)
        assert out["loss"].item() == pytest.approx(out2["loss"].item(), abs=1e-4)
