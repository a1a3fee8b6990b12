"""Masked attention pooling over a sequence of segment/chunk/token features.

* :class:`SelfAttentivePooling` -- the structured self-attention of Lin et al., "A Structured
  Self-Attentive Sentence Embedding", ICLR 2017: ``A = softmax(W_s2 tanh(W_s1 H^T))`` with ``r``
  heads (rows of A), ``M = A H``, and the penalty ``P = ||A A^T - I||_F^2`` that pushes the heads
  to attend to different positions. Used by HILBERT.
* :class:`AttentivePooling` -- additive attention with a learned query (context) vector, as in
  Yang et al., "Hierarchical Attention Networks for Document Classification", NAACL 2016:
  ``u_s = tanh(W h_s + b)``, ``alpha = softmax(u_s . u_q)``, ``v = sum_s alpha_s h_s``.
  Used by Robust-ATR over silence-aware chunks.

Masks are bool with True = valid. Padded positions get exactly zero weight (their values never
reach the output), and a row with no valid position pools to zeros instead of NaN.
"""

from __future__ import annotations

import torch
from torch import nn


def ensure_nonempty(mask: torch.Tensor) -> torch.Tensor:
    """Return ``mask`` with position 0 switched on in rows that have no valid position.

    Attention over a row with every key masked is undefined (softmax of all ``-inf`` is NaN);
    callers zero padded inputs first, so the unmasked position 0 only ever contributes zeros.
    """
    empty = ~mask.any(dim=-1)
    if not bool(empty.any()):
        return mask
    mask = mask.clone()
    mask[..., 0] = mask[..., 0] | empty
    return mask


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` giving exactly zero weight where ``mask`` is False (broadcastable).

    Rows with no valid position come out all-zero rather than NaN.
    """
    if mask is None:
        return torch.softmax(logits, dim=dim)
    mask = mask.expand_as(logits)
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(logits.dtype)


def frobenius_penalty(attention: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2017) redundancy penalty ``||A A^T - I||_F^2`` for ``A`` of shape (B, r, S), batch-mean."""
    r = attention.shape[-2]
    eye = torch.eye(r, device=attention.device, dtype=attention.dtype)
    gram = attention @ attention.transpose(-1, -2)
    return ((gram - eye) ** 2).sum(dim=(-1, -2)).mean()


class SelfAttentivePooling(nn.Module):
    """Structured self-attentive pooling (Lin et al. 2017) with ``heads`` = r attention hops.

    ``forward(h, mask) -> (pooled (B, out_dim), A (B, r, S))``. The r hop outputs ``M = A H`` are
    flattened and linearly mapped to ``out_dim`` (Lin et al. feed the flattened M to their MLP).
    """

    def __init__(self, dim: int, hidden: int = 128, heads: int = 4, out_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.w1 = nn.Linear(dim, hidden, bias=False)  # W_s1 (d_a x 2u)
        self.w2 = nn.Linear(hidden, heads, bias=False)  # W_s2 (r x d_a)
        self.out = nn.Linear(heads * dim, out_dim or dim)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.w2(torch.tanh(self.w1(h))).transpose(1, 2)  # (B, r, S)
        attention = masked_softmax(scores, None if mask is None else mask.unsqueeze(1), dim=-1)
        m = attention @ h  # (B, r, D)
        return self.out(m.flatten(1)), attention


class AttentivePooling(nn.Module):
    """Additive attention pooling with a learned query vector (Yang et al. 2016).

    ``forward(h, mask) -> (pooled (B, D), weights (B, S))``; the weights sum to 1 over valid positions.
    """

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.randn(hidden) / hidden**0.5)

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.tanh(self.proj(h)) @ self.query  # (B, S)
        weights = masked_softmax(scores, mask, dim=-1)
        return (weights.unsqueeze(-1) * h).sum(dim=1), weights
