"""Decorrelation / orthogonality regulariser between latent factors (HADE's disentangled representation).

Xin, Zhu, Cheng, Yang, Zou, "Audio-text Retrieval with Transformer-based Hierarchical Alignment and
Disentangled Cross-modal Representation", Interspeech 2024 (arXiv:2409.09256): the pooled feature is
split into K compact latent factors that should carry distinct semantics. The redundancy penalty
follows the cross-correlation idea of Barlow Twins (Zbontar et al., ICML 2021) and the channel
decorrelation regulariser of DRL (Wang et al., "Disentangled Representation Learning for Text-Video
Retrieval", 2022), applied *between* factor sub-spaces.

Input: factors (B, K, F).

* ``mode="decorrelation"`` (default): standardise every factor coordinate over the batch, form the
  cross-correlation block ``C_kl = Z_k^T Z_l / B`` (F x F) for each pair k != l and return the mean
  of ``C_kl**2``: 0 iff no coordinate of one factor is linearly correlated with a coordinate of
  another across the batch.
* ``mode="orthogonal"``: per sample, the Gram matrix of the L2-normalised factors; returns the mean
  squared off-diagonal cosine: 0 iff every sample's factors are mutually orthogonal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def factor_decorrelation(factors: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean squared cross-correlation between coordinates of different factors, over the batch."""
    b, k, f = factors.shape
    if k < 2 or b < 2:
        return factors.sum() * 0.0
    z = factors - factors.mean(0, keepdim=True)
    z = z / (z.pow(2).mean(0, keepdim=True) + eps).sqrt()
    corr = torch.einsum("bkf,blg->klfg", z, z) / b  # (K, K, F, F)
    off = ~torch.eye(k, dtype=torch.bool, device=factors.device)
    return corr[off].pow(2).mean()


def factor_orthogonality(factors: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine between a sample's factors."""
    b, k, _ = factors.shape
    if k < 2:
        return factors.sum() * 0.0
    u = F.normalize(factors, dim=-1)
    gram = u @ u.transpose(1, 2)
    off = ~torch.eye(k, dtype=torch.bool, device=factors.device)
    return gram[:, off].pow(2).mean()


def disentangle_loss(factors: torch.Tensor, mode: str = "decorrelation") -> torch.Tensor:
    if mode == "decorrelation":
        return factor_decorrelation(factors)
    if mode == "orthogonal":
        return factor_orthogonality(factors)
    raise ValueError(f"disentangle mode must be 'decorrelation' or 'orthogonal', got {mode!r}")


class DisentangleLoss(nn.Module):
    """Applies ``disentangle_loss`` to each given factor tensor and averages."""

    citation = "Xin et al. 2024 (Interspeech, HADE/DCR); Zbontar et al. 2021 (Barlow Twins); Wang et al. 2022 (DRL)"

    def __init__(self, mode: str = "decorrelation"):
        super().__init__()
        if mode not in ("decorrelation", "orthogonal"):
            raise ValueError(f"disentangle mode must be 'decorrelation' or 'orthogonal', got {mode!r}")
        self.mode = mode

    def forward(self, *factors: torch.Tensor) -> torch.Tensor:
        return torch.stack([disentangle_loss(f, self.mode) for f in factors]).mean()
