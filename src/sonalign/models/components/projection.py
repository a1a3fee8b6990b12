"""Projection head: the CLAP/open_clip two-layer MLP with a residual, mapping an encoder's space to the joint space."""

from __future__ import annotations

import torch
from torch import nn


class Projection(nn.Module):
    """x -> LayerNorm(W2 GELU(W1 x) + W1 x)  (the CLAP projection, Elizalde et al. 2023)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim, bias=False)
        self.linear2 = nn.Linear(out_dim, out_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear1(x)
        return self.norm(h + self.dropout(self.linear2(nn.functional.gelu(h))))


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Mean over ``dim`` counting only positions where ``mask`` is True."""
    if mask is None:
        return x.mean(dim)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Max over ``dim`` counting only positions where ``mask`` is True; a row without any is zeros."""
    if mask is None:
        return x.amax(dim)
    m = mask.unsqueeze(-1)
    filled = x.masked_fill(~m, torch.finfo(x.dtype).min)
    return torch.where(m.any(dim), filled.amax(dim), torch.zeros((), dtype=x.dtype, device=x.device))


def masked_pool(x: torch.Tensor, mask: torch.Tensor | None, mode: str, dim: int = 1) -> torch.Tensor:
    """``masked_mean`` (``mode="mean"``) or ``masked_max`` (``mode="max"``)."""
    if mode == "mean":
        return masked_mean(x, mask, dim)
    if mode == "max":
        return masked_max(x, mask, dim)
    raise ValueError(f"pooling must be 'mean' or 'max', not {mode!r}")
