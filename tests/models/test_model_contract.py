"""The contract every alignment method keeps (``models/base.py``), tested once over ``list_models()``.

Construction from the registry and from a run directory, the forward / encode / similarity outputs,
gradients, a short training run, masks and padding, determinism, config errors, the shared batching
path, and the issue-13 contracts: every contrastive term reads the batch's ``groups``, and HADE,
MGA-CLAP and Robust-ATR keep a switchable residual path from the frozen encoders' pooled vectors.
What only one method does is tested in its own file (``test_<method>.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from model_checks import (
    SEQUENCES,
    alone,
    cache_items,
    full_batch,
    opened,
    pad_more,
    params_without_finite_grad,
    recall_at_1,
    rows,
    scramble_pads,
    train_briefly,
)
from sonalign.errors import ConfigError
from sonalign.models import create_model, list_models

POOLED = ("audio_embedding", "text_embedding")


@dataclass(frozen=True)
class Method:
    config: dict  #: a small config for fast tests
    cls: str  #: the class the registry builds
    required_inputs: tuple[str, ...]  #: of the registered (default) config
    losses: str  #: loss terms on a labelled batch (diagnostics aside), default and small config alike
    contrastive: str  #: the terms that read ``groups`` (the others must ignore them)
    embed_dims: tuple[int, int]  #: embedding width of the small and of the registered config
    label_terms: str = ""  #: terms only a batch with ``labels`` has
    loss_only_inputs: tuple[str, ...] = ()  #: inputs only the loss reads, not the side's embedding
    raw_outputs: tuple[str, ...] = ()  #: encode outputs that pass an input on as is (padded values too)
    residual: bool = False  #: has the switchable pooled-residual path
    min_recall: float = 0.5  #: R@1 of 32 training pairs after the short training run (chance 1/32)

    def names(self, field: str) -> set[str]:
        """A space-separated field (``losses``, ``contrastive``, ``label_terms``) as a set."""
        return set(getattr(self, field).split())


LEVELS = ("audio_frames_block2", "audio_frames_block3", "text_tokens_layer2", "text_tokens_layer4")
METHODS = {
    "clap-baseline": Method(dict(embed_dim=16), "ClapBaseline", POOLED, "infonce", "infonce", (16, 256), min_recall=0.75),
    "hilbert": Method(
        dict(embed_dim=16, pool_hidden=8, segment_heads=2, cross_heads=2, pool_heads=2, num_classes=3),
        "Hilbert", ("audio_segments", "text_segments"),
        losses="reciprocal_audio reciprocal_text direct cka info_balance attn_penalty classification",
        contrastive="reciprocal_audio reciprocal_text direct",
        embed_dims=(16, 256), label_terms="classification", min_recall=0.65,
    ),
    "robust-atr": Method(
        dict(embed_dim=16, pool_hidden=8, transformer_heads=2, transformer_ff=32, refine_heads=2, refine_dim=8),
        "RobustATR", ("audio_segments", "text_tokens", *POOLED),
        "flat_cos flat_l1 flat_con refined_cos refined_l1 refined_con", "flat_con refined_con", (16, 256), residual=True, min_recall=0.75,
    ),
    "hade": Method(
        dict(dim=16, embed_dim=16, num_heads=2, ff_mult=2, num_factors=2, factor_dim=4), "HADE", ("audio_frames", "text_tokens", *LEVELS, *POOLED),
        "sequence token block factor disentangle", "sequence token block factor", (16 + 2 * 4, 256 + 8 * 32),  # sequence embedding and factors
        residual=True, min_recall=0.7,
    ),
    "mga-clap": Method(
        dict(dim=16, embed_dim=16, num_codes=16, num_heads=2, ff_mult=2), "MGAClap", ("audio_frames", "text_tokens", *POOLED),
        "contrastive contrastive_shared embed_reg", "contrastive contrastive_shared", (16, 256), residual=True, min_recall=0.8,
    ),
    "calm": Method(
        dict(n_mels=32, patch_time=4, patch_mel=16, dim=16, embed_dim=16, spectran_layers=1, mm_layers=1, num_heads=2, ff_mult=2, num_classes=3),
        "CALM", ("audio_mel", "text_embedding", "text_tokens"), "calp masked classification", "calp", (16, 128), label_terms="classification",
        loss_only_inputs=("text_tokens",),  # the multimodal transformer's lexical tokens (masked modelling)
        raw_outputs=("raw_tokens",),
        min_recall=0.35,  # CALM learns its own audio encoder from log-mels: slower (test_calm checks more on its data)
    ),
}
ALL = sorted(METHODS)
RESIDUAL = [m for m in ALL if METHODS[m].residual]


def _model(method: str, **overrides):
    torch.manual_seed(0)
    return create_model(method, **{**METHODS[method].config, **overrides}).eval()


def _terms(losses: dict) -> set[str]:
    return {k for k in losses if not k.startswith("diag_")}


def _outputs_close(x: dict, y: dict, atol: float | None, skip=()) -> list[str]:
    """Keys of the encode outputs ``x`` whose tensors differ from ``y``'s (``atol`` None: not equal to
    the bit); per-position outputs of a shorter ``y`` are compared on its positions."""
    bad = []
    for key, value in x.items():
        if key in skip:
            continue
        other = y[key]
        if value.dim() >= 2 and other.dim() >= 2 and value.shape[1] != other.shape[1]:
            value = value[:, : other.shape[1]]
        same = torch.equal(value, other) if atol is None else value.shape == other.shape and torch.allclose(value.float(), other.float(), atol=atol)
        if not same:
            bad.append(key)
    return bad


def test_every_registered_method_is_described_here():
    assert set(METHODS) == set(list_models())


# ------------------------------------------------------------------ construction and outputs
@pytest.mark.parametrize("method", ALL)
def test_registered_config_builds_in_eval_mode_and_runs(method):
    spec = METHODS[method]
    model = create_model(method)
    assert type(model).__name__ == spec.cls and not model.training
    assert model.required_inputs == spec.required_inputs
    # every key declared, with its default
    assert set(model.config) - {"method", "name", "description", "features"} == set(type(model).defaults)
    batch = full_batch(8, n_mels=model.config.get("n_mels", 32))
    with torch.no_grad():
        out = model(batch)
    assert _terms(out["losses"]) == spec.names("losses") and torch.isfinite(out["loss"])
    for side in ("audio", "text"):
        emb = out[side]["embedding"]
        assert emb.shape == (8, spec.embed_dims[1])
        assert torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-5)


@pytest.mark.parametrize("method", ALL)
def test_a_mistyped_key_or_mistyped_value_fails(method):
    with pytest.raises(ConfigError, match="unknown config keys \\['embed_dimm'\\]"):
        create_model(method, embed_dimm=8)
    with pytest.raises(ConfigError, match="'dropout' must be float"):
        create_model(method, dropout="high")
    with pytest.raises(ConfigError, match="unknown config keys"):
        create_model(method, weights={"no_such_term": 1.0}) if method in ("hade", "calm") else create_model(method, no_such_key=1)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("method", ALL)
def test_forward_returns_the_documented_outputs(method, mode):
    spec = METHODS[method]
    model = _model(method).train(mode == "train")
    batch = full_batch(8)
    out = model(batch)
    assert set(out) == {"audio", "text", "loss", "losses"}
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    assert all(v.shape == () and torch.isfinite(v) for v in out["losses"].values())
    assert _terms(out["losses"]) == spec.names("losses")
    terms = [v for k, v in out["losses"].items() if not k.startswith("diag_")]
    assert torch.allclose(out["loss"], torch.stack(terms).sum())  # diagnostics never enter the loss...
    assert all(not v.requires_grad for k, v in out["losses"].items() if k.startswith("diag_"))  # ...nor its gradient
    unlabelled = {k: v for k, v in batch.items() if k != "labels"}
    assert _terms(model(unlabelled)["losses"]) == spec.names("losses") - spec.names("label_terms")
    for side in ("audio", "text"):
        emb = out[side]["embedding"]
        assert emb.shape == (8, spec.embed_dims[0])
        assert torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert model.probe_output in out["audio"]
    if mode == "eval":
        with torch.no_grad():  # forward's embeddings are the encoders' (up to the rounding of autograd's kernels)
            assert torch.allclose(model.encode_audio(batch)["embedding"], out["audio"]["embedding"], atol=1e-6)
            assert torch.allclose(model.encode_text(batch)["embedding"], out["text"]["embedding"], atol=1e-6)
            if hasattr(model, "classify"):  # a classifier head reads audio-only batches
                audio_only = {k: v for k, v in batch.items() if k.startswith("audio_")}
                assert model.classify(audio_only).shape == (8, model.config["num_classes"])


@pytest.mark.parametrize("method", ALL)
def test_similarity_is_an_audio_by_text_matrix_of_pair_scores(method):
    model = opened(_model(method))
    with torch.no_grad():
        audio, text = model.encode_audio(full_batch(5, seed=2)), model.encode_text(full_batch(7, seed=3))
        sim = model.similarity(audio, text)
        assert sim.shape == (5, 7) and torch.isfinite(sim).all()
        # the (i, j) score needs only audio i and text j
        pair = model.similarity(rows(audio, [1]), rows(text, [4]))
        assert pair.item() == pytest.approx(sim[1, 4].item(), abs=1e-6)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("method", ALL)
def test_every_trainable_parameter_gets_a_finite_gradient(method):
    model = opened(create_model(method))
    assert params_without_finite_grad(model, full_batch(8, n_mels=model.config.get("n_mels", 32))) == []


@pytest.mark.parametrize("method", ALL)
def test_short_small_batch_training_lowers_the_loss_and_retrieves(method):
    """30 steps on random 8-pair batches of 32 synthetic pairs (every loss finite); both the method's
    similarity and the flat (index) embeddings retrieve the training pairs."""
    model = opened(_model(method, dropout=0.0))
    data = full_batch(32, seed=5, signal=2.0)
    fixed = [torch.arange(i, i + 8) for i in range(0, 32, 8)]  # the eval loss: mean over these batches
    initial, final = train_briefly(model, data, 30, batch_size=8, batches=fixed)
    assert final["loss"] < 0.7 * initial["loss"], (initial, final)
    with torch.no_grad():
        audio, text = model.encode_audio(data), model.encode_text(data)
        refined, flat = model.similarity(audio, text), audio["embedding"] @ text["embedding"].T
    for sim in (refined, flat):
        assert recall_at_1(sim) >= METHODS[method].min_recall, recall_at_1(sim)


# ------------------------------------------------------------------ masks and padding
@pytest.mark.parametrize("method", ALL)
def test_padded_positions_are_excluded_not_merely_zeroed(method):
    raw = METHODS[method].raw_outputs
    model = opened(_model(method))
    batch = full_batch(8, seed=4)
    with torch.no_grad():
        out = model(batch)
        sim = model.similarity(out["audio"], out["text"])
        for other in (scramble_pads(batch), pad_more(batch)):  # other values in the padding, more padding
            out2 = model(other)
            for side in ("audio", "text"):
                assert _outputs_close(out2[side], out[side], 1e-5, skip=raw) == [], side
            assert torch.allclose(model.similarity(out2["audio"], out2["text"]), sim, atol=1e-5)
            assert out2["loss"].item() == pytest.approx(out["loss"].item(), abs=1e-4)
            if hasattr(model, "classify"):
                assert torch.allclose(model.classify(other), model.classify(batch), atol=1e-5)
        # each row encodes as it does alone, unpadded and without masks
        for i in range(8):
            lone = alone(batch, i)
            assert _outputs_close(rows(out["audio"], slice(i, i + 1)), model.encode_audio(lone), 1e-5, skip=raw) == [], i
            assert _outputs_close(rows(out["text"], slice(i, i + 1)), model.encode_text(lone), 1e-5, skip=raw) == [], i


@pytest.mark.parametrize("method", ALL)
def test_the_declared_inputs_are_read_and_only_they(method):
    spec = METHODS[method]
    model = opened(_model(method))
    batch = full_batch(8, seed=6)
    scrambled = scramble_pads(batch)
    with torch.no_grad():
        out, out_scrambled = model(batch), model(scrambled)

        def changes(ref: dict, other: dict, key: str, atol: float) -> bool:
            out2 = model(other)
            if key in spec.loss_only_inputs:
                return not torch.allclose(out2["loss"], ref["loss"], atol=atol)
            side = key.split("_")[0]
            return not torch.allclose(out2[side]["embedding"], ref[side]["embedding"], atol=atol)

        for key in model.required_inputs:
            assert changes(out, {**batch, key: batch[key] + 1.0}, key, 1e-4), f"{key} is not read"
            if key in SEQUENCES:  # treating the (scrambled) padding as valid changes the outputs: the mask is used
                mask = SEQUENCES[key]
                assert changes(out_scrambled, {**scrambled, mask: torch.ones_like(batch[mask])}, key, 1e-3), f"{mask} is not used"
        declared = set(model.required_inputs) | set(model.optional_inputs)
        declared |= {SEQUENCES[k] for k in declared if k in SEQUENCES}
        assert torch.equal(model({k: v for k, v in batch.items() if k in declared})["loss"], out["loss"])


@pytest.mark.parametrize("method", ALL)
def test_eval_is_deterministic_and_train_mode_is_not(method):
    model = opened(_model(method))
    batch = full_batch(8, seed=5)
    with torch.no_grad():
        first, second = model(batch), model(batch)
        assert torch.equal(first["loss"], second["loss"])
        assert all(torch.equal(v, second["losses"][k]) for k, v in first["losses"].items())  # masked modelling too
        for side in ("audio", "text"):
            assert _outputs_close(first[side], second[side], None) == [], side
        assert torch.equal(model.similarity(first["audio"], first["text"]), model.similarity(second["audio"], second["text"]))
        model.train()  # dropout
        assert not torch.equal(model.encode_audio(batch)["embedding"], model.encode_audio(batch)["embedding"])
        assert not torch.equal(model.encode_text(batch)["embedding"], model.encode_text(batch)["embedding"])


# ------------------------------------------------------------------ saving and the shared batching path
@pytest.mark.parametrize("method", ALL)
def test_run_directory_round_trip(method, tmp_path):
    model = opened(_model(method))
    (tmp_path / "config.json").write_text(json.dumps(model.config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    torch.manual_seed(1)  # other initial weights: equal outputs need the saved ones
    loaded = create_model(tmp_path)
    assert not loaded.training and loaded.config == model.config
    batch = full_batch(4, seed=9)
    with torch.no_grad():
        out, out2 = model(batch), loaded(batch)
        assert torch.equal(out["loss"], out2["loss"])
        assert torch.equal(out["audio"]["embedding"], out2["audio"]["embedding"]) and torch.equal(out["text"]["embedding"], out2["text"]["embedding"])
        assert torch.equal(model.similarity(out["audio"], out["text"]), loaded.similarity(out2["audio"], out2["text"]))


@pytest.mark.parametrize("method", ALL)
def test_works_with_the_shared_encode_and_score_helpers(method):
    """Encode outputs of batches with different lengths concatenate (``batches`` pads dim 1), and the
    chunked score matrix is the similarity."""
    import numpy as np

    from sonalign.batches import encode_audio_items, score_matrix

    model = opened(_model(method))
    items = cache_items([2, 7, 3, 5, 1])
    audio = encode_audio_items(model, items, batch_size=2)  # three batches, of different lengths
    together = encode_audio_items(model, items, batch_size=8)
    assert {k: v.shape for k, v in audio.items()} == {k: v.shape for k, v in together.items()}
    assert torch.allclose(audio["embedding"], together["embedding"], atol=1e-5)
    with torch.no_grad():
        text = model.encode_text(full_batch(4, seed=10))
        expected = model.similarity(together, text).numpy()
    scores = score_matrix(model, audio, text, chunk=2)
    assert scores.shape == (5, 4) and np.allclose(scores, expected, atol=1e-5)


# ------------------------------------------------------------------ issue 13: positive groups, pooled residual
@pytest.mark.parametrize("method", ALL)
def test_every_contrastive_term_uses_the_positive_groups(method):
    model = _model(method)
    contrastive = METHODS[method].names("contrastive")
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


@pytest.mark.parametrize("method", RESIDUAL)
def test_pooled_residual_path_is_switchable(method):
    on, off = _model(method), _model(method, pooled_residual=False)
    assert set(POOLED) <= set(on.required_inputs)
    assert off.required_inputs == tuple(k for k in on.required_inputs if k not in POOLED)
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
    noise = {k: (torch.randn_like(v) if v.is_floating_point() and k not in POOLED else v) for k, v in batch.items()}
    with torch.no_grad():
        assert torch.allclose(fresh.encode_audio(batch)["embedding"], fresh.encode_audio(noise)["embedding"], atol=1e-6)
        assert torch.allclose(fresh.encode_text(batch)["embedding"], fresh.encode_text(noise)["embedding"], atol=1e-6)


@pytest.mark.parametrize("method", RESIDUAL)
def test_pooled_residual_learns_what_the_frozen_pooling_already_knows(method):
    """Pairs that only the frozen pooled vectors tell apart (frames, chunks and tokens are noise): with the
    residual a short training retrieves new pairs with the flat (index) embeddings, the learned pooling
    alone cannot (it can only memorise the training pairs)."""
    data = full_batch(48, seed=3)
    g = torch.Generator().manual_seed(4)
    latent = torch.randn(48, 6, generator=g)  # low-dimensional: 32 training pairs determine the maps
    data["audio_embedding"] = latent @ torch.randn(6, 512, generator=g)
    data["text_embedding"] = latent @ torch.randn(6, 384, generator=g)
    train, test = rows(data, slice(0, 32)), rows(data, slice(32, 48))

    def recall(**overrides) -> float:
        model = _model(method, dropout=0.0, **overrides)
        train_briefly(model, train, 40, lr=3e-3)
        with torch.no_grad():
            return recall_at_1(model.encode_audio(test)["embedding"] @ model.encode_text(test)["embedding"].T)

    assert recall() >= 0.75
    assert recall(pooled_residual=False) <= 0.3  # chance 1/16
