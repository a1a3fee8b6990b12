"""HILBERT: contract, loss wiring, gradients, long masked documents, ablations, synthetic training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.hilbert import Hilbert
from sonalign.models.losses.cka import linear_cka
from sonalign.models.losses.info_balance import info_balance_loss
from sonalign.models.losses.infonce import info_nce

SMALL = dict(embed_dim=32, pool_hidden=16, segment_heads=2, cross_heads=2, pool_heads=2)

STEPS = 30  # enough: the synthetic pairs are easy, and the test must stay fast


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to oversubscribed CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _documents(n: int, s_audio: int = 12, s_text: int = 5, seed: int = 0, noise: float = 0.5) -> dict[str, torch.Tensor]:
    """Paired documents: each text segment = fixed random linear map of the document's mean audio
    segment + noise; random lengths (>= 1) with garbage in the padded positions."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 1, 16, generator=g)
    audio = latent @ torch.randn(16, 512, generator=g) + noise * torch.randn(n, s_audio, 512, generator=g)
    a_len = torch.randint(1, s_audio + 1, (n, 1), generator=g)
    a_mask = torch.arange(s_audio)[None] < a_len
    mean_audio = (audio * a_mask[..., None]).sum(1, keepdim=True) / a_len[..., None]
    mapping = torch.randn(512, 384, generator=g) / 512**0.5
    text = mean_audio @ mapping + noise * torch.randn(n, s_text, 384, generator=g)
    t_mask = torch.arange(s_text)[None] < torch.randint(1, s_text + 1, (n, 1), generator=g)
    garbage = lambda x, m: torch.where(m[..., None], x, 30 * torch.randn(x.shape, generator=g))  # noqa: E731
    return {
        "audio_segments": garbage(audio, a_mask),
        "audio_segments_mask": a_mask,
        "text_segments": garbage(text, t_mask),
        "text_segments_mask": t_mask,
    }


def _rows(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def _scramble_pads(batch: dict[str, torch.Tensor], seed: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    for key in ("audio_segments", "text_segments", "text_tokens"):
        if key in batch:
            m = batch[f"{key}_mask"][..., None]
            out[key] = torch.where(m, batch[key], 100 * torch.randn(batch[key].shape, generator=g))
    return out


def _assert_all_grads(model: torch.nn.Module, skip: tuple[str, ...] = ("classifier.",)) -> None:
    """Every trainable parameter has a finite gradient (the classifier head only learns from labelled
    batches: ``test_document_classifier_*`` checks it)."""
    for name, p in model.named_parameters():
        if p.requires_grad and not name.startswith(skip):
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


def test_registry_contract_and_default_config():
    model = create_model("hilbert")
    assert isinstance(model, Hilbert) and not model.training
    assert model.required_inputs == ("audio_segments", "text_segments")
    out = model(_documents(8))
    for side in ("audio", "text"):
        emb = out[side]["embedding"]
        assert emb.shape == (8, 256)
        assert torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert set(out["losses"]) == {"reciprocal_audio", "reciprocal_text", "direct", "cka", "info_balance", "attn_penalty"}
    assert torch.isfinite(out["loss"])


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


def test_every_parameter_gets_a_finite_gradient():
    model = create_model("hilbert").train()
    model(_documents(8))["loss"].backward()
    _assert_all_grads(model)


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
        assert torch.equal(ref, model.encode_audio(_scramble_pads(batch))["embedding"])
        # position matters: a 128-segment document differs from its first 64 segments
        cut = dict(batch, audio_segments_mask=batch["audio_segments_mask"].clone())
        cut["audio_segments_mask"][0, 64:] = False
        assert not torch.allclose(ref[0], model.encode_audio(cut)["embedding"][0], atol=1e-4)


def test_padded_values_do_not_change_outputs():
    model = create_model("hilbert", **SMALL)
    batch = _documents(8, seed=4)
    scrambled = _scramble_pads(batch)
    with torch.no_grad():
        out, out2 = model(batch), model(scrambled)
        for side in ("audio", "text"):
            assert torch.allclose(out[side]["embedding"], out2[side]["embedding"], atol=1e-6)
        assert out["loss"].item() == pytest.approx(out2["loss"].item(), abs=1e-5)
        j1 = model.joint(out["audio"], out["text"])["embedding"]
        j2 = model.joint(out2["audio"], out2["text"])["embedding"]
        assert torch.allclose(j1, j2, atol=1e-6)
        # ...while valid values do change them
        changed = dict(batch, audio_segments=batch["audio_segments"] + 1.0)
        assert not torch.allclose(model.encode_audio(changed)["embedding"], out["audio"]["embedding"], atol=1e-4)


def test_eval_is_deterministic():
    model = create_model("hilbert", **SMALL)
    batch = _documents(8, seed=5)
    with torch.no_grad():
        assert torch.equal(model(batch)["loss"], model(batch)["loss"])
        assert torch.equal(model.encode_text(batch)["embedding"], model.encode_text(batch)["embedding"])


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


def test_short_training_lowers_loss_and_retrieves():
    torch.manual_seed(0)
    data = _documents(32, seed=8)
    model = create_model("hilbert", **SMALL)
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
        loss = model(_rows(data, torch.randperm(32, generator=g)[:8]))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = eval_loss()
    assert final < 0.7 * initial, (initial, final)
    with torch.no_grad():
        sim = model.similarity(model.encode_audio(data), model.encode_text(data))
    r1 = (sim.argmax(dim=1) == torch.arange(32)).float().mean().item()
    assert r1 > 0.25, r1  # chance is 1/32


def test_run_directory_round_trip(tmp_path):
    model = create_model("hilbert", **SMALL)
    (tmp_path / "config.json").write_text(json.dumps(model.config))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    loaded = create_model(tmp_path)
    batch = _documents(4, seed=9)
    with torch.no_grad():
        assert torch.equal(model(batch)["loss"], loaded(batch)["loss"])


def test_works_with_the_shared_encode_helpers():
    """Encode outputs of batches with different segment counts concatenate (train.encode pads dim 1)."""
    import numpy as np

    from sonalign.batches import encode_audio_items

    model = create_model("hilbert", **SMALL)
    g = np.random.default_rng(0)
    items = [{"embedding": g.standard_normal((n, 512)).astype(np.float32)} for n in (2, 7, 3, 5, 1)]
    audio = encode_audio_items(model, items, batch_size=2)
    together = encode_audio_items(model, items, batch_size=8)
    assert torch.allclose(audio["embedding"], together["embedding"], atol=1e-5)
    assert audio["attention"].shape == (5, 7, 2)  # (B, S, r): sequence axis on dim 1


def test_extra_padding_does_not_change_outputs():
    """Padded positions must be excluded (not merely zeroed): more padding gives the same outputs."""
    model = create_model("hilbert", **SMALL)
    batch = _documents(6, seed=11)
    longer = dict(batch)
    for key in ("audio_segments", "text_segments"):
        x, m = batch[key], batch[f"{key}_mask"]
        longer[key] = torch.cat([x, torch.randn(x.shape[0], 9, x.shape[2])], dim=1)
        longer[f"{key}_mask"] = torch.cat([m, torch.zeros(m.shape[0], 9, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        out, out2 = model(batch), model(longer)
        for side in ("audio", "text"):
            assert torch.allclose(out[side]["embedding"], out2[side]["embedding"], atol=1e-5)
        assert out["loss"].item() == pytest.approx(out2["loss"].item(), abs=1e-4)


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
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(40):
        idx = torch.randperm(48, generator=torch.Generator().manual_seed(step))[:16]
        loss = model(_rows(train, idx))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model.classify({k: v for k, v in test.items() if k.startswith("audio_")}).argmax(1)
    assert (pred == test["labels"]).float().mean().item() >= 0.75  # chance 0.25
