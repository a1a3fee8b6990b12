"""Contracts every alignment method keeps, tested once over all methods (issue 13).

* every contrastive term reads the batch's ``groups``: rows of one group are positives of each other
  (ids all distinct = the plain diagonal), while the non-contrastive terms ignore them;
* HADE, MGA-CLAP and Robust-ATR keep a switchable residual path from the frozen encoders' pooled
  vectors (``audio_embedding`` / ``text_embedding``) to their global embedding.
"""

from __future__ import annotations

import pytest
import torch

from sonalign.models import create_model

#: small configs, and the loss terms that are contrastive (the others must ignore ``groups``)
METHODS = {
    "clap-baseline": (dict(embed_dim=16), {"infonce"}),
    "hilbert": (dict(embed_dim=16, pool_hidden=8, segment_heads=2, cross_heads=2, pool_heads=2, num_classes=3), {"reciprocal_audio", "reciprocal_text", "direct"}),
    "robust-atr": (dict(embed_dim=16, pool_hidden=8, transformer_heads=2, transformer_ff=32, refine_heads=2, refine_dim=8), {"flat_con", "refined_con"}),
    "hade": (dict(dim=16, embed_dim=16, num_heads=2, ff_mult=2, num_factors=2, factor_dim=4), {"sequence", "token", "block", "factor"}),
    "mga-clap": (dict(dim=16, embed_dim=16, num_codes=16, num_heads=2, ff_mult=2), {"contrastive", "contrastive_shared"}),
    "calm": (dict(n_mels=32, patch_time=4, patch_mel=16, dim=16, embed_dim=16, spectran_layers=1, mm_layers=1, num_heads=2, ff_mult=2, num_classes=3),
             {"calp"}),
}
RESIDUAL_METHODS = ["hade", "mga-clap", "robust-atr"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _seq(n: int, length: int, dim: int, g: torch.Generator, min_len: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.randint(min_len, length + 1, (n,), generator=g)
    return torch.randn(n, length, dim, generator=g), torch.arange(length)[None] < lengths[:, None]


def full_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every batch key of ``models/base.py`` (masks with padding), so any method finds what it reads."""
    g = torch.Generator().manual_seed(seed)
    b: dict[str, torch.Tensor] = {}
    b["audio_segments"], b["audio_segments_mask"] = _seq(n, 5, 512, g, 1)
    b["audio_frames"], b["audio_frames_mask"] = _seq(n, 10, 512, g)
    b["audio_frames_block2"], b["audio_frames_block3"] = torch.randn(n, 10, 128, generator=g), torch.randn(n, 10, 256, generator=g)
    b["audio_mel"], b["audio_mel_mask"] = _seq(n, 16, 32, g, 8)
    b["text_tokens"], b["text_tokens_mask"] = _seq(n, 6, 384, g)
    b["text_tokens_layer2"], b["text_tokens_layer4"] = torch.randn(n, 6, 384, generator=g), torch.randn(n, 6, 384, generator=g)
    b["text_segments"], b["text_segments_mask"] = _seq(n, 3, 384, g, 1)
    b["audio_embedding"] = b["audio_frames"].masked_fill(~b["audio_frames_mask"][..., None], -1e9).amax(1)
    b["text_embedding"] = (b["text_tokens"] * b["text_tokens_mask"][..., None]).sum(1) / b["text_tokens_mask"].sum(1, keepdim=True)
    b["labels"] = torch.arange(n) % 3
    b["text_from_label"] = torch.zeros(n, dtype=torch.bool)
    return b


def _model(method: str, **overrides):
    torch.manual_seed(0)
    return create_model(method, **{**METHODS[method][0], **overrides}).eval()


@pytest.mark.parametrize("method", list(METHODS))
def test_every_contrastive_term_uses_the_positive_groups(method):
    model = _model(method)
    contrastive = METHODS[method][1]
    batch = full_batch()
    with torch.no_grad():
        plain = model(batch)["losses"]
        distinct = model({**batch, "groups": torch.arange(8)})["losses"]
        grouped = model({**batch, "groups": torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])})["losses"]
    assert contrastive <= set(plain), sorted(plain)
    for name, value in plain.items():
        assert torch.allclose(distinct[name], value, atol=1e-6), name  # distinct ids = the diagonal
        if name in contrastive:
            assert not torch.allclose(grouped[name], value, atol=1e-4), f"{name} ignores groups"
        else:
            assert torch.allclose(grouped[name], value, atol=1e-6), f"{name} is not contrastive but reads groups"


@pytest.mark.parametrize("method", RESIDUAL_METHODS)
def test_pooled_residual_path_is_switchable(method):
    on, off = _model(method), _model(method, pooled_residual=False)
    assert {"audio_embedding", "text_embedding"} <= set(on.required_inputs)
    assert not {"audio_embedding", "text_embedding"} & set(off.required_inputs)
    batch = full_batch()
    moved = {**batch, "audio_embedding": batch["audio_embedding"] + 1.0, "text_embedding": -batch["text_embedding"]}
    with torch.no_grad():
        for model, reads in ((on, True), (off, False)):
            a, a2 = model.encode_audio(batch)["embedding"], model.encode_audio(moved)["embedding"]
            t, t2 = model.encode_text(batch)["embedding"], model.encode_text(moved)["embedding"]
            assert (not torch.allclose(a, a2, atol=1e-4)) == reads and (not torch.allclose(t, t2, atol=1e-4)) == reads
    on.train()
    on(batch)["loss"].backward()
    grads = [p.grad for n, p in on.named_parameters() if n.startswith("residual.")]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    # at initialisation the global embedding is the baseline's head on the pooled vector (the gate is 0):
    # frames, chunks and tokens can be anything
    fresh = _model(method)
    assert all(gate.alpha.item() == 0.0 for gate in fresh.residual.values())
    noise = {k: (torch.randn_like(v) if v.is_floating_point() and k not in ("audio_embedding", "text_embedding") else v) for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(fresh.encode_audio(batch)["embedding"], fresh.encode_audio(noise)["embedding"], atol=1e-6)
        assert torch.allclose(fresh.encode_text(batch)["embedding"], fresh.encode_text(noise)["embedding"], atol=1e-6)


@pytest.mark.parametrize("method", RESIDUAL_METHODS)
def test_pooled_residual_learns_what_the_frozen_pooling_already_knows(method):
    """Pairs that only the frozen pooled vectors tell apart (frames, chunks and tokens are noise): with the
    residual a short training retrieves new pairs with the flat (index) embeddings, the learned pooling
    alone cannot (it can only memorise the training pairs)."""
    data = full_batch(48, seed=3)
    g = torch.Generator().manual_seed(4)
    latent = torch.randn(48, 6, generator=g)  # low-dimensional: 32 training pairs determine the maps
    data["audio_embedding"] = latent @ torch.randn(6, 512, generator=g)
    data["text_embedding"] = latent @ torch.randn(6, 384, generator=g)
    train = {k: v[:32] for k, v in data.items()}
    test = {k: v[32:] for k, v in data.items()}

    def recall_at_1(**overrides) -> float:
        model = _model(method, dropout=0.0, **overrides).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(40):
            loss = model(train)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            sim = model.encode_audio(test)["embedding"] @ model.encode_text(test)["embedding"].T
        return (sim.argmax(1) == torch.arange(16)).float().mean().item()

    assert recall_at_1() >= 0.75
    assert recall_at_1(pooled_residual=False) <= 0.3  # chance 1/16


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_mistyped_or_mistyped_value_key_fails_for_every_method(method):
    from sonalign.errors import ConfigError
    from sonalign.models import list_models

    assert set(METHODS) == set(list_models())
    with pytest.raises(ConfigError, match="unknown config keys \\['embed_dimm'\\]"):
        create_model(method, embed_dimm=8)
    with pytest.raises(ConfigError, match="'dropout' must be float"):
        create_model(method, dropout="high")
    with pytest.raises(ConfigError, match="unknown config keys"):
        create_model(method, weights={"no_such_term": 1.0}) if method in ("hade", "calm") else create_model(method, no_such_key=1)
    model = create_model(method, **METHODS[method][0])
    assert set(model.config) - {"method", "name", "description", "features"} == set(type(model).defaults)  # every key declared, with its default
