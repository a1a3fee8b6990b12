"""MGA-CLAP's locality-aware block for audio frames.

Li, Guo, Wang, Liu, "Advancing Multi-grained Alignment for Contrastive Language-Audio
Pre-training", ACM Multimedia 2024 (arXiv:2408.07919), Sec. "locality-aware block".

How this maps to the paper: global self-attention lets every frame absorb context from the whole
clip, which blurs frame-level (fine-grained) features. The paper replaces the *last* block of the
audio encoder by a locality-aware block that removes the query-key attention path and outputs each
frame's own value projection, and drops the feed-forward network, so the frame features reaching the
shared codebook stay local. In the authors' code (HTS-AT) that is ``y = x + W_o W_v LN(x)``; they
then add ``LN(y)`` where the FFN used to be. We implement:

* ``mode="value"`` (the paper): ``y = x + Dropout(W_o W_v LN(x))`` with no FFN (we do not keep the
  extra ``LN(y)`` term of the reference code, which has no counterpart in the paper's description);
* ``mode="window"`` (ablation): a regular pre-LN block whose self-attention is limited to a band of
  ``window`` frames each side (``local_window_mask``), i.e. locality by masking instead of by
  removing the q-k path.

Padded frames are zeroed on output in both modes.
"""

from __future__ import annotations

import torch
from torch import nn

from sonalign.models.components.transformer_blocks import TransformerBlock, zero_padded


def local_window_mask(length: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, length) boolean band: query i may attend key j iff |i - j| <= window."""
    idx = torch.arange(length, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window


class LocalityAwareBlock(nn.Module):
    """Last audio block of MGA-CLAP: value-only (paper) or banded-attention (ablation) frame refinement."""

    def __init__(self, dim: int, num_heads: int = 4, mode: str = "value", window: int = 2, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        if mode not in ("value", "window"):
            raise ValueError(f"locality mode must be 'value' or 'window', got {mode!r}")
        self.mode = mode
        self.window = window
        if mode == "value":
            self.norm = nn.LayerNorm(dim)
            self.value = nn.Linear(dim, dim)
            self.out = nn.Linear(dim, dim)
            self.drop = nn.Dropout(dropout)
        else:
            self.block = TransformerBlock(dim, num_heads, ff_mult, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "value":
            y = x + self.drop(self.out(self.value(self.norm(x))))
            return zero_padded(y, mask)
        return self.block(x, mask, attn_mask=local_window_mask(x.shape[1], self.window, x.device))
