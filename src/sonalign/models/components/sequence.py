"""Encoder for a padded sequence of frozen-encoder features (segments, chunks or tokens).

input projection -> (+ sinusoidal positions) -> optional Transformer encoder (Vaswani et al. 2017),
with the key-padding mask. Padded inputs are zeroed first, so their values never reach any valid
position, and an all-padding row is given one (zero) valid key so attention stays finite.
Used by HILBERT (segment transformer) and Robust-ATR (transformer projection).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sonalign.models.components.pooling import ensure_nonempty
from sonalign.models.components.projection import Projection


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed sin/cos position table of Vaswani et al. 2017, shape (length, dim); any length."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.to(dtype)


def full_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``mask`` as bool, or all-True (B, S) when absent."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.to(torch.bool)


class SequenceEncoder(nn.Module):
    """``(B, S, in_dim)`` + mask -> ``(B, S, dim)`` contextualised features and the (non-empty) mask.

    ``projection="clap"`` uses the CLAP projection head, ``"linear"`` a single linear map.
    ``layers=0`` skips the Transformer (ablation); positions are then not added either.
    """

    def __init__(
        self,
        in_dim: int,
        dim: int,
        layers: int = 1,
        heads: int = 4,
        ff_dim: int | None = None,
        dropout: float = 0.1,
        projection: str = "clap",
        positional: bool = True,
    ):
        super().__init__()
        if projection == "clap":
            self.proj: nn.Module = Projection(in_dim, dim, dropout)
        elif projection == "linear":
            self.proj = nn.Linear(in_dim, dim)
        else:
            raise ValueError(f"projection must be 'clap' or 'linear', not {projection!r}")
        self.positional = positional and layers > 0
        self.transformer: nn.TransformerEncoder | None = None
        if layers > 0:
            layer = nn.TransformerEncoderLayer(
                d_model=dim,
                nhead=heads,
                dim_feedforward=ff_dim or 2 * dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, num_layers=layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = full_mask(x, mask)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # every padded input, before an empty row gets a key
        mask = ensure_nonempty(mask)
        h = self.proj(x)
        if self.positional:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        if self.transformer is not None:
            h = self.transformer(h, src_key_padding_mask=~mask)
        return h, mask
