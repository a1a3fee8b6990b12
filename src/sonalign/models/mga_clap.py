"""MGA-CLAP: multi-grained audio-language alignment with a modality-shared codebook.

Li, Guo, Wang, Liu, "Advancing Multi-grained Alignment for Contrastive Language-Audio
Pre-training", ACM Multimedia 2024 (arXiv:2408.07919); reference code github.com/Ming-er/MGA-CLAP.

How the implementation maps to the paper (our audio/text encoders are frozen, so the trainable
"encoder tops" are small transformers over the cached frame and token states):

* **Audio tower.** ``audio_frames`` -> linear projection + sinusoidal time positions ->
  ``audio_layers`` regular transformer blocks -> the **locality-aware block** as the last block
  (``components/locality.py``: the q-k attention path removed, each frame keeps its own value
  projection, no FFN; ``locality_mode="window"`` is the banded-attention ablation,
  ``use_locality_block=false`` puts a regular block there) -> frame projection MLP (LN, Linear, GELU,
  LN, Linear, as the reference ``frame_proj``) -> frame embeddings.
* **Text tower.** ``text_tokens`` -> linear projection -> ``text_layers`` regular blocks -> word
  projection MLP -> word embeddings.
* **Modality-shared codebook** (``components/codebook.py``): each side's global embedding is
  ``sum_k w_k c_k`` over the SAME codewords, with ``w = sparsemax(max_t <f_t, c_k> / sqrt(E) / temperature)``
  (``sparsify`` = sparsemax | softmax | topk). ``use_codebook=false`` falls back to masked-mean
  pooling of the frame/word embeddings (the CLAP-style aggregation the paper improves on).
  **Size and temperature presets** (``codebook_preset``; explicit ``num_codes`` /
  ``codebook_temperature`` keys override them): ``"reference"`` is the reference code's 4096 codes
  at temperature 1000, tuned for its pre-training on hundreds of thousands of pairs, where the
  features grow until the sparsemax becomes sparse. With our budget (a few hundred pairs, a few
  hundred steps) such a temperature never leaves the dense regime: every code stays in the support
  and all clip embeddings become nearly the same mean codeword. ``"small-data"`` (the config's
  default) uses fewer codes at a temperature that starts sparse without collapsing onto one code
  (it was chosen by the support size reached on the nonverbal training split; docs/results.md).
  The codebook's support size (mean number of codes with non-zero weight per item, audio and
  text) is logged per epoch as ``diag_codebook_support_audio`` / ``_text``.
* **Embedding regulariser** (reference code, ``embed_regularization: true``): ``mean|e| / ||E||_F``
  on each side's batch of L2-normalised global embeddings E, added to the loss
  (``embed_reg_weight``, 1 as in the reference code; 0 = off). For unit rows this is an L1 penalty
  on the coordinates, which favours embeddings concentrated on few directions. Its unweighted value
  is logged as ``diag_embed_reg``.
* **Pooled residual** (``pooled_residual``, on by default; not in the paper, whose encoders are
  fine-tuned): the frozen encoders' pooled vectors (``audio_embedding``, ``text_embedding``) enter
  through the CLAP head and the codebook embedding is added with a zero-initialised gate
  (:mod:`~sonalign.models.components.residual`), so the global embedding does not have to be
  relearned from frames on a few hundred pairs. The codebook embedding alone (``shared_embedding``)
  keeps its own hard-negative contrastive term (``contrastive_shared``, weight ``shared_weight``),
  so the multi-grained path stays trained even when the residual already separates the pairs, and
  it is what frames are grounded against (the residual does not live in the frames' space).
* **Hard-negative guided contrastive loss** (``losses/hard_negative.py``) on the L2-normalised global
  embeddings, ``hard_negative_beta`` = 0.15 as the reference code (0 gives plain InfoNCE). Rows of
  one positive group (``groups``: same class or caption) are positives, as the reference code's
  ``sim_targets`` from sample ids, and are never weighted as hard negatives.
* **Fine-grained scores.** ``frame_scores(audio, text)`` is the paper's text-to-audio grounding
  read-out: cosine between every L2-normalised frame embedding of a clip and a text's global
  codebook embedding (``shared_embedding``: without the pooled residual, which does not live in
  the frames' space), shape (Na, Nt, T); padded frames are ``-inf`` (so ``max``/``sigmoid``/top-k
  ignore them; apply ``torch.sigmoid`` for the reference code's frame probabilities).
  ``similarity`` is the coarse cosine of the global embeddings (base class).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.errors import ConfigError
from sonalign.models.base import TRANSFORMER_DEFAULTS, AlignmentModel
from sonalign.models.components.codebook import SharedCodebook
from sonalign.models.components.locality import LocalityAwareBlock
from sonalign.models.components.projection import masked_mean
from sonalign.models.components.residual import PooledResidual
from sonalign.models.components.transformer_blocks import (
    TransformerBlock,
    TransformerStack,
    sinusoidal_positions,
    zero_padded,
)
from sonalign.models.losses.hard_negative import HardNegativeInfoNCELoss

#: Codebook size / temperature presets (see the module doc); explicit config keys override them.
CODEBOOK_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"num_codes": 4096, "codebook_temperature": 1000.0},
    "small-data": {"num_codes": 256, "codebook_temperature": 1.0},
}


def embed_regularization(embeddings: torch.Tensor) -> torch.Tensor:
    """The reference code's regulariser on a batch of global embeddings E (B, E): ``mean|E| / ||E||_F``."""
    return embeddings.abs().mean() / embeddings.pow(2).sum().sqrt().clamp_min(1e-12)


def _token_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The reference code's frame/word projection: LN, Linear, GELU, LN, Linear."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.LayerNorm(out_dim), nn.Linear(out_dim, out_dim))


def _mask_of(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    x = batch[key]
    mask = batch.get(f"{key}_mask")
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()


#: Every configuration key and its default (``configs/mga-clap.json`` overrides some).
DEFAULTS: dict[str, Any] = {
    "codebook_preset": "reference",
    "num_codes": CODEBOOK_PRESETS["reference"]["num_codes"],
    "codebook_temperature": CODEBOOK_PRESETS["reference"]["codebook_temperature"],
    **TRANSFORMER_DEFAULTS,
    "audio_layers": 1,
    "use_locality_block": True,
    "locality_mode": "value",
    "locality_window": 2,
    "text_layers": 1,
    "sparsify": "sparsemax",
    "top_k": 32,
    "use_codebook": True,
    "hard_negative_beta": 0.15,
    "contrastive_weight": 1.0,
    "embed_reg_weight": 1.0,
    "pooled_residual": True,
    "shared_weight": 1.0,
}


class MGAClap(AlignmentModel):
    """Shared-codebook global embeddings, locality-aware frame features, hard-negative contrastive loss."""

    required_inputs = ("audio_frames", "text_tokens")
    #: Read when present: positive groups for the contrastive loss.
    optional_inputs = ("groups",)
    defaults = DEFAULTS

    def __init__(self, config: dict[str, Any]):
        preset = config.get("codebook_preset", "reference")
        if preset not in CODEBOOK_PRESETS:
            raise ConfigError(f"mga_clap: codebook_preset must be one of {sorted(CODEBOOK_PRESETS)}, not {preset!r}")
        super().__init__({**CODEBOOK_PRESETS[preset], **config, "codebook_preset": preset})
        c = self.config
        audio_dim, text_dim = c["audio_dim"], c["text_dim"]
        dim, embed = c["dim"], c["embed_dim"]
        heads, ff, drop = c["num_heads"], c["ff_mult"], c["dropout"]
        self.audio_in = nn.Linear(audio_dim, dim)
        self.audio_blocks = TransformerStack(dim, c["audio_layers"], heads, ff, drop)
        if c["use_locality_block"]:
            self.audio_last: nn.Module = LocalityAwareBlock(dim, heads, c["locality_mode"], c["locality_window"], ff, drop)
        else:
            self.audio_last = TransformerBlock(dim, heads, ff, drop)
        self.frame_proj = _token_mlp(dim, embed)
        self.text_in = nn.Linear(text_dim, dim)
        self.text_blocks = TransformerStack(dim, c["text_layers"], heads, ff, drop)
        self.word_proj = _token_mlp(dim, embed)
        self.codebook = (
            SharedCodebook(c["num_codes"], embed, c["codebook_temperature"], c["sparsify"], c["top_k"])
            if c["use_codebook"]
            else None
        )
        self.contrastive = HardNegativeInfoNCELoss(beta=c["hard_negative_beta"], init_temperature=c["init_temperature"])
        self.contrastive_weight = float(c["contrastive_weight"])
        self.embed_reg_weight = float(c["embed_reg_weight"])
        self.residual: nn.ModuleDict | None = None
        if c["pooled_residual"]:
            self.required_inputs = ("audio_frames", "text_tokens", "audio_embedding", "text_embedding")
            self.residual = nn.ModuleDict({"audio": PooledResidual(audio_dim, embed, drop), "text": PooledResidual(text_dim, embed, drop)})
            self.shared_weight = float(c["shared_weight"])
            if self.shared_weight > 0:
                self.shared_contrastive = HardNegativeInfoNCELoss(beta=c["hard_negative_beta"], init_temperature=c["init_temperature"])

    def _global(self, feats: torch.Tensor, mask: torch.Tensor, frozen: torch.Tensor | None, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(retrieval embedding, shared-space embedding, code weights): the shared-space (codebook)
        embedding is what frames are grounded against; the retrieval embedding adds the pooled residual."""
        if self.codebook is None:
            g, w = masked_mean(feats, mask), None
        else:
            g, w = self.codebook(feats, mask)
        shared = F.normalize(g, dim=-1)
        if self.residual is None:
            return shared, shared, w
        if frozen is None:
            raise KeyError(f"mga_clap with pooled_residual needs '{side}_embedding' in the batch")
        return F.normalize(self.residual[side](g, frozen), dim=-1), shared, w

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = _mask_of(batch, "audio_frames")
        h = self.audio_in(batch["audio_frames"])
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        h = zero_padded(h, mask)
        for block in self.audio_blocks.blocks:
            h = block(h, mask)
        h = self.audio_last(h, mask)
        frames = zero_padded(self.frame_proj(h), mask)
        g, shared, w = self._global(frames, mask, batch.get("audio_embedding"), "audio")
        out = {"embedding": g, "shared_embedding": shared, "frames": zero_padded(F.normalize(frames, dim=-1), mask), "frames_mask": mask}
        if w is not None:
            out["code_weights"] = w
        return out

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = _mask_of(batch, "text_tokens")
        h = zero_padded(self.text_in(batch["text_tokens"]), mask)
        for block in self.text_blocks.blocks:
            h = block(h, mask)
        words = zero_padded(self.word_proj(h), mask)
        g, shared, w = self._global(words, mask, batch.get("text_embedding"), "text")
        out = {"embedding": g, "shared_embedding": shared, "words": zero_padded(F.normalize(words, dim=-1), mask), "words_mask": mask}
        if w is not None:
            out["code_weights"] = w
        return out

    def frame_scores(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Frame-level text-audio scores (Na, Nt, T): cos(frame_t of clip i, text j's shared-codebook embedding); padded frames = -inf.

        ``audio``/``text`` are either ``encode_audio``/``encode_text`` outputs or raw batches (encoded
        here). For one pair, ``frame_scores(a, t)[0, 0, :n_valid]`` is its (T,) grounding curve.
        """
        if "frames" not in audio:
            audio = self.encode_audio(audio)
        if "embedding" not in text:
            text = self.encode_text(text)
        scores = torch.einsum("ate,be->abt", audio["frames"], text.get("shared_embedding", text["embedding"]))
        return scores.masked_fill(~audio["frames_mask"][:, None, :], float("-inf"))

    def compute_loss(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        groups = batch.get("groups")
        losses = {"contrastive": self.contrastive_weight * self.contrastive(audio["embedding"], text["embedding"], groups)}
        if self.residual is not None and self.shared_weight > 0:  # the codebook path keeps its own alignment
            losses["contrastive_shared"] = self.shared_weight * self.shared_contrastive(audio["shared_embedding"], text["shared_embedding"], groups)
        if self.embed_reg_weight > 0:
            losses["embed_reg"] = self.embed_reg_weight * (embed_regularization(audio["embedding"]) + embed_regularization(text["embedding"]))
        return losses

    def diagnostics(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Codebook support size per item (audio, text), the regulariser's unweighted value, and the
        mean pairwise cosine of the batch's clip embeddings (near 1 = all clips alike)."""
        a = audio["embedding"]
        out = {"embed_reg": embed_regularization(a) + embed_regularization(text["embedding"])}
        if a.shape[0] > 1:
            sim = a @ a.T
            off = ~torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
            out["audio_mean_cosine"] = sim[off].mean()
        for side, enc in (("audio", audio), ("text", text)):
            if "code_weights" in enc:
                out[f"codebook_support_{side}"] = (enc["code_weights"] > 0).sum(-1).to(a.dtype).mean()
        return out

