"""Linear Centered Kernel Alignment (CKA) and the loss ``1 - CKA``.

Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited",
ICML 2019. For representations X (n, p) and Y (n, q) of the same n examples, with linear kernels
K = X X^T, L = Y Y^T and the centring matrix H = I - 11^T/n,

    HSIC(K, L) = tr(K H L H) / (n - 1)^2
    CKA(X, Y)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
               = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F),   X_c = H X.

CKA is 1 for identical inputs and invariant to isotropic scaling and orthogonal transforms of
either side (not to arbitrary invertible linear maps); it compares the *geometry* of the batch
(which examples are close to which) and so works across different widths p != q. We compute it in
the n x n Gram form (n = batch size is small), which is differentiable everywhere thanks to a
small epsilon in the denominator.

HILBERT (Naderi et al. 2026) uses ``1 - CKA`` as a structure-preserving regulariser between each
modality's document embedding and the joint embedding.
"""

from __future__ import annotations

import torch
from torch import nn


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Linear CKA between row-aligned representations ``x`` (n, p) and ``y`` (n, q); a scalar in [0, 1]."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)  # no half-precision sums
    x, y = x.to(dtype), y.to(dtype)
    xc = x - x.mean(dim=0, keepdim=True)
    yc = y - y.mean(dim=0, keepdim=True)
    k = xc @ xc.T  # centred Gram matrices: H K H with K = x x^T
    l = yc @ yc.T
    hsic_kl = (k * l).sum()  # tr(K_c L_c); the 1/(n-1)^2 factors cancel in the ratio
    hsic_kk = (k * k).sum()
    hsic_ll = (l * l).sum()
    return hsic_kl / torch.sqrt(hsic_kk * hsic_ll + eps)


class CKALoss(nn.Module):
    """``1 - linear_cka(x, y)``; 0 when the two batches have the same geometry."""

    citation = "Kornblith et al. 2019, 'Similarity of Neural Network Representations Revisited' (ICML)"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1.0 - linear_cka(x, y)
