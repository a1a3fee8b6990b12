"""CALM: SpecTran from scratch, CALP contrastive alignment, multimodal transformer, emotion head
(its contract, gradients, padding, saving: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch

from model_checks import padded, recall_at_1, train_briefly
from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.calm import CALM

SMALL = dict(n_mels=32, patch_time=4, patch_mel=16, dim=32, embed_dim=16, spectran_layers=1, mm_layers=1, num_heads=2, ff_mult=2, num_classes=5)


def _model(**overrides) -> CALM:
    torch.manual_seed(0)
    return create_model("calm", **{**SMALL, **overrides})


def random_batch(n: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel, mel_mask = padded(n, 18, 32, g, 5, short_first=True)
    tokens, tokens_mask = padded(n, 7, 384, g, 2, short_first=True)
    text = torch.randn(n, 384, generator=g)
    labels = torch.randint(0, 5, (n,), generator=g)
    return {"audio_mel": mel, "audio_mel_mask": mel_mask, "text_tokens": tokens, "text_tokens_mask": tokens_mask, "text_embedding": text, "labels": labels}


def paired_set(n: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    """Log-mel frames from a per-clip latent; text = a fixed random linear map of the clip's mean frame + noise; label from the latent."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, 32, generator=g)
    mel = z + 0.5 * torch.randn(n, 16, 32, generator=g)
    mel_mask = torch.arange(16)[None, :] < torch.randint(8, 17, (n, 1), generator=g)
    mean = (mel * mel_mask[..., None]).sum(1) / mel_mask.sum(1, keepdim=True)
    mapping = torch.randn(32, 384, generator=g) / 32**0.5
    text = mean @ mapping
    tokens = text[:, None, :] + 0.5 * torch.randn(n, 5, 384, generator=g)
    return {
        "audio_mel": mel,
        "audio_mel_mask": mel_mask,
        "text_embedding": text + 0.3 * torch.randn(n, 384, generator=g),
        "text_tokens": tokens,
        "text_tokens_mask": torch.arange(5)[None, :] < torch.randint(2, 6, (n, 1), generator=g),
        "labels": z[:, 0, :5].argmax(-1),
    }


def test_registered_config_has_the_papers_defaults():
    """(Class, eval mode, ``required_inputs``: test_model_contract.py.)"""
    model = create_model("calm")
    assert model.optional_inputs == ("labels", "groups", "text_from_label") and model.probe_output == "calm_embedding"
    assert model.spectran.n_mels == 64 and model.classifier[-1].out_features == 7
    with pytest.raises(ConfigError):
        create_model("calm", weights={"clap": 1.0})


def test_short_training_aligns_and_teaches_the_head_from_audio():
    model = _model(dropout=0.0)
    data = paired_set()
    initial, final = train_briefly(model, data, 30)
    with torch.no_grad():
        sim = model.similarity(model.encode_audio(data), model.encode_text(data))
        accuracy = (model.classify(data).argmax(-1) == data["labels"]).float().mean()
    assert final["loss"] < 0.7 * initial["loss"], (initial, final)
    # the head learns from audio alone (the label is in the clip's latent), more slowly than from text
    assert final["calp"] < 0.5 * initial["calp"] and final["classification"] < 0.7 * initial["classification"]
    assert recall_at_1(sim) >= 0.8 and accuracy >= 0.75, accuracy


def test_audio_only_encoding_and_classification():
    model = _model().eval()
    batch = random_batch()
    audio_only = {"audio_mel": batch["audio_mel"], "audio_mel_mask": batch["audio_mel_mask"]}
    with torch.no_grad():
        encoded = model.encode_audio(audio_only)
        logits_audio = model.classify(audio_only)
        logits_both = model.classify(batch)
        text = model.encode_text({"text_embedding": batch["text_embedding"]})
    assert encoded["calm_embedding"].shape == (8, 32) and logits_audio.shape == logits_both.shape == (8, 5)
    assert torch.equal(logits_audio, logits_both)  # the head reads audio only, whatever text the batch holds
    assert text["embedding"].shape == encoded["embedding"].shape and model.similarity(encoded, text).shape == (8, 8)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"use_multimodal": False}, {"calp", "classification"}),
        ({"use_classifier": False}, {"calp", "masked"}),
        ({"weights": {"masked": 0.0, "calp": 0.0}}, {"classification"}),
    ],
)
def test_ablations(overrides, expected):
    model = _model(**overrides).train()
    out = model(random_batch())
    assert set(out["losses"]) == expected and torch.isfinite(out["loss"])
    out["loss"].backward()
    if overrides.get("use_classifier") is False:
        with pytest.raises(RuntimeError):
            model.classify(random_batch())
    else:
        assert model.classify(random_batch()).shape == (8, 5)


# ------------------------------------------------------------------ issue 13 item 1
def _prompted(n: int, seed: int, classes: int = 5) -> dict[str, torch.Tensor]:
    """Audio that carries no class information (independent noise) and, as its caption, the label's
    prompt (one fixed token sequence per class): what a label-only data set gives CALM."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    prompts = torch.randn(classes, 4, 384, generator=torch.Generator().manual_seed(123))
    mel = torch.randn(n, 16, 32, generator=g)
    return {
        "audio_mel": mel,
        "audio_mel_mask": torch.ones(n, 16, dtype=torch.bool),
        "text_tokens": prompts[labels],
        "text_tokens_mask": torch.ones(n, 4, dtype=torch.bool),
        "text_embedding": prompts[labels].mean(1),
        "labels": labels,
    }


def test_emotion_head_cannot_read_the_label_prompt():
    """A head trained with label prompts as captions must not beat chance on new clips whose audio
    carries no class information, even when the batch holds their own prompts."""
    model = _model(dropout=0.0, weights={"calp": 0.0, "masked": 0.0, "classification": 1.0})
    train, test = _prompted(40, seed=1), _prompted(40, seed=2)
    train_briefly(model, train, 25, lr=3e-3)
    with torch.no_grad():
        accuracy = (model.classify(test).argmax(-1) == test["labels"]).float().mean().item()
    assert accuracy <= 0.45, accuracy  # chance 0.2; a head reading the prompt scores ~1


def test_emotion_head_output_and_gradient_ignore_the_text():
    model = _model().eval()
    batch = _prompted(10, seed=3)
    other = {**batch, "text_tokens": batch["text_tokens"].roll(1, 0), "text_embedding": batch["text_embedding"].roll(1, 0)}
    with torch.no_grad():
        assert torch.equal(model.classify(batch), model.classify(other))  # another class's prompt changes nothing
    model.train()
    tokens = batch["text_tokens"].clone().requires_grad_(True)
    out = model({**batch, "text_tokens": tokens})
    (grad,) = torch.autograd.grad(out["losses"]["classification"], tokens, allow_unused=True)
    assert grad is None or float(grad.abs().max()) == 0.0


def test_label_prompts_get_no_lexical_tokens():
    """Rows whose text was rendered from the label (``text_from_label``) give the multimodal transformer
    no lexical tokens: the masked modelling loss is then independent of those texts."""
    model = _model().eval()
    batch = {**_prompted(6, seed=4), "text_from_label": torch.ones(6, dtype=torch.bool)}
    other = {**batch, "text_tokens": torch.randn(6, 4, 384)}
    with torch.no_grad():
        assert torch.equal(model(batch)["losses"]["masked"], model(other)["losses"]["masked"])
        real = {**batch, "text_from_label": torch.zeros(6, dtype=torch.bool)}
        assert not torch.equal(model(real)["losses"]["masked"], model({**other, "text_from_label": real["text_from_label"]})["losses"]["masked"])
