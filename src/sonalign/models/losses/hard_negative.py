"""Hard-negative guided contrastive loss (MGA-CLAP), i.e. InfoNCE with hardness-reweighted negatives.

Robinson, Chuang, Sra, Jegelka, "Contrastive Learning with Hard Negative Samples", ICLR 2021 (the
importance weights); Li, Guo, Wang, Liu, "Advancing Multi-grained Alignment for Contrastive
Language-Audio Pre-training", ACM MM 2024 (its use for audio-text, beta = 0.15).

With logits ``l_ij = s * <a_i, b_j>`` (s = exp(logit_scale) clamped to <= 100) and N rows, each
negative j != i of row i gets the weight

    w_ij = (N - 1) * exp(beta * l_ij) / sum_{k != i} exp(beta * l_ik),     w_ii = 1,

so the negatives' weights average to 1 and harder (more similar) negatives count more; the loss of
row i is ``-l_ii + log sum_j w_ij exp(l_ij)``, averaged over rows and symmetrised over the two
retrieval directions. beta = 0 gives exactly InfoNCE. As in the reference code of both papers the
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


def hard_negative_rows(logits: torch.Tensor, beta: float, detach_weights: bool = False) -> torch.Tensor:
    """Per-row loss for a square logit matrix whose positives are on the diagonal."""
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    if n == 1:
        return torch.zeros(1, dtype=logits.dtype, device=logits.device)
    bl = beta * logits
    bl = bl.detach() if detach_weights else bl
    neg_lse = torch.logsumexp(bl.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    log_w = (math.log(n - 1) + bl - neg_lse).masked_fill(eye, 0.0)
    return torch.logsumexp(logits + log_w, dim=1) - logits.diagonal()


def hard_negative_info_nce(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float, beta: float = 0.15, detach_weights: bool = False
) -> torch.Tensor:
    """Symmetric hard-negative guided InfoNCE between row-aligned, L2-normalised (N, E) embeddings."""
    logits = _scale(logit_scale) * a @ b.T
    return 0.5 * (hard_negative_rows(logits, beta, detach_weights).mean() + hard_negative_rows(logits.T, beta, detach_weights).mean())


class HardNegativeInfoNCELoss(nn.Module):
    """Module form with its own learnable log-temperature (init log(1/0.07), as CLIP)."""

    citation = "Robinson et al. 2021 (ICLR, hard negative sampling); Li et al. 2024 (ACM MM, MGA-CLAP)"

    def __init__(self, beta: float = 0.15, init_temperature: float = 0.07, learnable: bool = True, detach_weights: bool = False):
        super().__init__()
        self.beta = beta
        self.detach_weights = detach_weights
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learnable)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return hard_negative_info_nce(a, b, self.logit_scale, self.beta, self.detach_weights)
