"""CALM: contrastive aligned audio-language multirate and multimodal representations.

Sachidananda, Tseng, Marchi, Kajarekar, Georgiou, "CALM: Contrastive Aligned Audio-Language
Multirate and Multimodal Representations", arXiv:2202.03587, 2022.

How the implementation maps to the paper:

* **SpecTran** (``components/spectran.py``), trained from scratch on ``audio_mel`` (B, T, M):
  time x mel patches, linear patch embedding, positions, CLS token, transformer encoder.
* **CALP** (contrastive audio-language pre-training): InfoNCE between SpecTran's CLS embedding
  (projected) and the frozen sentence embedding ``text_embedding`` (projected) -- both land in one
  joint space. Rows of one positive group (``groups``: same class or caption) are positives of
  each other. This space is what ``encode_audio``/``encode_text`` return as ``"embedding"``, so
  audio-text retrieval and the vector index work on it.
* **Multimodal transformer**: a CLS token, SpecTran's patch outputs (audio tokens, modality type 0)
  and the lexical tokens (``text_tokens`` linearly projected, modality type 1) go through a joint
  transformer; the two token streams keep their own rates (patches vs. word pieces: the paper's
  "multirate"). The normalised CLS output is the **CALM embedding**. The paper initialises this
  transformer from the pretrained language model and places audio in its input-embedding space; our
  text encoder is frozen and only its output states are cached, so here the multimodal transformer
  is small and trained from scratch over the projected token states.
* **Multimodal pre-training of that transformer**: the paper pre-trains it with masked-token
  objectives before supervised fine-tuning. We implement masked multimodal modelling on what we
  have (``masked_modelling_loss``): a fraction ``mask_prob`` of the audio patches is masked at
  SpecTran's input and their raw log-mel patches are regressed (MAE-style targets), and the same
  fraction of lexical token states is masked at the multimodal input and regressed. Lexical MLM
  over a vocabulary is impossible without token ids. In eval mode the masked positions are a fixed
  stride, so validation losses are deterministic.
* **Lexical input = real text only.** The paper's lexical stream is the utterance's transcript.
  On label-only data sets the caption is a prompt rendered from the class label ("a person
  speaking with anger"; batch key ``text_from_label``): such rows get *no* lexical tokens in the
  multimodal transformer (their lexical part is masked out, as for audio without a transcript),
  so neither the masked lexical modelling nor anything else trains on prompt tokens there.
* **Emotion classifier**: a linear head (``num_classes``, default 7) on the **audio-only** CALM
  embedding (the multimodal transformer over CLS + audio tokens), trained with cross-entropy when
  ``labels`` is in the batch (``optional_inputs``); ``classify(batch)`` returns its logits from the
  audio alone, whatever text the batch holds. Deviation from the paper, whose emotion classifier
  reads audio *and* the transcript's lexical tokens: here a caption in the batch may be the label's
  own prompt, and a head fed that prompt learns to read the answer from it (trained that way, it
  followed the prompt and ignored the audio); the evaluator also gives the head audio alone. So the
  head is trained and evaluated on exactly what it will see: audio. The evaluator's linear probe
  reads the same CALM embedding (``probe_output = "calm_embedding"``), as the paper's downstream
  tasks do.

``encode_audio`` reads audio only. It returns the CALP embedding and also ``"calm_embedding"``: the
multimodal transformer run on the audio tokens alone (the lexical part of the sequence is simply
absent -- attention and pooling see CLS + audio tokens, so no placeholder text is needed).
``encode_text`` returns the projected sentence embedding in the CALP space (plus the projected
lexical tokens used by the multimodal transformer when ``text_tokens`` is present).

Ablations: ``weights.calp`` / ``weights.masked`` / ``weights.classification`` = 0 drop a loss;
``use_multimodal=false`` removes the multimodal transformer (the classifier then reads SpecTran's
CLS); ``use_classifier=false`` removes the head.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.errors import ConfigError
from sonalign.models.base import AlignmentModel
from sonalign.models.components.projection import Projection
from sonalign.models.components.spectran import SpecTran
from sonalign.models.components.transformer_blocks import TransformerStack, zero_padded
from sonalign.models.losses.infonce import InfoNCELoss

DEFAULT_WEIGHTS = {"calp": 1.0, "masked": 0.5, "classification": 1.0}


#: Every configuration key and its default (``configs/calm.json`` overrides some).
DEFAULTS: dict[str, Any] = {
    "dim": 128,
    "embed_dim": 128,
    "text_dim": 384,
    "num_heads": 4,
    "ff_mult": 4,
    "dropout": 0.1,
    "weights": dict(DEFAULT_WEIGHTS),
    "mask_prob": 0.15,
    "n_mels": 64,
    "patch_time": 8,
    "patch_mel": 16,
    "spectran_layers": 2,
    "init_temperature": 0.07,
    "use_multimodal": True,
    "mm_layers": 2,
    "num_classes": 7,
    "use_classifier": True,
}


class CALM(AlignmentModel):
    """SpecTran + CALP + multimodal transformer + emotion head."""

    required_inputs = ("audio_mel", "text_embedding", "text_tokens")
    #: Read when present: the emotion head's targets, positive groups, which texts are label prompts.
    optional_inputs = ("labels", "groups", "text_from_label")
    defaults = DEFAULTS
    #: The evaluator's linear probe reads the CALM embedding, as the paper's downstream tasks do.
    probe_output = "calm_embedding"

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        c = self.config
        dim, embed, text_dim = c["dim"], c["embed_dim"], c["text_dim"]
        heads, ff, drop = c["num_heads"], c["ff_mult"], c["dropout"]
        self.weights = {**DEFAULT_WEIGHTS, **c["weights"]}
        if set(self.weights) != set(DEFAULT_WEIGHTS):
            raise ConfigError(f"calm: unknown loss weights {sorted(set(self.weights) - set(DEFAULT_WEIGHTS))}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.mask_prob = float(c["mask_prob"])
        self.spectran = SpecTran(c["n_mels"], c["patch_time"], c["patch_mel"], dim, c["spectran_layers"], heads, ff, drop)
        self.audio_proj = Projection(dim, embed, drop)
        self.text_proj = Projection(text_dim, embed, drop)
        self.calp_loss = InfoNCELoss(c["init_temperature"])
        self.use_multimodal = bool(c["use_multimodal"])
        if self.use_multimodal:
            self.lexical_proj = nn.Linear(text_dim, dim)
            self.modality = nn.Embedding(2, dim)
            self.mm_cls = nn.Parameter(torch.randn(dim) * 0.02)
            self.mm = TransformerStack(dim, c["mm_layers"], heads, ff, drop)
            self.mm_norm = nn.LayerNorm(dim)
            if self.weights["masked"] > 0:
                self.audio_mask_token = nn.Parameter(torch.randn(dim) * 0.02)
                self.lexical_mask_token = nn.Parameter(torch.randn(dim) * 0.02)
                self.audio_recon = nn.Linear(dim, self.spectran.patch_time * self.spectran.patch_mel)
                self.lexical_recon = nn.Linear(dim, text_dim)
        self.classifier = (
            nn.Sequential(nn.Dropout(drop), nn.Linear(dim, c["num_classes"])) if c["use_classifier"] else None
        )

    # ------------------------------------------------------------------------ multimodal transformer
    def _mm_inputs(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """[CLS] + audio tokens (+ lexical tokens) with modality-type embeddings; returns (inputs, mask)."""
        a, am = audio["tokens"], audio["tokens_mask"]
        b = a.shape[0]
        parts, masks = [self.mm_cls.expand(b, 1, -1), a], [am.new_ones(b, 1), am]
        if text is not None and "tokens" in text:
            parts.append(text["tokens"])
            masks.append(text["tokens_mask"])
        raw, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        modality = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
        modality[:, 1 + a.shape[1]:] = 1
        return raw + self.modality(modality), mask

    def calm_embedding(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Un-normalised CALM representation (B, dim) from encoded audio (and lexical tokens if given)."""
        if not self.use_multimodal:
            return audio["cls"]
        x, mask = self._mm_inputs(audio, text)
        return self.mm_norm(self.mm(x, mask)[-1][:, 0])

    # -------------------------------------------------------------------------------------- encoders
    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        st = self.spectran(batch["audio_mel"], batch.get("audio_mel_mask"))
        out = {"embedding": F.normalize(self.audio_proj(st["cls"]), dim=-1), "cls": st["cls"], "tokens": st["tokens"], "tokens_mask": st["tokens_mask"]}
        raw = self.calm_embedding(out)  # audio only: CLS + audio tokens
        out["calm_embedding"], out["calm_raw"] = F.normalize(raw, dim=-1), raw
        return out

    def _lexical(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Projected lexical tokens; rows whose text is a label prompt (``text_from_label``) get none."""
        tokens = batch["text_tokens"]
        mask = batch.get("text_tokens_mask")
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device) if mask is None else mask.bool()
        if "text_from_label" in batch:
            mask = mask & ~batch["text_from_label"].bool().to(mask.device)[:, None]
        return {"tokens": zero_padded(self.lexical_proj(tokens), mask), "tokens_mask": mask, "raw_tokens": tokens}

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"embedding": F.normalize(self.text_proj(batch["text_embedding"]), dim=-1)}
        if self.use_multimodal and "text_tokens" in batch:
            out.update(self._lexical(batch))
        return out

    def classify(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Emotion logits (B, num_classes) from the audio-only CALM embedding (text in the batch is ignored)."""
        if self.classifier is None:
            raise RuntimeError("calm: this model was built with use_classifier=false")
        st = self.spectran(batch["audio_mel"], batch.get("audio_mel_mask"))
        return self.classifier(self.calm_embedding(st))

    # ---------------------------------------------------------------------------------------- losses
    def _choose_masked(self, valid: torch.Tensor) -> torch.Tensor:
        """Positions to mask among ``valid`` ones: Bernoulli(mask_prob) in training, a fixed stride in eval."""
        if self.training:
            pick = torch.rand(valid.shape, device=valid.device) < self.mask_prob
        else:
            stride = max(1, round(1.0 / max(self.mask_prob, 1e-6)))
            pick = (torch.arange(valid.shape[1], device=valid.device) % stride == stride // 2).expand_as(valid)
        return pick & valid

    def masked_modelling_loss(self, batch: dict[str, torch.Tensor], audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked multimodal modelling with fixed, data-given targets (no collapse possible).

        Audio: chosen patches are replaced by a learned [MASK] at SpecTran's *input* (so no other token
        has seen them) and the multimodal transformer regresses the raw log-mel patch, normalised per
        patch (MAE's normalised-pixel target; He et al., CVPR 2022). Lexical: chosen token states are
        replaced by a [MASK] at the multimodal input and the frozen token state (layer-normalised) is
        regressed. The frozen states are contextual, so this lexical task is easier than true MLM.
        Loss: mean squared error, averaged over the two modalities.
        """
        picked_a = self._choose_masked(audio["tokens_mask"])
        st = self.spectran(batch["audio_mel"], batch.get("audio_mel_mask"), replace=picked_a, replacement=self.audio_mask_token)
        lexical = text if "tokens" in text else None
        picked_t = None
        if lexical is not None:
            picked_t = self._choose_masked(lexical["tokens_mask"])
            lexical = {**lexical, "tokens": torch.where(picked_t.unsqueeze(-1), self.lexical_mask_token, lexical["tokens"])}
        x, mask = self._mm_inputs(st, lexical)
        h = self.mm(x, mask)[-1]
        n_audio = st["tokens"].shape[1]
        terms = []
        if picked_a.any():
            target = st["patches"][picked_a]
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
            terms.append(F.mse_loss(self.audio_recon(h[:, 1 : 1 + n_audio][picked_a]), target))
        if picked_t is not None and picked_t.any():
            target = F.layer_norm(text["raw_tokens"][picked_t], text["raw_tokens"].shape[-1:])
            terms.append(F.mse_loss(self.lexical_recon(h[:, 1 + n_audio :][picked_t]), target))
        if not terms:
            return h.sum() * 0.0
        return torch.stack(terms).mean()

    def compute_loss(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.weights
        losses: dict[str, torch.Tensor] = {}
        if w["calp"] > 0:
            losses["calp"] = w["calp"] * self.calp_loss(audio["embedding"], text["embedding"], batch.get("groups"))
        if self.use_multimodal and w["masked"] > 0:
            losses["masked"] = w["masked"] * self.masked_modelling_loss(batch, audio, text)
        if self.classifier is not None and w["classification"] > 0 and "labels" in batch:
            logits = self.classifier(audio["calm_raw"])  # audio only: the caption may be the label's prompt
            losses["classification"] = w["classification"] * F.cross_entropy(logits, batch["labels"].long())
        if not losses:  # e.g. classification-only config on an unlabelled batch
            losses["calp"] = audio["embedding"].sum() * 0.0
        return losses
