"""Hard-negative guided contrastive loss (MGA-CLAP), i.e. InfoNCE with hardness-reweighted negatives.

Robinson, Chuang, Sra, Jegelka, "Contrastive Learning with Hard Negative Samples", ICLR 2021 (the
importance weights); Li, Guo, Wang, Liu, "Advancing Multi-grained Alignment for Contrastive
Language-Audio Pre-training", ACM MM 2024 (its use for audio-text, beta = 0.15).

With logits ``l_ij = s * <a_i, b_j>`` (s = exp(logit_scale) clamped to <= 100) and N rows, each
negative j != i of row i gets the weight

    w_ij = (N - 1) * exp(beta * l_ij) / sum_{k != i} exp(beta * l_ik),     w_ii = 1,

so the negatives' weights average to 1 and harder (more similar) negatives count more; the loss of
row i is ``-l_ii + log sum_j w_ij exp(l_ij)``, averaged over rows and symmetrised over the two
retrieval directions. With positive groups (``models/base.py``: several clips of one class, one
caption of several clips) every row of the same group is a positive (weight 1, uniform target
over them, as the reference code's ``sim_targets``) and only rows of other groups are negatives
and get the hardness weights: a same-class row is never up-weighted as a "hard negative". beta = 0 gives exactly InfoNCE. As in the reference code of both papers the
weights are applied to the scaled logits and are not detached (``detach_weights=True`` treats them
as constants). Note: the MGA-CLAP reference code normalises by ``sum_k exp(beta l_ik) - exp(beta l_ij)``
(all columns but j, the positive included); we use the normalisation written above (negatives only),
which is Robinson et al.'s estimator and reduces exactly to InfoNCE at beta = 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _scale(logit_scale: torch.Tensor | float) -> torch.Tensor | float:
    return logit_scale.exp().clamp(max=100.0) if torch.is_tensor(logit_scale) else math.exp(logit_scale)


def hard_negative_rows(logits: torch.Tensor, beta: float, detach_weights: bool = False, positives: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row loss for a square logit matrix; positives on the diagonal or given as an (N, N) bool mask.

    Row i with positives P_i (uniform target 1/|P_i| over them) and negatives N_i (every other
    column): ``-1/|P_i| sum_{p in P_i} [l_ip - log(sum_{q in P_i} e^l_iq + sum_{n in N_i} w_in e^l_in)]``,
    ``w_in = |N_i| e^{beta l_in} / sum_{m in N_i} e^{beta l_im}``. A row without negatives
    (every row of the batch in its group) reduces to the cross-entropy among its positives.
    """
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    positives = eye if positives is None else (positives | eye)
    if n == 1:
        return torch.zeros(1, dtype=logits.dtype, device=logits.device)
    negatives = ~positives
    n_neg = negatives.sum(1, keepdim=True)
    bl = beta * logits
    bl = bl.detach() if detach_weights else bl
    # rows without negatives get a finite dummy (their weights are all masked below): no -inf in autograd
    filled = torch.where(n_neg > 0, bl.masked_fill(~negatives, float("-inf")), torch.zeros_like(bl))
    neg_lse = torch.logsumexp(filled, dim=1, keepdim=True)
    log_w = torch.log(n_neg.clamp(min=1).to(logits.dtype)) + bl - neg_lse
    log_w = log_w.masked_fill(positives, 0.0)
    log_denominator = torch.logsumexp(logits + log_w, dim=1)
    target = positives.to(logits.dtype) / positives.sum(1, keepdim=True).to(logits.dtype)
    return log_denominator - (target * logits).sum(1)


def hard_negative_info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, beta: float = 0.15, detach_weights: bool = False,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric hard-negative guided InfoNCE between row-aligned, L2-normalised (N, E) embeddings.

    ``groups`` (N,): rows with equal ids are positives of each other (target spread uniformly over
    them, as the reference code's ``sim_targets`` from sample ids), never hard negatives.
    """
    logits = _scale(logit_scale) * a @ b.T
    positives = None if groups is None else groups[:, None] == groups[None, :]
    rows = hard_negative_rows(logits, beta, detach_weights, positives)
    cols = hard_negative_rows(logits.T, beta, detach_weights, None if positives is None else positives.T)
    return 0.5 * (rows.mean() + cols.mean())


class HardNegativeInfoNCELoss(nn.Module):
    """Module form with its own learnable log-temperature (init log(1/0.07), as CLIP)."""

    citation = "Robinson et al. 2021 (ICLR, hard negative sampling); Li et al. 2024 (ACM MM, MGA-CLAP)"

    def __init__(self, beta: float = 0.15, init_temperature: float = 0.07, learnable: bool = True, detach_weights: bool = False):
        super().__init__()
        self.beta = beta
        self.detach_weights = detach_weights
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learnable)

    def forward(self, a: torch.Tensor, b: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return hard_negative_info_nce(a, b, self.logit_scale, self.beta, self.detach_weights, groups)
