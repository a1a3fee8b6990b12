"""Symmetric InfoNCE with a learnable temperature.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021;
Elizalde et al., "CLAP: Learning Audio Concepts from Natural Language Supervision", ICASSP 2023.

loss = 1/2 [ CE(s * A T^T, I) + CE(s * T A^T, I) ],  s = exp(logit_scale) clamped to <= 100.

Data-parallel training (``sonalign.train.distributed``): when a process group of more than one
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

from sonalign.train import distributed


def multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a uniform target over each row's positives (a row's own pair is one)."""
    target = positives.to(logits.dtype)
    target = target / target.sum(1, keepdim=True).clamp(min=1.0)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


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
    scale = logit_scale.exp().clamp(max=100.0) if torch.is_tensor(logit_scale) else math.exp(logit_scale)
    gathered = distributed.global_negatives(a, b)
    if groups is not None and targets is None:
        if gathered is None:
            positives = groups[:, None] == groups[None, :]
            return 0.5 * (multi_positive_ce(scale * a @ b.T, positives) + multi_positive_ce(scale * b @ a.T, positives))
        all_a, all_b, _ = gathered
        all_groups, _ = distributed.gather_rows(groups.to(a.dtype)[:, None])
        positives = groups.to(a.dtype)[:, None] == all_groups[:, 0][None, :]
        return 0.5 * (multi_positive_ce(scale * a @ all_b.T, positives) + multi_positive_ce(scale * b @ all_a.T, positives))
    if gathered is not None:  # local rows against the global batch's columns, both directions
        all_a, all_b, offset = gathered
        if targets is None:
            targets = torch.arange(a.shape[0], device=a.device)
        targets = targets + offset
        return 0.5 * (F.cross_entropy(scale * a @ all_b.T, targets) + F.cross_entropy(scale * b @ all_a.T, targets))
    logits = scale * a @ b.T
    if targets is None:
        targets = torch.arange(a.shape[0], device=a.device)
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
