"""Reciprocal dual contrastive loss: align audio to the joint embedding and text to the joint embedding.

HILBERT (Naderi, Haji Soleimani, Matwin, "Joint-Centric Dual Contrastive Alignment with
Structure-Preserving and Information-Balanced Regularization", arXiv:2604.16247, 2026): instead of
contrasting audio with text directly, each modality's document embedding is contrasted with the
joint cross-attentive embedding of the same document,

    L_rec = InfoNCE(a, j) + InfoNCE(t, j),

each a symmetric InfoNCE (CLIP) with its own learnable temperature. Both modalities are pulled to
one shared anchor, so audio and text meet in the joint space without one modality's geometry
being forced onto the other's. An optional ``direct_weight * InfoNCE(a, t)`` term trains the
audio-text cosine itself (the paper has no such term; HILBERT's config sets it because retrieval
scores that cosine, see ``models/hilbert.py``). ``groups`` (positive-group ids, ``models/base.py``)
reaches every term.
"""

from __future__ import annotations

import torch
from torch import nn

from sonalign.models.losses.infonce import InfoNCELoss


class ReciprocalDualContrastiveLoss(nn.Module):
    """``forward(a, t, j) -> {"audio_joint", "text_joint"[, "audio_text"]}`` (unweighted except the direct term)."""

    citation = "Naderi et al. 2026, HILBERT (arXiv:2604.16247); InfoNCE as in Radford et al. 2021"

    def __init__(self, init_temperature: float = 0.07, direct_weight: float = 0.0):
        super().__init__()
        self.audio_joint = InfoNCELoss(init_temperature)
        self.text_joint = InfoNCELoss(init_temperature)
        self.direct_weight = direct_weight
        self.audio_text = InfoNCELoss(init_temperature) if direct_weight > 0 else None

    def forward(self, audio: torch.Tensor, text: torch.Tensor, joint: torch.Tensor, groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {"audio_joint": self.audio_joint(audio, joint, groups), "text_joint": self.text_joint(text, joint, groups)}
        if self.audio_text is not None:
            out["audio_text"] = self.direct_weight * self.audio_text(audio, text, groups)
        return out
