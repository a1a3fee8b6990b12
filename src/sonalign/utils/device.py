"""Which torch device the frozen encoders and the trainer run on.

``auto`` (the default) is the first CUDA GPU when this torch build sees one, else the CPU. The
``SONALIGN_DEVICE`` environment variable sets the process default (``sonalign --device`` sets it,
so worker processes and ``torchrun`` children inherit it); an explicit ``device=`` argument wins.
"""

from __future__ import annotations

import os

import torch

from sonalign.errors import ConfigError

DEVICE_ENV = "SONALIGN_DEVICE"
AUTO = "auto"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> ``$SONALIGN_DEVICE`` -> ``auto``; ``auto`` -> ``cuda`` if available else ``cpu``.

    Raises :class:`ConfigError` for a device name torch does not know, or for CUDA when this
    torch cannot use it (a CPU build, no driver, or an index past the GPUs present).
    """
    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = (device or os.environ.get(DEVICE_ENV) or AUTO).strip().lower()
    if spec == AUTO:
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device '{spec}' is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' asked for, but this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{spec}' asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    elif dev.type != "cpu":
        raise ConfigError(f"device '{spec}' is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of named tensors on ``device`` (the same dict, untouched, on the CPU)."""
    return tensors if device.type == "cpu" else {k: v.to(device, non_blocking=True) for k, v in tensors.items()}
