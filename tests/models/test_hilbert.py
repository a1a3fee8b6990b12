"""HILBERT: loss wiring, long masked documents, ablations, text inputs, the document classifier
(its contract, gradients, training, padding, saving: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch

from model_checks import params_without_finite_grad, scramble_pads, segment_pairs, train_briefly
from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.losses.cka import linear_cka
from sonalign.models.losses.info_balance import info_balance_loss
from sonalign.models.losses.infonce import info_nce

SMALL = dict(embed_dim=32, pool_hidden=16, segment_heads=2, cross_heads=2, pool_heads=2)


def _documents(n: int, s_audio: int = 12, s_text: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Paired documents: audio segments and text segments (sentences), see ``segment_pairs``."""
    return segment_pairs(n, s_audio, s_text, seed=seed)


def _assert_all_grads(model: torch.nn.Module, skip: tuple[str, ...] = ("classifier.",)) -> None:
    """Every trainable parameter has a finite gradient (the classifier head only learns from labelled
    batches: ``test_document_classifier_*`` checks it)."""
    assert params_without_finite_grad(model, skip=skip) == []


def test_loss_terms_are_wired_as_documented():
    model = create_model("hilbert", **SMALL)
    batch = _documents(8)
    with torch.no_grad():
        out = model(batch)
        a, t = out["audio"]["embedding"], out["text"]["embedding"]
        j = model.joint(out["audio"], out["text"])["embedding"]
        l = out["losses"]
        assert l["reciprocal_audio"].item() == pytest.approx(info_nce(a, j, model.reciprocal.audio_joint.logit_scale).item(), rel=1e-5)
        assert l["reciprocal_text"].item() == pytest.approx(info_nce(t, j, model.reciprocal.text_joint.logit_scale).item(), rel=1e-5)
        cka = 0.5 * ((1 - linear_cka(a, j)) + (1 - linear_cka(t, j)))
        assert l["cka"].item() == pytest.approx(0.1 * cka.item(), rel=1e-5)
        assert l["info_balance"].item() == pytest.approx(0.1 * info_balance_loss(a, t, j, 0.1).item(), rel=1e-5, abs=1e-9)
        assert torch.allclose(model.similarity(out["audio"], out["text"]), a @ t.T)


@pytest.mark.parametrize(
    "overrides,expected_terms",
    [
        (dict(use_cross_attention=False), {"reciprocal_audio", "reciprocal_text", "direct", "cka", "info_balance", "attn_penalty"}),
        (dict(use_segment_transformer=False, attn_penalty_weight=0.0), {"reciprocal_audio", "reciprocal_text", "direct", "cka", "info_balance"}),
        (dict(use_cka=False, use_info_balance=False, pool_heads=1, direct_weight=0.0), {"reciprocal_audio", "reciprocal_text"}),
        (dict(use_joint=False, use_info_balance=False, cka_pairs="audio_text"), {"contrastive", "cka", "attn_penalty"}),
        (
            dict(direct_weight=0.5, cka_pairs="audio_text"),
            {"reciprocal_audio", "reciprocal_text", "direct", "cka", "info_balance", "attn_penalty"},
        ),
    ],
)
def test_ablation_switches(overrides: dict, expected_terms: set):
    model = create_model("hilbert", **{**SMALL, **overrides}).train()
    out = model(_documents(8))
    assert set(out["losses"]) == expected_terms
    out["loss"].backward()
    _assert_all_grads(model)


def test_long_documents_128_segments_with_padding():
    model = create_model("hilbert", **SMALL).train()
    batch = _documents(8, s_audio=128, s_text=40, seed=3)
    batch["audio_segments_mask"][0] = True  # one full-length document, the others padded
    batch["audio_segments_mask"][1, 1:] = False  # and a one-segment one
    out = model(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    _assert_all_grads(model)
    model.eval()
    with torch.no_grad():
        ref = model.encode_audio(batch)["embedding"]
        assert torch.equal(ref, model.encode_audio(scramble_pads(batch))["embedding"])
        # position matters: a 128-segment document differs from its first 64 segments
        cut = dict(batch, audio_segments_mask=batch["audio_segments_mask"].clone())
        cut["audio_segments_mask"][0, 64:] = False
        assert not torch.allclose(ref[0], model.encode_audio(cut)["embedding"][0], atol=1e-4)


def test_joint_embedding_ignores_padded_values():
    """(Padding and the audio / text embeddings, the loss: test_model_contract.py.)"""
    model = create_model("hilbert", **SMALL)
    batch = _documents(8, seed=4)
    with torch.no_grad():
        out, out2 = model(batch), model(scramble_pads(batch))
        j1 = model.joint(out["audio"], out["text"])["embedding"]
        j2 = model.joint(out2["audio"], out2["text"])["embedding"]
        assert torch.allclose(j1, j2, atol=1e-6)


def test_text_input_choice_and_fallbacks():
    batch = _documents(4, seed=6)
    tokens_model = create_model("hilbert", text_input="text_tokens", **SMALL)
    assert tokens_model.required_inputs == ("audio_segments", "text_tokens")
    tokens = {"text_tokens": batch["text_segments"], "text_tokens_mask": batch["text_segments_mask"]}
    with torch.no_grad():
        via_tokens = tokens_model.encode_text(tokens)["embedding"]
        via_segments = tokens_model.encode_text(batch)["embedding"]  # falls back to text_segments
        assert torch.allclose(via_tokens, via_segments)
        only_pooled = tokens_model.encode_text({"text_embedding": torch.randn(4, 384)})["embedding"]
        assert only_pooled.shape == (4, 32)
    with pytest.raises(KeyError):
        tokens_model.encode_text({})


def test_config_errors():
    with pytest.raises(ConfigError, match="use_info_balance"):
        create_model("hilbert", use_joint=False)
    with pytest.raises(ConfigError, match="cka_pairs"):
        create_model("hilbert", use_joint=False, use_info_balance=False)
    with pytest.raises(ConfigError, match="cka_pairs"):
        create_model("hilbert", cka_pairs="joint")
    with pytest.raises(ConfigError, match="text_input"):
        create_model("hilbert", text_input="captions")
    with pytest.raises(ConfigError, match="unknown"):
        create_model("hilbert", use_ckaa=True)


def test_attention_weights_are_batch_by_segment_by_head():
    """(B, S, r): the sequence axis on dim 1, where ``sonalign.batches`` pads encode outputs of batches of
    different segment counts (test_model_contract.py checks that they concatenate)."""
    model = create_model("hilbert", **SMALL)
    with torch.no_grad():
        assert model.encode_audio(_documents(5, s_audio=7))["attention"].shape == (5, 7, 2)


# ------------------------------------------------------------------ issue 13 item 2
def test_default_objective_trains_the_similarity_retrieval_scores():
    """The paper's terms tie audio->joint and text->joint only; retrieval scores cos(audio, text), so
    the default config must train exactly that cosine (the ``direct`` term), with positive groups."""
    model = create_model("hilbert", **SMALL)
    assert model.config["direct_weight"] > 0 and "direct" in model.config["description"]
    batch = dict(_documents(8, seed=12), groups=torch.tensor([0, 0, 1, 2, 2, 2, 3, 4]))
    with torch.no_grad():
        out = model(batch)
        a, t = out["audio"]["embedding"], out["text"]["embedding"]
        expected = model.config["direct_weight"] * info_nce(a, t, model.reciprocal.audio_text.logit_scale, groups=batch["groups"])
        assert out["losses"]["direct"].item() == pytest.approx(expected.item(), rel=1e-5)
        assert torch.allclose(model.similarity(out["audio"], out["text"]), a @ t.T)


def _labelled(n: int, seed: int, classes: int = 4, audio_informative: bool = True) -> dict[str, torch.Tensor]:
    """Documents whose class is written in the audio (a class direction added to every segment), or
    not (``audio_informative=False``); labels, and texts that are real (``text_from_label`` False)."""
    g = torch.Generator().manual_seed(seed)
    batch = _documents(n, seed=seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    if audio_informative:
        directions = 3 * torch.randn(classes, 512, generator=torch.Generator().manual_seed(99))
        batch["audio_segments"] = batch["audio_segments"] + directions[labels][:, None, :]
    return {**batch, "labels": labels, "text_from_label": torch.zeros(n, dtype=torch.bool)}


def test_document_classifier_reads_audio_text_and_joint():
    model = create_model("hilbert", **SMALL, num_classes=4).train()
    batch = _labelled(8, seed=13)
    out = model(batch)
    assert "classification" in out["losses"] and torch.isfinite(out["losses"]["classification"])
    out["loss"].backward()
    _assert_all_grads(model, skip=())  # every expert (audio, text, joint) and the gate learn from real texts
    experts = model.classifier.experts
    assert all(float(e[-1].weight.grad.abs().sum()) > 0 for e in experts)
    model.eval()
    with torch.no_grad():
        audio_only = {k: v for k, v in batch.items() if k.startswith("audio_")}
        assert model.classify(audio_only).shape == (8, 4)
        assert not torch.allclose(model.classify(audio_only), model.classify(batch))  # real text does enter


def test_document_classifier_never_reads_label_prompts():
    """A text rendered from the row's label must not reach the head: neither its logits nor its gradient."""
    model = create_model("hilbert", **SMALL, num_classes=4).eval()
    batch = {**_labelled(8, seed=14), "text_from_label": torch.ones(8, dtype=torch.bool)}
    swapped = {**batch, "text_segments": batch["text_segments"].flip(0), "text_segments_mask": batch["text_segments_mask"].flip(0)}
    with torch.no_grad():
        assert torch.equal(model.classify(batch), model.classify(swapped))
        assert torch.equal(model.classify(batch), model.classify({k: v for k, v in batch.items() if k.startswith("audio_")}))
    model.train()
    text = batch["text_segments"].clone().requires_grad_(True)
    out = model({**batch, "text_segments": text, "groups": torch.arange(8)})
    (grad,) = torch.autograd.grad(out["losses"]["classification"], text, allow_unused=True)
    assert grad is None or float(grad.abs().max()) == 0.0


def test_document_classifier_learns_from_audio():
    torch.manual_seed(0)
    model = create_model("hilbert", **SMALL, num_classes=4)
    train, test = _labelled(48, seed=15), _labelled(32, seed=16)
    train_briefly(model, train, 40, lr=2e-3, batch_size=16)
    with torch.no_grad():
        pred = model.classify({k: v for k, v in test.items() if k.startswith("audio_")}).argmax(1)
    assert (pred == test["labels"]).float().mean().item() >= 0.75  # chance 0.25
