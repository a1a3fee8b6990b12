"""Information-balance regulariser: equal information flow from audio and from text into the joint space.

HILBERT (Naderi, Haji Soleimani, Matwin, "Joint-Centric Dual Contrastive Alignment with
Structure-Preserving and Information-Balanced Regularization", arXiv:2604.16247, 2026) adds a
"mutual information balancing loss that prevents dominance of a single modality by equalizing
information flow from audio and text into the joint space". The paper's exact estimator is not
reproduced here; this module implements that objective with a standard, differentiable MI
estimate.

Formula. With B row-aligned audio / text / joint embeddings a, t, j (L2-normalised) and a cosine
critic at a *fixed* temperature tau, the InfoNCE bound (van den Oord et al. 2018, CPC; Poole et
al., "On Variational Bounds of Mutual Information", ICML 2019) gives

    I(x; j) >= I_NCE(x; j) = log B - L_NCE(x, j),
    L_NCE(x, j) = 1/2 [CE(x j^T / tau, I) + CE(j x^T / tau, I)],

and the regulariser is the squared gap between the two estimates, normalised by the bound's
ceiling log B:

    L_bal = ((I_NCE(a; j) - I_NCE(t; j)) / log B)^2 = ((L_NCE(t, j) - L_NCE(a, j)) / log B)^2.

Why this form.
* "Information flow into the joint space" is the mutual information between each modality's
  representation and the joint one: if the joint embedding is dominated by audio, it is far more
  predictable from the audio document than from the text document, I(a; j) >> I(t; j).
  Attention mass or gate values only say where the fusion *looks*, not how much of the joint
  representation a modality actually determines (a modality can receive weight yet carry nothing
  that distinguishes examples), so we measure dependence, not attention.
* InfoNCE is the estimator the model already optimises, is cheap (one B x B matrix per
  modality), differentiable, and low-variance compared with MINE-style estimators.
* The critic temperature is fixed (not the learnable temperatures of the contrastive loss), so
  both estimates use the same critic family and the penalty cannot be lowered by merely
  re-tuning a temperature instead of changing the representations.
* Dividing by log B makes the gap a fraction of the maximum the bound can express, in [0, 1],
  comparable across batch sizes; squaring gives a smooth penalty that is zero at balance.
The penalty is symmetric: it pulls the weaker modality's dependence up and the stronger one's
down, so its weight should stay small next to the contrastive terms (0.1 by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def infonce_mi_estimate(x: torch.Tensor, y: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE lower bound on I(x; y) in nats: ``log B - L_NCE`` with a cosine critic at ``temperature``.

    Computed on the batch at hand (under data parallelism: this rank's shard, with B its size), so
    the estimate and its ``log B`` ceiling always refer to the same candidates.
    """
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    logits = x @ y.T / temperature
    targets = torch.arange(x.shape[0], device=x.device)
    loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    return math.log(x.shape[0]) - loss


def info_balance_loss(audio: torch.Tensor, text: torch.Tensor, joint: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """``((I_NCE(a; j) - I_NCE(t; j)) / log B)^2``; zero (no signal) for a batch of one."""
    b = audio.shape[0]
    if b < 2:
        return audio.new_zeros(())
    gap = infonce_mi_estimate(audio, joint, temperature) - infonce_mi_estimate(text, joint, temperature)
    return (gap / math.log(b)) ** 2


class InfoBalanceLoss(nn.Module):
    """Module form of :func:`info_balance_loss` with a fixed critic temperature."""

    citation = (
        "Naderi et al. 2026 (HILBERT, arXiv:2604.16247) objective; InfoNCE MI bound of van den Oord et al. 2018 "
        "and Poole et al. 2019"
    )

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature

    def forward(self, audio: torch.Tensor, text: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        return info_balance_loss(audio, text, joint, self.temperature)
