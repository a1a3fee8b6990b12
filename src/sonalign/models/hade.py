"""HADE: hierarchical alignment with disentangled, confidence-weighted latent factors.

Xin, Zhu, Cheng, Yang, Zou, "Audio-text Retrieval with Transformer-based Hierarchical Alignment and
Disentangled Cross-modal Representation", Interspeech 2024 (arXiv:2409.09256).

How the implementation maps to the paper (whose objective L = L_S + alpha L_D + beta L_A adds local,
factor-level terms to the global contrastive loss; here every term has its own weight in ``weights``):

* **Two-stream transformers.** ``num_blocks`` pre-LN transformer blocks over the projected audio
  frames (``audio_frames``, sinusoidal time positions added; the frozen encoder's frames carry none)
  and ``num_blocks`` blocks over the projected text token states (``text_tokens``; MiniLM states
  already encode position). The streams never attend to each other (no cross-modal attention), so
  each side encodes alone and its outputs can go into a vector index.
* **Transformer-based hierarchical alignment (THA).** Contrastive alignment at three granularities:
  *token level* -- FILIP-style late interaction on the final token states (each text token's max
  cosine over frames, averaged; and the reverse), cross-entropy over the batch
  (``losses/hierarchical.py``); *block level* -- masked-mean pooled outputs of the intermediate blocks
  listed in ``block_levels`` (0-based), each with its own heads and InfoNCE; *sequence level* -- the
  final pooled embeddings, InfoNCE.
* **Disentangled cross-modal representation (DCR).** The final pooled state of each side is projected
  by K heads into K factor sub-spaces (``num_factors`` x ``factor_dim``), each L2-normalised; a
  decorrelation (or orthogonality) penalty between factors (``losses/disentangle.py``) keeps them
  from encoding the same thing.
* **Confidence-aware aggregation (CA).** A small gate on each side predicts a softmax confidence
  over the K factors from that side's pooled state (``c^a``, ``c^t``). The factor-level score is
  ``s_F(a, t) = sum_k w_k(a, t) cos(a_k, t_k)``, trained with a contrastive loss on s_F. The paper
  estimates a confidence per factor *pair*; to keep scoring index-friendly (no pairwise network) we
  derive the pair weight from the two sides' confidences:

  - ``confidence="geometric"`` (default): ``w_k = sqrt(c^a_k c^t_k)`` (the Bhattacharyya
    coefficient's terms; sum_k w_k <= 1 with equality iff the two confidence profiles agree, so a
    pair whose factors disagree on what matters is penalised);
  - ``confidence="product"``: ``w_k = c^a_k c^t_k / sum_j c^a_j c^t_j`` (weights sum to 1).

* **Retrieval score and flat embedding.** ``similarity = (1 - lam) cos(seq_a, seq_t) + lam s_F``
  with ``lam = factor_mix`` (0 without factors). The flat ``"embedding"`` is
  ``[sqrt(1 - lam) seq, sqrt(lam) (sqrt(c_1) f_1, ..., sqrt(c_K) f_K)]``. Its norm is exactly 1
  (unit seq, unit factors, softmax confidences), and for ``confidence="geometric"`` the dot product of
  two flat embeddings *equals* ``similarity`` -- a flat inner-product index returns exact HADE
  scores. For ``"product"`` the dot product is the geometric score, a candidate-generation
  approximation; ``similarity()`` computes the exact product-weighted score (two matmuls:
  ``num = (c^a f^a) . (c^t f^t)``, ``den = c^a . c^t``), still O(Na Nt (K F)) for 1000 x 5000.

Ablations: ``use_token_level`` / ``use_block_level`` / ``use_factors`` (and the loss weights in
``weights``) switch components off; disabled components create no parameters.

Cost note: the token-level loss materialises a (B, B, T, L) similarity tensor per step (e.g. 64 x 64
x 156 frames x 30 tokens = 19 M floats); lower the batch or switch it off for long clips.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.errors import ConfigError
from sonalign.models.base import AlignmentModel
from sonalign.models.components.projection import Projection, masked_mean
from sonalign.models.components.transformer_blocks import TransformerStack, sinusoidal_positions
from sonalign.models.losses.disentangle import DisentangleLoss
from sonalign.models.losses.hierarchical import ScoreContrastiveLoss, TokenAlignmentLoss
from sonalign.models.losses.infonce import InfoNCELoss

DEFAULT_WEIGHTS = {"sequence": 1.0, "token": 0.5, "block": 0.5, "factor": 1.0, "disentangle": 0.1}


class _Stream(nn.Module):
    """Input projection + transformer blocks for one modality; returns every block's output."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, ff_mult: int, dropout: float, positions: bool):
        super().__init__()
        self.proj = Projection(in_dim, dim, dropout)
        self.blocks = TransformerStack(dim, depth, heads, ff_mult, dropout)
        self.positions = positions

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        h = self.proj(x)
        if self.positions:
            h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        return self.blocks(h, mask)


class _FactorHead(nn.Module):
    """K factor projections (one Linear, reshaped) and the confidence gate of one side."""

    def __init__(self, dim: int, num_factors: int, factor_dim: int):
        super().__init__()
        self.num_factors, self.factor_dim = num_factors, factor_dim
        self.factors = nn.Linear(dim, num_factors * factor_dim)
        self.gate = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, num_factors))

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.factors(pooled).view(-1, self.num_factors, self.factor_dim)
        return F.normalize(f, dim=-1), F.softmax(self.gate(pooled), dim=-1)


class HADE(AlignmentModel):
    """Two-stream transformers, token/block/sequence alignment, K confidence-weighted latent factors."""

    required_inputs = ("audio_frames", "text_tokens")

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        c = self.config
        audio_dim, text_dim = c.get("audio_dim", 512), c.get("text_dim", 384)
        dim, embed = c.get("dim", 256), c.get("embed_dim", 256)
        depth, heads = c.get("num_blocks", 4), c.get("num_heads", 4)
        ff, drop = c.get("ff_mult", 4), c.get("dropout", 0.1)
        temp = c.get("init_temperature", 0.07)
        self.weights = {**DEFAULT_WEIGHTS, **c.get("weights", {})}
        if set(self.weights) != set(DEFAULT_WEIGHTS):
            raise ConfigError(f"hade: unknown loss weights {sorted(set(self.weights) - set(DEFAULT_WEIGHTS))}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.use_token = bool(c.get("use_token_level", True)) and self.weights["token"] > 0
        self.use_factors = bool(c.get("use_factors", True))
        self.block_levels: list[int] = list(c.get("block_levels", [1, 2])) if c.get("use_block_level", True) and self.weights["block"] > 0 else []
        for level in self.block_levels:
            if not 0 <= level < depth:
                raise ConfigError(f"hade: block level {level} outside 0..{depth - 1}")
        self.confidence_mode = c.get("confidence", "geometric")
        if self.confidence_mode not in ("geometric", "product"):
            raise ConfigError(f"hade: confidence must be 'geometric' or 'product', got {self.confidence_mode!r}")
        self.factor_mix = float(c.get("factor_mix", 0.5)) if self.use_factors else 0.0

        self.audio_stream = _Stream(audio_dim, dim, depth, heads, ff, drop, positions=True)
        self.text_stream = _Stream(text_dim, dim, depth, heads, ff, drop, positions=False)
        self.audio_seq = nn.Linear(dim, embed)
        self.text_seq = nn.Linear(dim, embed)
        self.seq_loss = InfoNCELoss(temp)
        if self.use_token:
            self.audio_token = nn.Linear(dim, embed)
            self.text_token = nn.Linear(dim, embed)
            self.token_loss = TokenAlignmentLoss(temp)
        if self.block_levels:
            self.audio_block = nn.ModuleList(nn.Linear(dim, embed) for _ in self.block_levels)
            self.text_block = nn.ModuleList(nn.Linear(dim, embed) for _ in self.block_levels)
            self.block_losses = nn.ModuleList(InfoNCELoss(temp) for _ in self.block_levels)
        if self.use_factors:
            k, f = c.get("num_factors", 8), c.get("factor_dim", 32)
            self.audio_factors = _FactorHead(dim, k, f)
            self.text_factors = _FactorHead(dim, k, f)
            if self.weights["factor"] > 0:
                self.factor_loss = ScoreContrastiveLoss(temp)
            self.disentangle = DisentangleLoss(c.get("disentangle_mode", "decorrelation"))

    # ----------------------------------------------------------------------------------- encoders
    def _encode(self, stream: _Stream, seq: nn.Linear, token: str, block: str, factors: str, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = stream(x, mask)
        pooled = masked_mean(outs[-1], mask)
        out = {"seq": F.normalize(seq(pooled), dim=-1), "mask": mask}
        if self.use_token:
            out["tokens"] = F.normalize(getattr(self, token)(outs[-1]), dim=-1)
        for i, level in enumerate(self.block_levels):
            out[f"block{level}"] = F.normalize(getattr(self, block)[i](masked_mean(outs[level], mask)), dim=-1)
        if self.use_factors:
            out["factors"], out["confidence"] = getattr(self, factors)(pooled)
            flat = (out["confidence"].sqrt().unsqueeze(-1) * out["factors"]).flatten(1)
            out["embedding"] = torch.cat([math.sqrt(1 - self.factor_mix) * out["seq"], math.sqrt(self.factor_mix) * flat], dim=-1)
        else:
            out["embedding"] = out["seq"]
        return out

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["audio_frames"]
        mask = batch.get("audio_frames_mask")
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        return self._encode(self.audio_stream, self.audio_seq, "audio_token", "audio_block", "audio_factors", x, mask)

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["text_tokens"]
        mask = batch.get("text_tokens_mask")
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        return self._encode(self.text_stream, self.text_seq, "text_token", "text_block", "text_factors", x, mask)

    # --------------------------------------------------------------------------------- similarity
    def factor_similarity(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        """Confidence-aggregated factor score s_F (Na, Nt), without materialising (Na, Nt, K)."""
        ca, ct = audio["confidence"], text["confidence"]
        if self.confidence_mode == "geometric":
            fa = (ca.sqrt().unsqueeze(-1) * audio["factors"]).flatten(1)
            ft = (ct.sqrt().unsqueeze(-1) * text["factors"]).flatten(1)
            return fa @ ft.T
        num = (ca.unsqueeze(-1) * audio["factors"]).flatten(1) @ (ct.unsqueeze(-1) * text["factors"]).flatten(1).T
        return num / (ca @ ct.T).clamp(min=1e-12)

    def similarity(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        seq = audio["seq"] @ text["seq"].T
        if not self.use_factors:
            return seq
        return (1 - self.factor_mix) * seq + self.factor_mix * self.factor_similarity(audio, text)

    # ------------------------------------------------------------------------------------- losses
    def compute_loss(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        w = self.weights
        losses = {"sequence": w["sequence"] * self.seq_loss(audio["seq"], text["seq"])}
        if self.use_token:
            losses["token"] = w["token"] * self.token_loss(audio["tokens"], audio["mask"], text["tokens"], text["mask"])
        if self.block_levels:
            block = torch.stack([loss(audio[f"block{lv}"], text[f"block{lv}"]) for lv, loss in zip(self.block_levels, self.block_losses)])
            losses["block"] = w["block"] * block.mean()
        if self.use_factors:
            if w["factor"] > 0:
                losses["factor"] = w["factor"] * self.factor_loss(self.factor_similarity(audio, text))
            if w["disentangle"] > 0:
                losses["disentangle"] = w["disentangle"] * self.disentangle(audio["factors"], text["factors"])
        return losses
