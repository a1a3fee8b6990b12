"""resolve_device: auto picks CUDA only when torch sees it, $SONALIGN_DEVICE sets the default, clear errors."""

from __future__ import annotations

import pytest
import torch

from sonalign.errors import ConfigError
from sonalign.utils.device import DEVICE_ENV, resolve_device


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)


def _gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


@pytest.mark.parametrize("spec", [None, "auto", " AUTO "])
def test_auto_follows_what_torch_sees(monkeypatch, no_env, spec):
    _gpus(monkeypatch, 0)
    assert resolve_device(spec) == torch.device("cpu")
    _gpus(monkeypatch, 2)
    assert resolve_device(spec) == torch.device("cuda")


def test_environment_sets_the_default_and_an_argument_wins(monkeypatch):
    _gpus(monkeypatch, 1)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch, no_env):
    _gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ConfigError, match="'cuda'"):
        resolve_device()


def test_gpu_index_past_the_visible_gpus(monkeypatch, no_env):
    _gpus(monkeypatch, 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 1 CUDA GPU"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("spec", ["tpu", "gpu0", "mps", "meta"])
def test_unknown_or_unsupported_devices(no_env, spec):
    with pytest.raises(ConfigError, match=spec):
        resolve_device(spec)


def test_to_device_leaves_a_cpu_batch_alone():
    from sonalign.utils.device import to_device

    batch = {"x": torch.ones(2), "mask": torch.ones(2, dtype=torch.bool)}
    assert to_device(batch, torch.device("cpu")) is batch
