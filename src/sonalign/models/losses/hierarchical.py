"""Multi-level (token / block / sequence) contrastive alignment for HADE's two-stream transformers.

Xin, Zhu, Cheng, Yang, Zou, "Audio-text Retrieval with Transformer-based Hierarchical Alignment and
Disentangled Cross-modal Representation", Interspeech 2024 (arXiv:2409.09256): the transformer-based
hierarchical alignment (THA) aligns audio and text at several depths of the two streams. The
token-level score is the late-interaction "max-sim" of FILIP (Yao et al., "FILIP: Fine-grained
Interactive Language-Image Pre-Training", ICLR 2022).

* ``late_interaction_scores``: for every (audio i, text j) pair, text->audio = mean over j's valid
  tokens of the max cosine over i's valid frames, and audio->text = mean over i's valid frames of the
  max cosine over j's valid tokens. Each direction's matrix feeds its own cross-entropy (FILIP).
* ``symmetric_contrastive``: symmetric cross-entropy on any (N, N) score matrix (positives on the
  diagonal); used for the token level and HADE's confidence-aggregated factor score.
* Block and sequence levels use plain InfoNCE (``losses/infonce.py``) on pooled embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sonalign.models.losses.infonce import contrastive_from_scores


def symmetric_contrastive(scores: torch.Tensor, logit_scale: torch.Tensor | float, scores_t: torch.Tensor | None = None,
                          groups: torch.Tensor | None = None) -> torch.Tensor:
    """1/2 [CE(s*S, P) + CE(s*S_t^T, P)] for an (N, N) score matrix S (rows: audio, columns: text).

    ``scores_t`` (optional) is the text->audio matrix, also indexed (audio, text), when the two
    directions use different scores (late interaction); by default S is used for both. ``groups``
    makes rows with equal ids positives of each other. Same function as
    :func:`~sonalign.models.losses.infonce.contrastive_from_scores`.
    """
    return contrastive_from_scores(scores, logit_scale, scores_t, groups)


def late_interaction_scores(
    audio_tokens: torch.Tensor, audio_mask: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level max-sim scores of L2-normalised tokens; returns (audio->text, text->audio), each (Na, Nt).

    audio_tokens (Na, T, E) + mask (Na, T); text_tokens (Nt, L, E) + mask (Nt, L).
    """
    sim = torch.einsum("ate,ble->abtl", audio_tokens, text_tokens)  # (Na, Nt, T, L)
    neg = torch.finfo(sim.dtype).min
    am = audio_mask[:, None, :, None]
    tm = text_mask[None, :, None, :]
    a_count = audio_mask.sum(-1).clamp(min=1).to(sim.dtype)  # (Na,)
    t_count = text_mask.sum(-1).clamp(min=1).to(sim.dtype)  # (Nt,)
    # audio -> text: each valid frame takes its best token, averaged over frames
    best_token = sim.masked_fill(~tm, neg).amax(-1)  # (Na, Nt, T)
    a2t = (best_token * audio_mask[:, None, :]).sum(-1) / a_count[:, None]
    # text -> audio: each valid token takes its best frame, averaged over tokens
    best_frame = sim.masked_fill(~am, neg).amax(-2)  # (Na, Nt, L)
    t2a = (best_frame * text_mask[None, :, :]).sum(-1) / t_count[None, :]
    return a2t, t2a


class ScoreContrastiveLoss(nn.Module):
    """Symmetric cross-entropy on a score matrix, with its own learnable log-temperature."""

    citation = "Radford et al. 2021 (CLIP) on a general score matrix; Yao et al. 2022 (FILIP) for token-level scores"

    def __init__(self, init_temperature: float = 0.07):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, scores: torch.Tensor, scores_t: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
        return symmetric_contrastive(scores, self.logit_scale, scores_t, groups)


class TokenAlignmentLoss(ScoreContrastiveLoss):
    """FILIP-style token-level contrastive loss between token sequences (HADE's token level)."""

    citation = "Xin et al. 2024 (Interspeech, HADE/THA token level); Yao et al. 2022 (ICLR, FILIP)"

    def forward(  # type: ignore[override]
        self, audio_tokens: torch.Tensor, audio_mask: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        a2t, t2a = late_interaction_scores(audio_tokens, audio_mask, text_tokens, text_mask)
        return symmetric_contrastive(a2t, self.logit_scale, t2a, groups)
