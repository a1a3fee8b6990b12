"""Robust-ATR: audio-text retrieval for long, noisy audio with cross-modal refinement and a hybrid loss.

Liu, Rowe, Agarwal, Avendi, Abbasi, Li, Patel, Han, Sheng, Ravi, Roth, "Robust Audio-Text Retrieval
via Cross-Modal Attention and Hybrid Loss", arXiv:2604.23323, 2026.

Mapping to the paper:
* Long audio is cut into silence-aware chunks upstream (the feature cache); each chunk's frozen
  embedding is one row of ``audio_segments`` (B, S, Da). The config asks for that segmentation
  (``"features"``, read by the trainer and the benchmark; the cache's default is fixed 5 s
  windows, which is not the paper's chunking): the ``energy`` segmenter, with its margin above the
  noise floor capped at 6 dB (``max_margin_db``) and its absolute floor at -90 dBFS
  (``min_level_db``). The segmenter's defaults are made for long recordings with background
  between events; a short clip that is one continuous (or quiet) sound has no such background,
  and with the defaults some nonverbal clips gave no chunk at all and would have left the
  training and test sets (docs/results.md). Text is the caption's token states ``text_tokens`` (B, L, Dt) (a
  batch with only ``text_embedding`` is treated as one token).
* **Cross-modal embedding refinement** = *transformer-based projection* (linear input projection +
  a TransformerEncoder layer over the chunk / token sequence), a *linear mapping*, and
  *bidirectional attention*: audio attends to the caption's tokens and the caption to the audio
  chunks (see the retrieval-time design below for its exact form).
* **Attention-based pooling** over chunks and tokens: additive attention with a learned query,
  masked (:class:`~sonalign.models.components.pooling.AttentivePooling`).
* **Pooled residual** (``pooled_residual``, on by default; not in the paper, whose encoders are
  fine-tuned end to end): the frozen encoders' own pooled vectors (``audio_embedding``,
  ``text_embedding``) enter through the CLAP head and are added to the attentive pooling
  (:mod:`~sonalign.models.components.residual`), so a few hundred training pairs do not have to
  rediscover what the frozen pooling already gives.
* **Hybrid loss** (:mod:`~sonalign.models.losses.hybrid`): w_cos (1 - cos) + w_l1 L1 + w_con
  InfoNCE; the pairwise terms do not depend on in-batch negatives, which is what keeps training
  stable at small batch sizes (the paper's point; tested here at B = 8). The contrastive term
  treats rows of one positive group (``groups``: same class or caption) as positives.

Retrieval-time design (documented choice). Bidirectional attention needs both items of a pair,
so it cannot be folded into an embedding computed from one modality alone. We therefore split
the model in two stages that share everything below the attention:
1. ``encode_audio`` / ``encode_text`` are each computable alone: projection + transformer +
   linear mapping + attentive pooling give the flat, L2-normalised ``"embedding"`` used by a
   vector index (first-stage search). They also return the sequence, mask, pooling weights and
   pooled vector needed for refinement.
2. ``similarity(audio, text)`` scores *every* (audio i, text j) pair with the bidirectional
   cross-attention (:class:`~sonalign.models.components.cross_attention.PairwiseBiAttention`):
   the pooled audio vector attends over the caption's tokens, the pooled caption vector attends
   over the audio chunks (text-conditioned chunk selection, what matters for long noisy audio),
   and the score compares modality with modality:
   ``1/3 [cos(U_a a_i, tokens of j picked by a_i) + cos(chunks of i picked by t_j, U_t t_j) + cos(U_a a_i, U_t t_j)]``.
   Every term pairs an audio-derived with a text-derived vector, so no part of the score depends
   on one item alone (an earlier form, cos(own summary + attended other side, ...), contained
   each item's score with itself, a per-item offset that made a few items rank high for every
   query). This exact form is our design: the paper describes bidirectional attention and a
   refined embedding, not the pair score. Attending from pooled vectors keeps the cost per pair
   linear in the lengths, O(H (S + L) d_h), so all pairs can be scored: per-item projections are
   computed once, then pairs are scored in blocks of bounded memory (``similarity_max_elements``).
   ``similarity="flat"``, or dicts without sequences (e.g. vectors read back from an index), give
   the plain cosine of the flat embeddings -- a fast first stage whose top hits ``similarity``
   can re-score.
Training uses both stages: hybrid loss on the flat embeddings (so the index embedding is good on
its own) and hybrid loss on the refined pairs, whose contrastive term uses the B x B matrix of
refined pair scores (exactly what ``similarity`` returns in eval mode; memory O(B^2 H (S + L))).
Under data parallelism the flat contrastive term uses global negatives; the refined score matrix
covers each process's shard only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.errors import ConfigError
from sonalign.models.base import FROZEN_ENCODER_DEFAULTS, AlignmentModel, resolve_config
from sonalign.models.components.cross_attention import PairwiseBiAttention
from sonalign.models.components.pooling import AttentivePooling
from sonalign.models.components.residual import PooledResidual
from sonalign.models.components.sequence import SequenceEncoder
from sonalign.models.losses.hybrid import HybridLoss

DEFAULTS: dict[str, Any] = {
    **FROZEN_ENCODER_DEFAULTS,
    "transformer_layers": 1,
    "transformer_heads": 4,
    "transformer_ff": 512,
    "positional": True,
    "pool_hidden": 128,
    "use_refinement": True,
    "refine_heads": 4,
    "refine_dim": 128,
    "w_cos": 1.0,
    "w_l1": 1.0,
    "w_con": 1.0,
    "flat_weight": 1.0,
    "refined_weight": 1.0,
    "similarity": "refined",
    "similarity_max_elements": 1 << 24,
    "pooled_residual": True,
}


def _validate(config: dict[str, Any]) -> dict[str, Any]:
    cfg = resolve_config(config.get("method", "robust_atr"), DEFAULTS, config)
    if cfg["similarity"] not in ("refined", "flat"):
        raise ConfigError(f"robust_atr: similarity must be 'refined' or 'flat', not {cfg['similarity']!r}")
    if cfg["w_con"] <= 0:
        raise ConfigError("robust_atr: w_con must be > 0 (the pairwise terms alone are minimised by a collapsed embedding)")
    if cfg["refine_dim"] % cfg["refine_heads"]:
        raise ConfigError("robust_atr: refine_dim must be divisible by refine_heads")
    return cfg


class RobustATR(AlignmentModel):
    """Chunk/token encoders with attentive pooling, pairwise bidirectional refinement and hybrid loss."""

    required_inputs = ("audio_segments", "text_tokens")
    #: Read when present: positive groups for the contrastive terms.
    optional_inputs = ("groups",)
    defaults = DEFAULTS

    def __init__(self, config: dict[str, Any]):
        cfg = _validate(config)
        super().__init__(cfg)
        e, dropout = cfg["embed_dim"], cfg["dropout"]
        self.residual: nn.ModuleDict | None = None
        if cfg["pooled_residual"]:
            self.required_inputs = ("audio_segments", "text_tokens", "audio_embedding", "text_embedding")
            self.residual = nn.ModuleDict({"audio": PooledResidual(cfg["audio_dim"], e, dropout), "text": PooledResidual(cfg["text_dim"], e, dropout)})
        seq = dict(
            layers=cfg["transformer_layers"],
            heads=cfg["transformer_heads"],
            ff_dim=cfg["transformer_ff"],
            dropout=dropout,
            projection="linear",
            positional=cfg["positional"],
        )
        self.audio_encoder = SequenceEncoder(cfg["audio_dim"], e, **seq)
        self.text_encoder = SequenceEncoder(cfg["text_dim"], e, **seq)
        self.audio_map = nn.Linear(e, e)
        self.text_map = nn.Linear(e, e)
        self.audio_pool = AttentivePooling(e, cfg["pool_hidden"])
        self.text_pool = AttentivePooling(e, cfg["pool_hidden"])
        hybrid = dict(w_cos=cfg["w_cos"], w_l1=cfg["w_l1"], w_con=cfg["w_con"], init_temperature=cfg["init_temperature"])
        self.flat_loss = HybridLoss(**hybrid)
        self.refine: PairwiseBiAttention | None = None
        if cfg["use_refinement"]:
            self.refine = PairwiseBiAttention(e, cfg["refine_heads"], cfg["refine_dim"], dropout)
            self.refined_loss = HybridLoss(**hybrid)

    # ------------------------------------------------------------------ encoders
    def _encode(
        self, x: torch.Tensor, mask: torch.Tensor | None, encoder: SequenceEncoder, mapping: nn.Linear, pool: AttentivePooling,
        frozen: torch.Tensor | None, side: str,
    ) -> dict[str, torch.Tensor]:
        h, mask = encoder(x, mask)
        h = mapping(h)
        pooled, weights = pool(h, mask)
        if self.residual is not None:
            if frozen is None:
                raise KeyError(f"robust_atr with pooled_residual needs '{side}_embedding' in the batch")
            pooled = self.residual[side](pooled, frozen)
        return {"embedding": F.normalize(pooled, dim=-1), "pooled": pooled, "sequence": h, "mask": mask, "weights": weights}

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._encode(batch["audio_segments"], batch.get("audio_segments_mask"), self.audio_encoder, self.audio_map, self.audio_pool,
                            batch.get("audio_embedding"), "audio")

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "text_tokens" in batch:
            x, mask = batch["text_tokens"], batch.get("text_tokens_mask")
        elif "text_embedding" in batch:
            x, mask = batch["text_embedding"].unsqueeze(1), None
        else:
            raise KeyError("robust_atr needs 'text_tokens' (or 'text_embedding') in the batch")
        return self._encode(x, mask, self.text_encoder, self.text_map, self.text_pool, batch.get("text_embedding"), "text")

    # ------------------------------------------------------------------ scoring
    def _refinable(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> bool:
        keys = ("sequence", "mask", "pooled")
        return self.refine is not None and all(k in audio and k in text for k in keys)

    def similarity(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Refined bidirectional-attention pair scores (Na, Nt), or the flat cosine (see module doc)."""
        if self.config["similarity"] == "refined" and self._refinable(audio, text):
            return self.refine.score_matrix(audio, text, self.config["similarity_max_elements"])
        return audio["embedding"] @ text["embedding"].T

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        groups = batch.get("groups")
        losses = {f"flat_{k}": cfg["flat_weight"] * v for k, v in self.flat_loss(audio["embedding"], text["embedding"], groups=groups).items()}
        if self.refine is not None:
            x_a, x_t = self.refine.refine(audio, text, pairwise=True)  # audio / text views (B, B, 3 refine_dim): [i, j] = audio i, text j
            scores = (x_a * x_t).sum(-1)  # unit views: their dot product is the pair score
            idx = torch.arange(x_a.shape[0], device=x_a.device)
            refined = self.refined_loss(x_a[idx, idx], x_t[idx, idx], scores, groups)
            losses.update({f"refined_{k}": cfg["refined_weight"] * v for k, v in refined.items()})
        return losses
