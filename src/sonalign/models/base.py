"""The contract every alignment model keeps, so the trainer, evaluator and index treat them alike.

A model works on *cached features* of frozen encoders, never on raw audio (CALM's SpecTran is the
exception: it reads ``audio_mel``). A batch is a dict of tensors; a model reads only the keys it
needs and ``required_inputs`` names them so the data loader can skip the rest.

Batch keys (B = batch, all masks are bool with True = valid position):

===================== ============== ===================================================
key                   shape          meaning
===================== ============== ===================================================
audio_embedding       (B, Da)        clip-level pooled frozen-encoder embedding
audio_segments        (B, S, Da)     one pooled embedding per segment/window of the clip
audio_segments_mask   (B, S)
audio_frames          (B, T, Da)     frame sequence (all windows' frames, in time order)
audio_frames_mask     (B, T)
audio_mel             (B, T, M)      log-mel frames (CALM/SpecTran only), M mel bins
audio_mel_mask        (B, T)
text_embedding        (B, Dt)        pooled sentence embedding of the caption
text_tokens           (B, L, Dt)     token states of the caption
text_tokens_mask      (B, L)
text_segments         (B, S', Dt)    one embedding per sentence of the text
text_segments_mask    (B, S')
labels                (B,)           int class ids (classification sets, CALM emotion head)
groups                (B,)           int: rows with equal ids are positives of each other
                                     (same class or same caption); contrastive losses use it
===================== ============== ===================================================

``encode_audio`` / ``encode_text`` return dicts whose ``"embedding"`` is (B, E), L2-normalised,
usable in a flat vector index. ``similarity(a, t)`` takes two such dicts and returns an (Na, Nt)
score matrix; the default is the cosine matrix, methods with richer matching (HADE's
confidence-weighted factor pairs, MGA-CLAP's frame-level scores) override it. ``forward(batch)``
returns ``{"audio": ..., "text": ..., "loss": scalar, "losses": {name: scalar}}``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AlignmentModel(nn.Module):
    """Base class. Subclasses set ``required_inputs`` and implement the two encoders and ``compute_loss``."""

    #: Batch keys this model reads (masks are implied).
    required_inputs: tuple[str, ...] = ("audio_embedding", "text_embedding")
    #: Keys used when present (e.g. ``labels`` for a classifier head).
    optional_inputs: tuple[str, ...] = ()

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = dict(config)

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def similarity(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        return audio["embedding"] @ text["embedding"].T

    def compute_loss(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Return named loss terms (already weighted); their sum is the training loss."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        audio = self.encode_audio(batch)
        text = self.encode_text(batch)
        losses = self.compute_loss(audio, text, batch)
        total = torch.stack([v for v in losses.values()]).sum()
        return {"audio": audio, "text": text, "loss": total, "losses": losses}
