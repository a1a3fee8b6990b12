"""MGA-CLAP's modality-shared codebook: global features as sparse combinations of shared codewords.

Li, Guo, Wang, Liu, "Advancing Multi-grained Alignment for Contrastive Language-Audio
Pre-training", ACM Multimedia 2024 (arXiv:2408.07919), Eqs. 2-3; sparsemax from Martins & Astudillo,
"From Softmax to Sparsemax", ICML 2016.

How this maps to the paper: frame features (audio) and word features (text) are both compared with
the SAME learnable codebook C (K x E):

1. affinity ``A[t, k] = <f_t, c_k> / sqrt(E) / temperature`` for every valid position t;
2. max-pool over positions: ``a_k = max_t A[t, k]`` (how strongly any frame/word evokes codeword k);
3. sparsify over codewords: ``w = sparsemax(a)`` (the paper), or ablations ``softmax(a)`` and
   ``"topk"`` (softmax restricted to the k largest affinities);
4. global embedding ``g = sum_k w_k c_k`` (then L2-normalised by the caller).

Temperature: sparsemax keeps every codeword whose pooled affinity is within ~1 (in total) of the
top, so a *small* temperature makes one codeword win for every input at initialisation, all global
embeddings coincide and the sparsemax Jacobian (zero at a vertex) stops all gradients -- we saw
exactly this collapse (loss stuck at log N) with temperature <= 1 on synthetic data. A large
temperature (the reference code uses 1000 with 4096 codewords; our default is 100) starts in the
dense regime; sparsity emerges as the projected features grow during training.

Because both modalities' global embeddings live in the span of the same codewords and the
codewords are matched against *local* features, frame and word features are pulled into a shared
latent space, which is what makes frame-level text grounding work. Padded positions are excluded
from the max with -inf (the reference code multiplies them by 0 instead, which lets a padded word
win the max when all affinities are negative).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Euclidean projection of ``z`` onto the probability simplex along ``dim`` (Martins & Astudillo 2016).

    Written with differentiable torch ops (sort, cumsum, clamp); autograd gives the sparsemax Jacobian
    ``diag(s) - s s^T / |S|`` on the support S.
    """
    z = z.transpose(dim, -1)
    z = z - z.max(dim=-1, keepdim=True).values
    zs = torch.sort(z, dim=-1, descending=True).values
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    cumsum = zs.cumsum(-1)
    support = (1 + k * zs) > cumsum
    k_z = support.sum(-1, keepdim=True).clamp(min=1)
    tau = (torch.gather(cumsum, -1, k_z - 1) - 1) / k_z.to(z.dtype)
    return torch.clamp(z - tau, min=0).transpose(dim, -1)


def topk_softmax(z: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """Softmax over the ``k`` largest entries along ``dim``; the others get exactly 0."""
    k = min(k, z.shape[dim])
    kth = torch.topk(z, k, dim=dim).values.narrow(dim, k - 1, 1)
    return F.softmax(z.masked_fill(z < kth, float("-inf")), dim=dim)


class SharedCodebook(nn.Module):
    """One codebook for both modalities; ``forward(features, mask) -> (global (B, E), weights (B, K))``."""

    def __init__(self, num_codes: int, dim: int, temperature: float = 100.0, sparsify: str = "sparsemax", top_k: int = 32):
        super().__init__()
        if sparsify not in ("sparsemax", "softmax", "topk"):
            raise ValueError(f"codebook sparsify must be 'sparsemax', 'softmax' or 'topk', got {sparsify!r}")
        self.codes = nn.Parameter(torch.randn(num_codes, dim) / math.sqrt(dim))
        self.temperature = temperature
        self.sparsify = sparsify
        self.top_k = top_k
        self.scale = 1.0 / math.sqrt(dim)

    def affinity(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, E) -> (B, T, K) scaled position-codeword affinities (Eq. 2)."""
        return features @ self.codes.T * (self.scale / self.temperature)

    def weights(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sparse codeword weights (B, K): max over valid positions, then sparsemax/softmax/top-k (Eq. 3)."""
        aff = self.affinity(features)
        if mask is not None:
            aff = aff.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        pooled = aff.max(dim=1).values
        if self.sparsify == "sparsemax":
            return sparsemax(pooled, dim=-1)
        if self.sparsify == "topk":
            return topk_softmax(pooled, self.top_k, dim=-1)
        return F.softmax(pooled, dim=-1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights(features, mask)
        return w @ self.codes, w
