"""Residual path from a frozen encoder's own pooled vector to a method's learned global embedding.

HADE, MGA-CLAP and Robust-ATR learn their pooling (transformer streams, a codebook, attention over
chunks) from scratch on frame / token features, while the frozen encoders already provide a pooled
vector (``audio_embedding``: aisfx's max over frames, mean over segments; ``text_embedding``:
MiniLM's mean over tokens) that the CLAP baseline maps with one projection head. On a few hundred
training pairs a learned pooling starts far from that vector and has to rediscover it. This path
starts the method *at* that vector and lets its own pooling grow in on top:

    combined = Projection(pooled) + alpha * learned,        alpha a learnable scalar, 0 at init

with :class:`~sonalign.models.components.projection.Projection` the CLAP head of the baseline
(Elizalde et al. 2023). At initialisation the global embedding is exactly the baseline's (the
method's pooling is "initialised to reproduce it"); the zero-initialised gate is ReZero's
(Bachlechner et al., "ReZero is All You Need", UAI 2021), so the learned branch enters only as
far as the loss finds it useful, and a branch that carries nothing useful (noise frames, a few
hundred pairs) can stay out instead of being forced in at a fixed share. Callers L2-normalise
``combined``. Every method switches the path with its ``pooled_residual`` config key (ablation:
``false`` = the method's own pooling alone, as before).
"""

from __future__ import annotations

import torch
from torch import nn

from sonalign.models.components.projection import Projection


class PooledResidual(nn.Module):
    """``forward(learned (B, E), pooled (B, D)) -> Projection(pooled) + alpha * learned`` (B, E), alpha = 0 at init."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.proj = Projection(in_dim, out_dim, dropout)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, learned: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(pooled) + self.alpha * learned
