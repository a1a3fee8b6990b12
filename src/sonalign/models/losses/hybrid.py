"""Hybrid loss: cosine + L1 + contrastive, for stable training with small batches.

Liu et al., "Robust Audio-Text Retrieval via Cross-Modal Attention and Hybrid Loss",
arXiv:2604.23323, 2026: a blend of cosine similarity, L1 and contrastive objectives that "enables
stable training even under small-batch constraints". For row-aligned L2-normalised pairs
(a_i, t_i), i = 1..B, and a (B, B) score matrix S (default S = a t^T):

    L = w_cos * mean_i (1 - cos(a_i, t_i))
      + w_l1  * mean_{i,k} |a_ik - t_ik|                    (torch's L1Loss, element mean)
      + w_con * 1/2 [CE(s S, I) + CE(s S^T, I)]             (symmetric InfoNCE, s = exp(logit_scale) <= 100)

Why it is stable with small batches: the cosine and L1 terms are *pairwise* -- each example's
term involves only its own positive pair, so their expected gradient does not depend on the batch
size or on which negatives happen to share the batch (only its variance shrinks as 1/B). InfoNCE,
in contrast, is capped at log B (2.1 nats at B = 8), saturates quickly and draws its gradient from
a handful of in-batch negatives, so alone it gives a noisy, batch-dependent signal (and a
learnable temperature can run away). The pairwise terms supply a steady pull on positives; L1 on
unit vectors has bounded per-coordinate gradients, robust to outlier (noisy, weakly labelled)
pairs. The contrastive term is still required (w_con > 0): the pairwise terms alone are minimised
by a collapsed constant embedding; InfoNCE's negatives keep the embeddings apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.models.losses.infonce import contrastive_from_scores, info_nce

__all__ = ["HybridLoss", "contrastive_from_scores"]


class HybridLoss(nn.Module):
    """``forward(a, t, scores=None) -> {"cos", "l1", "con"}``, each already multiplied by its weight.

    ``a``, ``t``: (B, E) positive pairs (normalised here); ``scores``: optional (B, B) matrix for the
    contrastive term (e.g. cross-attention-refined pair scores), default ``a @ t.T``; ``groups``:
    optional (B,) positive-group ids for the contrastive term (``models/base.py``).
    """

    citation = "Liu et al. 2026, 'Robust Audio-Text Retrieval via Cross-Modal Attention and Hybrid Loss' (arXiv:2604.23323)"

    def __init__(self, w_cos: float = 1.0, w_l1: float = 1.0, w_con: float = 1.0, init_temperature: float = 0.07):
        super().__init__()
        if min(w_cos, w_l1, w_con) < 0:
            raise ValueError("hybrid loss weights must be >= 0")
        self.w_cos, self.w_l1, self.w_con = w_cos, w_l1, w_con
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, a: torch.Tensor, t: torch.Tensor, scores: torch.Tensor | None = None,
                groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        a = F.normalize(a, dim=-1)
        t = F.normalize(t, dim=-1)
        # embeddings: the shared InfoNCE (global negatives under data parallelism); a given score
        # matrix (pairwise cross-attention) is necessarily local to this batch. ``groups``: rows
        # with equal ids are positives of each other in the contrastive term (the pairwise terms
        # only ever see each row's own pair).
        if scores is None:
            con = info_nce(a, t, self.logit_scale, groups=groups)
        else:
            con = contrastive_from_scores(scores, self.logit_scale, groups=groups)
        return {
            "cos": self.w_cos * (1.0 - (a * t).sum(-1)).mean(),
            "l1": self.w_l1 * F.l1_loss(a, t),
            "con": self.w_con * con,
        }
