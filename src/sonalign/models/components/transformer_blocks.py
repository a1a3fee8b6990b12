"""Small pre-LayerNorm transformer blocks with boolean padding masks (True = valid position).

Vaswani et al., "Attention Is All You Need", NeurIPS 2017; pre-LN placement as in Xiong et al.,
"On Layer Normalization in the Transformer Architecture", ICML 2020.

Shared by HADE (two-stream blocks), MGA-CLAP (audio/text blocks before the locality-aware block)
and CALM (SpecTran and the multimodal transformer). Conventions that the models rely on:

* padded positions are excluded as attention *keys*; every query may still attend to itself, so a
  padded query never sees an empty key set (no NaN) and a valid query never sees a padded key;
* after every block the padded positions are reset to zero, so no output of a stack depends on the
  values stored at padded positions (the models' "masks matter" tests check this);
* ``attn_mask`` (T, T) optionally restricts which keys each query may use (local windows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed sine/cosine position table (length, dim) of Vaswani et al. 2017 (works for any length)."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    half = (dim + 1) // 2
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * (-math.log(10000.0) / max(half, 1)))
    table = torch.zeros(length, 2 * half, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table[:, :dim].to(dtype)


def zero_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Set padded positions of (B, T, D) ``x`` to exactly zero (``torch.where``, so NaN/inf there cannot leak)."""
    if mask is None:
        return x
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def build_attention_mask(mask: torch.Tensor | None, length: int, attn_mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Combine key padding (B, T) and a structural (T, T) mask into a (B, 1, T, T) boolean "may attend" mask."""
    if mask is None and attn_mask is None:
        return None
    eye = torch.eye(length, dtype=torch.bool, device=device)
    allowed = torch.ones(length, length, dtype=torch.bool, device=device) if attn_mask is None else attn_mask.to(device)
    if mask is None:
        full = allowed | eye
        return full.view(1, 1, length, length)
    keys = mask[:, None, None, :]  # (B, 1, 1, T)
    return (keys & allowed) | eye


class MultiHeadSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with a boolean "may attend" mask."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """x -> x + Attn(LN(x)) -> x + FFN(LN(x)); padded positions zeroed on output."""

    def __init__(self, dim: int, num_heads: int = 4, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, dropout=0.0)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        allowed = build_attention_mask(mask, x.shape[1], attn_mask, x.device)
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        x = x + self.drop(self.ff(self.norm2(x)))
        return zero_padded(x, mask)


class TransformerStack(nn.Module):
    """N blocks; ``forward`` returns the output of every block (index i = after block i)."""

    def __init__(self, dim: int, depth: int, num_heads: int = 4, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, ff_mult, dropout) for _ in range(depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        outputs = []
        x = zero_padded(x, mask)
        for block in self.blocks:
            x = block(x, mask, attn_mask)
            outputs.append(x)
        return outputs
