"""The aisfx network (Ma & Lerch, ISMIR 2022): its checkpoint, the reference ``EmbeddingNet``, and ``FusedTrunk``, the same function with batch norm folded for fast inference (see :mod:`sonalign.encoders.aisfx_cnn`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sonalign.errors import ConfigError
from sonalign.utils.paths import package_file

SAMPLE_RATE = 44100
N_FFT = 2048
WIN_LENGTH = 2048
HOP_LENGTH = 1024
N_MELS = 96
F_MIN, F_MAX = 0.0, 22050.0
MEL_NORM = 1.0
SPEC_MIN, SPEC_MAX = 0.0, 9.457798957824707
WINDOW_FRAMES = 100  # spectrogram frames per model window
FRAMES_PER_WINDOW = 12  # output frames per window (100 -> 50 -> 25 -> 12 by the pools)
SPEC_FRAMES_PER_FRAME = 8  # spectrogram frames per output frame (three 2x pools)
WINDOW_SECONDS = WINDOW_FRAMES * HOP_LENGTH / SAMPLE_RATE  # 2.3219954...
EMBED_DIM = 512
#: Intermediate levels available with ``encode(..., levels=True)``: name -> width.
LEVEL_DIMS = {"block2": 128, "block3": 256}
_IMPL_VERSION = 2  # 2: partial last window run at its real length
# Spectrogram frames computed per STFT call for long segments (bounds STFT memory to ~40 MB).
_STFT_CHUNK_FRAMES = 50 * WINDOW_FRAMES


def checkpoint_path() -> Path:
    """The checkpoint shipped inside the installed ``aisfx`` package (found without importing it)."""
    return package_file("aisfx", "models/checkpoint.pth", "the aisfx-cnn audio encoder")


def checkpoint_safe_globals() -> list[Any]:
    """The minimal allow-list for ``torch.load(weights_only=True)`` of the aisfx checkpoint.

    The pickle is ``(state_dict, ds_dict)`` where ``ds_dict`` maps dataset names to
    ``(numpy.int64 index, n_classes)``. Numpy scalars pickle as
    ``numpy.core.multiarray.scalar(dtype, bytes)`` (numpy 2 renamed the module to ``numpy._core``,
    so the function is registered under the name the pickle uses), and the dtype is rebuilt with
    ``numpy.dtype`` and then its state set, which the unpickler only allows on allow-listed
    classes: ``numpy.dtypes.Int64DType`` (``type(np.dtype(np.int64))``).
    """
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    return [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]


def load_embedding_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """``embedding_net.*`` weights of the checkpoint (prefix stripped), loaded with ``weights_only=True``."""
    path = Path(path) if path is not None else checkpoint_path()
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj[0] if isinstance(obj, (tuple, list)) else obj
    prefix = "embedding_net."
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise ConfigError(f"{path}: no 'embedding_net.*' weights in the checkpoint")
    return out


class ConvBlock(nn.Module):
    """Two 3x3 conv + BN + ReLU, then pooling (same parameter names as aisfx's ``ConvBlock``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, kernel_size=pool) if pool > 1 else x


class EmbeddingNet(nn.Module):
    """aisfx's ``EmbeddingNet('max', ks=3, strd=1, hl1=64)``: channels 64, 128, 256, 512."""

    def __init__(self, hl1: int = 64):
        super().__init__()
        self.conv_block1 = ConvBlock(1, hl1)
        self.conv_block2 = ConvBlock(hl1, hl1 * 2)
        self.conv_block3 = ConvBlock(hl1 * 2, hl1 * 4)
        self.conv_block4 = ConvBlock(hl1 * 4, hl1 * 8)

    def frames(self, spec: torch.Tensor) -> torch.Tensor:
        """``(N, time, mel)`` -> ``(N, 512, time // 8)``: the trunk after the mean over frequency."""
        x = spec.unsqueeze(1)
        x = self.conv_block1(x, 2)
        x = self.conv_block2(x, 2)
        x = self.conv_block3(x, 2)
        x = self.conv_block4(x, 1)
        return x.mean(dim=3)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """The original window embedding: max over time of :meth:`frames`."""
        return self.frames(spec).amax(dim=2)


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused.eval()


class FusedTrunk(nn.Module):
    """The same function as :meth:`EmbeddingNet.frames`, BN folded, for fast inference."""

    POOLS = (2, 2, 2, 1)

    def __init__(self, net: EmbeddingNet, backend: str = "auto"):
        super().__init__()
        convs = []
        for block in (net.conv_block1, net.conv_block2, net.conv_block3, net.conv_block4):
            convs += [_fold_bn(block.conv1, block.bn1), _fold_bn(block.conv2, block.bn2)]
        self.convs = nn.ModuleList(convs).eval()
        if backend == "auto":  # measured fastest on AVX2 CPUs; "mkldnn" uses a deprecated torch API
            backend = "channels_last"
        if backend == "mkldnn":
            try:
                from torch.utils import mkldnn as mkldnn_utils

                self.convs = mkldnn_utils.to_mkldnn(self.convs)
                with torch.inference_mode():
                    self._forward_mkldnn(torch.zeros(1, WINDOW_FRAMES, N_MELS))
            except Exception:  # oneDNN missing or refusing: fall back, same function
                self.convs = nn.ModuleList(convs).eval()
                backend = "channels_last"
        if backend == "channels_last":
            self.convs = self.convs.to(memory_format=torch.channels_last)
        elif backend not in ("mkldnn", "dense"):
            raise ValueError(f"unknown backend {backend!r}")
        self.backend = backend

    @staticmethod
    def _level(x: torch.Tensor, block: int) -> torch.Tensor:
        """Block ``block``'s pooled output on the final frame grid: ``(N, C, time // 8)``."""
        if block == 1:  # conv block 2 (0-based 1): time // 4 -> one more 2x pool in time
            x = F.max_pool2d(x, kernel_size=(2, 1))
        return x.mean(dim=3).contiguous()

    def _forward_mkldnn(self, spec: torch.Tensor, levels: bool = False):
        x = spec.unsqueeze(1).to_mkldnn()
        inner = []
        for b, pool in enumerate(self.POOLS):
            x = F.relu(self.convs[2 * b](x))
            x = F.relu(self.convs[2 * b + 1](x))
            if pool > 1:
                x = F.max_pool2d(x, pool)
            if levels and b in (1, 2):
                inner.append(self._level(x.to_dense(), b))
        out = x.to_dense().mean(dim=3)
        return (out, inner) if levels else out

    def forward(self, spec: torch.Tensor, levels: bool = False):
        """``(N, time, mel)`` -> frames ``(N, 512, time // 8)``; with ``levels`` also
        ``[block 2 (N, 128, time // 8), block 3 (N, 256, time // 8)]``."""
        if self.backend == "mkldnn":
            return self._forward_mkldnn(spec, levels)
        x = spec.unsqueeze(1)
        if self.backend == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        inner = []
        for b, pool in enumerate(self.POOLS):
            x = F.relu_(self.convs[2 * b](x))
            x = F.relu_(self.convs[2 * b + 1](x))
            if pool > 1:
                x = F.max_pool2d(x, pool)
            if levels and b in (1, 2):
                inner.append(self._level(x, b))
        out = x.mean(dim=3).contiguous()
        return (out, inner) if levels else out
