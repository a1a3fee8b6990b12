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
* **Hard-negative guided contrastive loss** (``losses/hard_negative.py``) on the L2-normalised global
  embeddings, ``hard_negative_beta`` = 0.15 as the reference code (0 gives plain InfoNCE).
* **Fine-grained scores.** ``frame_scores(audio, text)`` is the paper's text-to-audio grounding
  read-out: cosine between every L2-normalised frame embedding of a clip and a text's global
  (codebook) embedding, shape (Na, Nt, T); padded frames are ``-inf`` (so ``max``/``sigmoid``/top-k
  ignore them; apply ``torch.sigmoid`` for the reference code's frame probabilities).
  ``similarity`` is the coarse cosine of the global embeddings (base class).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.models.base import AlignmentModel
from sonalign.models.components.codebook import SharedCodebook
from sonalign.models.components.locality import LocalityAwareBlock
from sonalign.models.components.projection import masked_mean
from sonalign.models.components.transformer_blocks import TransformerBlock, TransformerStack, sinusoidal_positions, zero_padded
from sonalign.models.losses.hard_negative import HardNegativeInfoNCELoss


def _token_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The reference code's frame/word projection: LN, Linear, GELU, LN, Linear."""
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim), nn.GELU(), nn.LayerNorm(out_dim), nn.Linear(out_dim, out_dim))


def _mask_of(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    x = batch[key]
    mask = batch.get(f"{key}_mask")
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()


class MGAClap(AlignmentModel):
    """Shared-codebook global embeddings, locality-aware frame features, hard-negative contrastive loss."""

    required_inputs = ("audio_frames", "text_tokens")

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        c = self.config
        audio_dim, text_dim = c.get("audio_dim", 512), c.get("text_dim", 384)
        dim, embed = c.get("dim", 256), c.get("embed_dim", 256)
        heads, ff, drop = c.get("num_heads", 4), c.get("ff_mult", 4), c.get("dropout", 0.1)
        self.audio_in = nn.Linear(audio_dim, dim)
        self.audio_blocks = TransformerStack(dim, c.get("audio_layers", 1), heads, ff, drop)
        if c.get("use_locality_block", True):
            self.audio_last: nn.Module = LocalityAwareBlock(dim, heads, c.get("locality_mode", "value"), c.get("locality_window", 2), ff, drop)
        else:
            self.audio_last = TransformerBlock(dim, heads, ff, drop)
        self.frame_proj = _token_mlp(dim, embed)
        self.text_in = nn.Linear(text_dim, dim)
        self.text_blocks = TransformerStack(dim, c.get("text_layers", 1), heads, ff, drop)
        self.word_proj = _token_mlp(dim, embed)
        self.codebook = (
            SharedCodebook(c.get("num_codes", 1024), embed, c.get("codebook_temperature", 100.0), c.get("sparsify", "sparsemax"), c.get("top_k", 32))
            if c.get("use_codebook", True)
            else None
        )
        self.contrastive = HardNegativeInfoNCELoss(beta=c.get("hard_negative_beta", 0.15), init_temperature=c.get("init_temperature", 0.07))
        self.contrastive_weight = float(c.get("contrastive_weight", 1.0))

    def _global(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.codebook is None:
            return F.normalize(masked_mean(feats, mask), dim=-1), None
        g, w = self.codebook(feats, mask)
        return F.normalize(g, dim=-1), w

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = _mask_of(batch, "audio_frames")
        h = self.audio_in(batch["audio_frames"])
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        h = zero_padded(h, mask)
        for block in self.audio_blocks.blocks:
            h = block(h, mask)
        h = self.audio_last(h, mask)
        frames = zero_padded(self.frame_proj(h), mask)
        g, w = self._global(frames, mask)
        out = {"embedding": g, "frames": zero_padded(F.normalize(frames, dim=-1), mask), "frames_mask": mask}
        if w is not None:
            out["code_weights"] = w
        return out

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = _mask_of(batch, "text_tokens")
        h = zero_padded(self.text_in(batch["text_tokens"]), mask)
        for block in self.text_blocks.blocks:
            h = block(h, mask)
        words = zero_padded(self.word_proj(h), mask)
        g, w = self._global(words, mask)
        out = {"embedding": g, "words": zero_padded(F.normalize(words, dim=-1), mask), "words_mask": mask}
        if w is not None:
            out["code_weights"] = w
        return out

    def frame_scores(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Frame-level text-audio scores (Na, Nt, T): cos(frame_t of clip i, global text j); padded frames = -inf.

        ``audio``/``text`` are either ``encode_audio``/``encode_text`` outputs or raw batches (encoded
        here). For one pair, ``frame_scores(a, t)[0, 0, :n_valid]`` is its (T,) grounding curve.
        """
        if "frames" not in audio:
            audio = self.encode_audio(audio)
        if "embedding" not in text:
            text = self.encode_text(text)
        scores = torch.einsum("ate,be->abt", audio["frames"], text["embedding"])
        return scores.masked_fill(~audio["frames_mask"][:, None, :], float("-inf"))

    def compute_loss(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"contrastive": self.contrastive_weight * self.contrastive(audio["embedding"], text["embedding"])}

