"""HILBERT: document-level audio-text embeddings from long segmented sequences.

Naderi, Haji Soleimani, Matwin, "Joint-Centric Dual Contrastive Alignment with Structure-Preserving
and Information-Balanced Regularization" (HILBERT: HIerarchical Long-sequence Balanced Embedding
with Reciprocal contrastive Training), arXiv:2604.16247, 2026.

Mapping to the paper:
* Frozen pre-trained encoders give segment-level features: ``audio_segments`` (B, S, Da) and
  ``text_segments`` (B, S', Dt), one vector per sentence (or ``text_tokens`` when a data set has
  no sentence segmentation; see ``text_input`` below).
* Per modality: CLAP projection to ``embed_dim``, an optional Transformer over the segments
  (``use_segment_transformer``; sinusoidal positions) and **self-attentive pooling** (Lin et al.
  2017, r = ``pool_heads`` hops) -> the modality-specific *document representation*. The
  ``||A A^T - I||_F^2`` penalty on the hops is weighted by ``attn_penalty_weight`` (0 = off).
* **Cross-modal attention**: audio segments attend to text segments and text segments to audio
  segments (Transformer cross-attention blocks), each side is self-attentively pooled, and the two
  are fused (MLP on the concatenation) into the *joint cross-attentive embedding* (B, E).
  ``use_cross_attention=false`` fuses the two document vectors instead (ablation).
* **Reciprocal dual contrastive objective**: InfoNCE(audio_doc, joint) + InfoNCE(text_doc, joint)
  (:mod:`~sonalign.models.losses.reciprocal`); ``use_joint=false`` replaces it by a direct
  InfoNCE(audio_doc, text_doc) (ablation). Every contrastive term treats rows of one positive
  group (``groups``: same class or caption) as positives of each other.
* **CKA loss** (:mod:`~sonalign.models.losses.cka`): as in the paper, between each modality and
  the joint embedding, ``1/2 [(1 - CKA(a, j)) + (1 - CKA(t, j))]`` (``cka_pairs="modality_joint"``);
  ``cka_pairs="audio_text"`` uses ``1 - CKA(a, t)`` instead.
* **Information-balance regulariser** (:mod:`~sonalign.models.losses.info_balance`): squared gap
  between InfoNCE estimates of I(audio; joint) and I(text; joint).
* **Document-level classifier** (the paper's downstream task): a mixture of experts over the
  three document representations [audio, text, joint] (:class:`DocumentClassifier`: one linear
  expert per representation, a softmax gate over the experts that are present), trained with
  cross-entropy when the batch has ``labels`` (weight ``classifier_weight``; ``use_classifier``
  switches it off). ``classify(batch)`` returns its logits. A text is used only when the batch says
  it is real (``text_from_label`` present and False): a prompt rendered from the row's own label
  would hand the head its answer, so on label-only data sets the text and joint experts are
  absent and the head classifies from audio. In training, ``classifier_modality_dropout`` of the
  rows with real text are also classified from audio alone, so an audio-only ``classify`` (the
  evaluator's probe gives audio alone) is in-distribution. The paper's expert and gate sizes are
  not given to us; one linear layer each is our choice.

Retrieval (documented choice): ``encode_audio`` / ``encode_text`` return the normalised document
embeddings and ``similarity`` is their cosine, computable per item for a vector index; the joint
embedding needs both items of a pair (cross-attention), so it cannot score a query against every
clip cheaply. The paper's objective only ties audio->joint and text->joint (and CKA matches batch
geometry), so it never trains the cosine that retrieval scores. We therefore add the direct term
``direct_weight * InfoNCE(audio_doc, text_doc)`` (loss ``direct``; the configs' default is on; its
weight was chosen on the nonverbal and emodb validation splits, see docs/results.md). ``direct_weight=0``
gives the paper's objective alone (ablation). The joint embedding is what the document classifier
reads.

Data parallelism: the reciprocal InfoNCE terms take their negatives from the global batch (through
:func:`~sonalign.models.losses.infonce.info_nce`); CKA and the information-balance term are batch
statistics computed on each process's shard, so a multi-process step equals a one-process step
only with those two off.

The paper's text available to us fixes the components and objectives but not layer sizes or the
exact MI estimator; those are our choices, set in ``configs/hilbert.json``.

``text_input`` ("text_segments", default, the paper's input; or "text_tokens") sets this instance's
``required_inputs``. If a batch lacks that key, the other one is used, then ``text_embedding`` as
a one-segment document.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.errors import ConfigError
from sonalign.models.base import FROZEN_ENCODER_DEFAULTS, AlignmentModel, resolve_config
from sonalign.models.components.cross_attention import BidirectionalCrossAttention
from sonalign.models.components.pooling import SelfAttentivePooling, frobenius_penalty
from sonalign.models.components.sequence import SequenceEncoder
from sonalign.models.losses.cka import CKALoss
from sonalign.models.losses.info_balance import InfoBalanceLoss
from sonalign.models.losses.infonce import InfoNCELoss
from sonalign.models.losses.reciprocal import ReciprocalDualContrastiveLoss

DEFAULTS: dict[str, Any] = {
    **FROZEN_ENCODER_DEFAULTS,
    "text_input": "text_segments",
    "use_segment_transformer": True,
    "segment_layers": 1,
    "segment_heads": 4,
    "pool_heads": 4,
    "pool_hidden": 128,
    "attn_penalty_weight": 0.01,
    "use_joint": True,
    "use_cross_attention": True,
    "cross_heads": 4,
    "reciprocal_weight": 1.0,
    "direct_weight": 1.0,
    "use_cka": True,
    "cka_weight": 0.1,
    "cka_pairs": "modality_joint",
    "use_info_balance": True,
    "info_balance_weight": 0.1,
    "info_balance_temperature": 0.1,
    "use_classifier": True,
    "num_classes": 7,
    "classifier_weight": 1.0,
    "classifier_modality_dropout": 0.3,
}
_TEXT_KEYS = ("text_segments", "text_tokens")


def _validate(config: dict[str, Any]) -> dict[str, Any]:
    cfg = resolve_config(config.get("method", "hilbert"), DEFAULTS, config)
    if cfg["text_input"] not in _TEXT_KEYS:
        raise ConfigError(f"hilbert: text_input must be one of {_TEXT_KEYS}, not {cfg['text_input']!r}")
    if cfg["cka_pairs"] not in ("modality_joint", "audio_text"):
        raise ConfigError(f"hilbert: cka_pairs must be 'modality_joint' or 'audio_text', not {cfg['cka_pairs']!r}")
    if not cfg["use_joint"]:
        if cfg["use_info_balance"]:
            raise ConfigError("hilbert: use_info_balance needs use_joint (it balances information flow into the joint space)")
        if cfg["use_cka"] and cfg["cka_pairs"] == "modality_joint":
            raise ConfigError("hilbert: cka_pairs='modality_joint' needs use_joint; set cka_pairs='audio_text'")
    return cfg


class DocumentClassifier(nn.Module):
    """Mixture of experts over document representations (HILBERT's classifier over [audio, text, joint]).

    ``forward(views [(B, E)] * M, present (B, M) bool) -> logits (B, C)``: expert m is
    ``Linear(LayerNorm(view_m))``; the gate is a softmax over the present experts of
    ``W_g [view_1 * present_1, ..., view_M * present_M]``; logits = sum_m gate_m expert_m. An absent
    view contributes nothing (zeroed in the gate's input, -inf in its logits).
    """

    def __init__(self, dim: int, num_classes: int, num_views: int = 3, dropout: float = 0.1):
        super().__init__()
        self.experts = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Dropout(dropout), nn.Linear(dim, num_classes)) for _ in range(num_views))
        self.gate = nn.Linear(num_views * dim, num_views)

    def forward(self, views: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        present = present.bool()
        gate_in = torch.cat([torch.where(present[:, m, None], v, torch.zeros_like(v)) for m, v in enumerate(views)], dim=-1)
        gate = torch.softmax(self.gate(gate_in).masked_fill(~present, float("-inf")), dim=-1)  # audio is always present
        logits = torch.stack([expert(v) for expert, v in zip(self.experts, views)], dim=1)  # (B, M, C)
        return (gate.unsqueeze(-1) * torch.where(present[..., None], logits, torch.zeros_like(logits))).sum(1)


class Hilbert(AlignmentModel):
    """HILBERT document encoder with reciprocal (audio->joint, text->joint) contrastive training."""

    required_inputs = ("audio_segments", "text_segments")
    #: Read when present: classifier targets, positive groups, which texts are label prompts.
    optional_inputs = ("labels", "groups", "text_from_label")
    defaults = DEFAULTS

    def __init__(self, config: dict[str, Any]):
        cfg = _validate(config)
        super().__init__(cfg)
        self.required_inputs = ("audio_segments", cfg["text_input"])
        e, dropout = cfg["embed_dim"], cfg["dropout"]
        layers = cfg["segment_layers"] if cfg["use_segment_transformer"] else 0
        self.audio_encoder = SequenceEncoder(cfg["audio_dim"], e, layers, cfg["segment_heads"], dropout=dropout)
        self.text_encoder = SequenceEncoder(cfg["text_dim"], e, layers, cfg["segment_heads"], dropout=dropout)
        pool = dict(hidden=cfg["pool_hidden"], heads=cfg["pool_heads"], out_dim=e)
        self.audio_pool = SelfAttentivePooling(e, **pool)
        self.text_pool = SelfAttentivePooling(e, **pool)

        if cfg["use_joint"]:
            if cfg["use_cross_attention"]:
                self.cross = BidirectionalCrossAttention(e, cfg["cross_heads"], dropout)
                self.joint_pool_audio = SelfAttentivePooling(e, **pool)
                self.joint_pool_text = SelfAttentivePooling(e, **pool)
            self.fuse = nn.Sequential(nn.Linear(2 * e, e), nn.GELU(), nn.Dropout(dropout), nn.Linear(e, e))
            self.reciprocal = ReciprocalDualContrastiveLoss(cfg["init_temperature"], cfg["direct_weight"])
        else:
            self.direct = InfoNCELoss(cfg["init_temperature"])
        self.cka = CKALoss() if cfg["use_cka"] else None
        self.info_balance = InfoBalanceLoss(cfg["info_balance_temperature"]) if cfg["use_info_balance"] else None
        self.classifier = DocumentClassifier(e, cfg["num_classes"], 3 if cfg["use_joint"] else 2, dropout) if cfg["use_classifier"] else None

    # ------------------------------------------------------------------ encoders
    def _encode(
        self, x: torch.Tensor, mask: torch.Tensor | None, encoder: SequenceEncoder, pool: SelfAttentivePooling
    ) -> dict[str, torch.Tensor]:
        h, mask = encoder(x, mask)
        doc, attention = pool(h, mask)
        # attention is returned as (B, S, r): sequence axis on dim 1, like "sequence" and "mask", so
        # encode outputs of batches with different S can be padded and concatenated along dim 1.
        return {
            "embedding": F.normalize(doc, dim=-1),
            "pooled": doc,
            "sequence": h,
            "mask": mask,
            "attention": attention.transpose(1, 2),
        }

    def _text_input(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        preferred = self.config["text_input"]
        for key in (preferred, *(k for k in _TEXT_KEYS if k != preferred)):
            if key in batch:
                return batch[key], batch.get(f"{key}_mask")
        if "text_embedding" in batch:
            return batch["text_embedding"].unsqueeze(1), None
        raise KeyError(f"hilbert needs one of {_TEXT_KEYS} or 'text_embedding' in the batch")

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._encode(batch["audio_segments"], batch.get("audio_segments_mask"), self.audio_encoder, self.audio_pool)

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, mask = self._text_input(batch)
        return self._encode(x, mask, self.text_encoder, self.text_pool)

    def joint(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Joint cross-attentive embedding of row-aligned (audio, text) documents: {"embedding" (B, E), "attentions"}."""
        if not self.config["use_joint"]:
            raise RuntimeError("this HILBERT was built with use_joint=false")
        attentions: list[torch.Tensor] = []
        if self.config["use_cross_attention"]:
            a2t, t2a = self.cross(audio["sequence"], audio["mask"], text["sequence"], text["mask"])
            pa, att_a = self.joint_pool_audio(a2t, audio["mask"])
            pt, att_t = self.joint_pool_text(t2a, text["mask"])
            attentions = [att_a, att_t]
        else:
            pa, pt = audio["pooled"], text["pooled"]
        joint = self.fuse(torch.cat([pa, pt], dim=-1))
        return {"embedding": F.normalize(joint, dim=-1), "pooled": joint, "attentions": attentions}

    # ------------------------------------------------------------------ document classifier
    @staticmethod
    def _real_text(batch: dict[str, torch.Tensor], n: int, device: torch.device) -> torch.Tensor:
        """(B,) bool: rows whose text may reach the classifier (the batch says it is not a label prompt)."""
        if "text_from_label" not in batch or not any(k in batch for k in (*_TEXT_KEYS, "text_embedding")):
            return torch.zeros(n, dtype=torch.bool, device=device)
        return ~batch["text_from_label"].bool().to(device)

    def _classify(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor] | None, joint: dict[str, torch.Tensor] | None,
                  real_text: torch.Tensor) -> torch.Tensor:
        a = audio["pooled"]
        views = [a, text["pooled"] if text is not None else torch.zeros_like(a)]
        if self.config["use_joint"]:
            views.append(joint["pooled"] if joint is not None else torch.zeros_like(a))
        present = torch.stack([torch.ones_like(real_text)] + [real_text] * (len(views) - 1), dim=1)
        return self.classifier(views, present)

    def classify(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits (B, num_classes); the text (and joint) experts join only for rows whose text the
        batch marks as real (``text_from_label`` False), otherwise the audio document alone decides."""
        if self.classifier is None:
            raise RuntimeError("hilbert: this model was built with use_classifier=false")
        audio = self.encode_audio(batch)
        n = audio["pooled"].shape[0]
        real = self._real_text(batch, n, audio["pooled"].device)
        if not bool(real.any()):
            return self._classify(audio, None, None, real)
        text = self.encode_text(batch)
        joint = self.joint(audio, text) if self.config["use_joint"] else None
        return self._classify(audio, text, joint, real)

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        a, t = audio["embedding"], text["embedding"]
        losses: dict[str, torch.Tensor] = {}
        attentions = [audio["attention"].transpose(1, 2), text["attention"].transpose(1, 2)]  # (B, r, S)
        groups = batch.get("groups")
        joint = None
        if cfg["use_joint"]:
            joint = self.joint(audio, text)
            j = joint["embedding"]
            attentions += joint["attentions"]
            rec = self.reciprocal(a, t, j, groups)
            losses["reciprocal_audio"] = cfg["reciprocal_weight"] * rec["audio_joint"]
            losses["reciprocal_text"] = cfg["reciprocal_weight"] * rec["text_joint"]
            if "audio_text" in rec:
                losses["direct"] = rec["audio_text"]
        else:
            losses["contrastive"] = self.direct(a, t, groups)
        if self.cka is not None:
            if cfg["cka_pairs"] == "modality_joint":
                cka = 0.5 * (self.cka(a, j) + self.cka(t, j))
            else:
                cka = self.cka(a, t)
            losses["cka"] = cfg["cka_weight"] * cka
        if self.info_balance is not None:
            losses["info_balance"] = cfg["info_balance_weight"] * self.info_balance(a, t, j)
        if cfg["attn_penalty_weight"] > 0 and cfg["pool_heads"] > 1:
            penalty = torch.stack([frobenius_penalty(att) for att in attentions]).mean()
            losses["attn_penalty"] = cfg["attn_penalty_weight"] * penalty
        if self.classifier is not None and cfg["classifier_weight"] > 0 and "labels" in batch:
            real = self._real_text(batch, a.shape[0], a.device)
            if self.training and cfg["classifier_modality_dropout"] > 0:
                real = real & (torch.rand(real.shape, device=real.device) >= cfg["classifier_modality_dropout"])
            logits = self._classify(audio, text, joint, real)
            losses["classification"] = cfg["classifier_weight"] * F.cross_entropy(logits, batch["labels"].long())
        return losses
