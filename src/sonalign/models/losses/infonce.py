"""Symmetric InfoNCE with a learnable temperature.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021;
Elizalde et al., "CLAP: Learning Audio Concepts from Natural Language Supervision", ICASSP 2023.

loss = 1/2 [ CE(s * A T^T, I) + CE(s * T A^T, I) ],  s = exp(logit_scale) clamped to <= 100.

Data-parallel training (``sonalign.distributed``): when a process group of more than one
rank is up, the negatives come from the global batch. Both sides are gathered with gradients, each
rank scores its local rows against all ranks' rows (targets offset by the rank's first global row)
and returns the mean over its local rows; with the trainer's shard weighting and DDP's gradient
averaging this equals the loss and gradients of one process on the whole batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sonalign import distributed


def _scale(logit_scale: torch.Tensor | float) -> torch.Tensor | float:
    return logit_scale.exp().clamp(max=100.0) if torch.is_tensor(logit_scale) else math.exp(logit_scale)


def positives_of(groups: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) bool: row i and column j are positives when their group ids are equal."""
    other = groups if other is None else other
    return groups[:, None] == other[None, :]


def multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a uniform target over each row's positives (a row's own pair is one)."""
    target = positives.to(logits.dtype)
    target = target / target.sum(1, keepdim=True).clamp(min=1.0)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def contrastive_from_scores(scores: torch.Tensor, logit_scale: torch.Tensor | float, scores_t: torch.Tensor | None = None,
                            groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric (multi-positive) InfoNCE on a square (N, N) score matrix, rows = audio, columns = text.

    The one implementation of "contrastive loss on a score matrix" (plain cosine matrices, HADE's
    late-interaction and factor scores, Robust-ATR's refined pair scores):
    ``1/2 [CE(s S, P) + CE(s S_t^T, P)]`` with ``s = exp(logit_scale)`` (<= 100), ``S_t`` the
    text->audio matrix (default ``S``; also indexed (audio, text)) and ``P`` the positives: the
    diagonal, or every pair of rows with equal ``groups`` ids (uniform target over them).
    """
    scale = _scale(logit_scale)
    other = scores if scores_t is None else scores_t
    if groups is None:
        targets = torch.arange(scores.shape[0], device=scores.device)
        return 0.5 * (F.cross_entropy(scale * scores, targets) + F.cross_entropy(scale * other.T, targets))
    positives = positives_of(groups)
    return 0.5 * (multi_positive_ce(scale * scores, positives) + multi_positive_ce(scale * other.T, positives))


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, targets: torch.Tensor | None = None,
             groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned (B, E) embeddings (already normalised).

    ``targets`` optionally gives, for each row of ``a``, the index of its positive in ``b``
    (default: the diagonal). Under data parallelism ``targets`` index this rank's rows of ``b``.
    ``groups`` (B,) int: rows with the same id are positives of each other (several clips of one
    class, or one caption describing several clips) instead of false negatives: the multi-positive
    InfoNCE of supervised contrastive learning (Khosla et al., NeurIPS 2020), which the evaluation
    protocol implies when every clip of a class answers a class prompt.
    """
    scale = _scale(logit_scale)
    gathered = distributed.global_negatives(a, b)
    if groups is not None and targets is None:
        if gathered is None:
            return contrastive_from_scores(a @ b.T, logit_scale, groups=groups)
        all_a, all_b, _ = gathered
        all_groups, _ = distributed.gather_rows(groups.to(a.dtype)[:, None])
        positives = positives_of(groups.to(a.dtype), all_groups[:, 0])
        return 0.5 * (multi_positive_ce(scale * a @ all_b.T, positives) + multi_positive_ce(scale * b @ all_a.T, positives))
    if gathered is not None:  # local rows against the global batch's columns, both directions
        all_a, all_b, offset = gathered
        if targets is None:
            targets = torch.arange(a.shape[0], device=a.device)
        targets = targets + offset
        return 0.5 * (F.cross_entropy(scale * a @ all_b.T, targets) + F.cross_entropy(scale * b @ all_a.T, targets))
    if targets is None:
        return contrastive_from_scores(a @ b.T, logit_scale)
    logits = scale * a @ b.T
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


class InfoNCELoss(nn.Module):
    """Module form carrying its own learnable log-temperature (init log(1/0.07), as CLIP)."""

    citation = "Radford et al. 2021 (CLIP); Elizalde et al. 2023 (CLAP)"

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True):
        super().__init__()
        value = torch.tensor(math.log(1.0 / init_temperature))
        self.logit_scale = nn.Parameter(value) if learnable else nn.Parameter(value, requires_grad=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return info_nce(a, b, self.logit_scale, groups=groups)
