"""CLAP baseline: contract, gradients, a short synthetic training run, registry, determinism."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sonalign.errors import ConfigError
from sonalign.models import create_model
from sonalign.models.clap_baseline import ClapBaseline
from sonalign.models.losses.infonce import info_nce

STEPS = 30  # enough: the synthetic pairs are easy, and the test must stay fast


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to oversubscribed CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pairs(n: int, seed: int = 0, noise: float = 0.3) -> dict[str, torch.Tensor]:
    """Synthetic paired set: text feature = fixed random linear map of the audio feature + noise."""
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(n, 512, generator=g)
    mapping = torch.randn(512, 384, generator=g) / 512**0.5
    text = audio @ mapping + noise * torch.randn(n, 384, generator=g)
    return {"audio_embedding": audio, "text_embedding": text}


def _rows(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in batch.items()}


def test_registry_and_contract():
    model = create_model("clap-baseline")
    assert isinstance(model, ClapBaseline) and not model.training
    assert model.required_inputs == ("audio_embedding", "text_embedding")
    out = model(_pairs(8))
    assert out["audio"]["embedding"].shape == (8, 256) and out["text"]["embedding"].shape == (8, 256)
    assert torch.allclose(out["audio"]["embedding"].norm(dim=-1), torch.ones(8), atol=1e-5)
    assert torch.allclose(out["text"]["embedding"].norm(dim=-1), torch.ones(8), atol=1e-5)
    assert set(out["losses"]) == {"infonce"} and torch.isfinite(out["loss"])
    # the loss is InfoNCE on the returned embeddings with the model's temperature
    expected = info_nce(out["audio"]["embedding"], out["text"]["embedding"], model.loss_fn.logit_scale)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(model.similarity(out["audio"], out["text"]), out["audio"]["embedding"] @ out["text"]["embedding"].T)


def test_every_parameter_gets_a_finite_gradient():
    model = create_model("clap-baseline").train()
    model(_pairs(8))["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name


def test_short_training_lowers_loss_and_retrieves():
    torch.manual_seed(0)
    data = _pairs(32)
    model = create_model("clap-baseline", embed_dim=64)
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
    assert r1 > 0.25  # chance is 1/32


def test_eval_is_deterministic_and_train_uses_dropout():
    model = create_model("clap-baseline")
    data = _pairs(8)
    with torch.no_grad():
        assert torch.equal(model.encode_audio(data)["embedding"], model.encode_audio(data)["embedding"])
        model.train()
        assert not torch.equal(model.encode_audio(data)["embedding"], model.encode_audio(data)["embedding"])


def test_run_directory_round_trip(tmp_path):
    model = create_model("clap-baseline", embed_dim=32)
    (tmp_path / "config.json").write_text(json.dumps(model.config))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    loaded = create_model(tmp_path)
    data = _pairs(4)
    with torch.no_grad():
        assert torch.equal(model.encode_text(data)["embedding"], loaded.encode_text(data)["embedding"])


def test_unknown_config_key_is_rejected():
    with pytest.raises(ConfigError, match="embed_dims"):
        create_model("clap-baseline", embed_dims=128)
