"""CLAP baseline: projection heads on frozen clip-level embeddings + symmetric InfoNCE.

Elizalde, Deshmukh, Al Ismail, Wang, "CLAP: Learning Audio Concepts from Natural Language
Supervision", ICASSP 2023 (contrastive objective from Radford et al., CLIP, ICML 2021).

Mapping to the paper: CLAP encodes audio and text with two encoders, maps each into a joint
space with a learned projection (two linear layers with a GELU and a residual, then LayerNorm;
:class:`~sonalign.models.components.projection.Projection`), L2-normalises, and trains with the
symmetric cross-entropy over the B x B cosine-similarity matrix scaled by a learnable temperature
(:class:`~sonalign.models.losses.infonce.InfoNCELoss`). Here the encoders are frozen and their
pooled outputs cached (``audio_embedding``: aisfx CNN 512-d, ``text_embedding``: MiniLM-L6
384-d), so only the projections and the temperature are trained.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sonalign.models.base import FROZEN_ENCODER_DEFAULTS, AlignmentModel
from sonalign.models.components.projection import Projection
from sonalign.models.losses.infonce import InfoNCELoss

DEFAULTS: dict[str, Any] = dict(FROZEN_ENCODER_DEFAULTS)


class ClapBaseline(AlignmentModel):
    """Two CLAP projection heads and a contrastive loss on clip-level embeddings."""

    required_inputs = ("audio_embedding", "text_embedding")
    defaults = DEFAULTS

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        cfg = self.config
        self.audio_proj = Projection(cfg["audio_dim"], cfg["embed_dim"], cfg["dropout"])
        self.text_proj = Projection(cfg["text_dim"], cfg["embed_dim"], cfg["dropout"])
        self.loss_fn = InfoNCELoss(cfg["init_temperature"])

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"embedding": F.normalize(self.audio_proj(batch["audio_embedding"]), dim=-1)}

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"embedding": F.normalize(self.text_proj(batch["text_embedding"]), dim=-1)}

    def compute_loss(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {"infonce": self.loss_fn(audio["embedding"], text["embedding"], batch.get("groups"))}
