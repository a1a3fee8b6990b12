"""HADE: hierarchical alignment with disentangled, confidence-weighted latent factors.

Xin, Zhu, Cheng, Yang, Zou, "Audio-text Retrieval with Transformer-based Hierarchical Alignment and
Disentangled Cross-modal Representation", Interspeech 2024 (arXiv:2409.09256).

How the implementation maps to the paper (whose objective L = L_S + alpha L_D + beta L_A adds local,
factor-level terms to the global contrastive loss; here every term has its own weight in ``weights``):

* **Hierarchy = the pretrained encoders' own levels** (``hierarchy="encoder"``, default). The paper
  aligns audio and text at several depths of its (fine-tuned) encoders. Ours are frozen, so their
  intermediate outputs are cached next to the final ones (feature setting ``with_levels``, asked for
  by this config's ``"features"``): aisfx conv blocks 2 and 3 on the final frame grid
  (``audio_frames_block2`` 128-d, ``audio_frames_block3`` 256-d; ``audio_frames`` is block 4) and
  MiniLM layers 2 and 4 of 6 (``text_tokens_layer2``, ``text_tokens_layer4``; ``text_tokens`` is
  layer 6). The keys are ``audio_levels`` / ``text_levels`` (low to high) plus the final features.
* **Two-stream transformers over the levels.** Each side has one pre-LN transformer block per level.
  Block k reads the running state plus a lateral projection of encoder level k (a CLAP projection
  head; lateral connections as in Lin et al., "Feature Pyramid Networks", CVPR 2017): block 0 sees
  the lowest level (with sinusoidal time positions on the audio side; MiniLM states carry
  positions), the last block adds the final features. So block k's output is the model's reading of
  the encoder up to level k, and the block-level alignment of block k aligns audio and text at
  that encoder depth. The streams never attend to each other (no cross-modal attention), so each
  side encodes alone and its outputs can go into a vector index. ``hierarchy="stream"`` (ablation,
  the earlier synthetic hierarchy) instead runs ``num_blocks`` blocks on the final features only
  and aligns the blocks listed in ``block_levels``.
* **Pooling follows the encoders**: audio states are max-pooled over valid frames (aisfx pools its
  frames by max), text states mean-pooled over valid tokens (MiniLM pools by mean)
  (``audio_pool`` / ``text_pool``).
* **Transformer-based hierarchical alignment (THA).** Contrastive alignment at three granularities:
  *token level* -- FILIP-style late interaction on the final token states (each text token's max
  cosine over frames, averaged; and the reverse), cross-entropy over the batch
  (``losses/hierarchical.py``); *block level* -- pooled outputs of the lower blocks, each with its own
  heads and InfoNCE; *sequence level* -- the final pooled embeddings, InfoNCE. Every contrastive term
  treats rows of one positive group (``groups``: same class or caption) as positives.
* **Pooled residual** (``pooled_residual``, on by default; not in the paper): the global state that
  the sequence and factor heads read starts as the frozen encoders' own pooled vector
  (``audio_embedding`` / ``text_embedding`` through a CLAP projection head) and the stream's pooled
  output is added with a zero-initialised gate (``components/residual.py``), so a few hundred
  pairs do not have to relearn what the frozen pooling gives.
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

Deviations and why: the encoders are frozen (only cached features exist), so the hierarchy is read
from their cached levels rather than learned inside them, and the trainable part is one block per
level; the factor-pair confidence is derived from per-side confidences (index-friendly); the pooled
residual is added for the small-data regime. With ``hierarchy="encoder"`` every batch -- training
and encoding -- needs the level keys (extract features with ``with_levels``).

Ablations: ``hierarchy``, ``use_token_level`` / ``use_block_level`` / ``use_factors``,
``pooled_residual``, ``audio_pool`` / ``text_pool`` (and the loss weights in ``weights``) switch
components off or back; disabled components create no parameters.

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
from sonalign.models.base import TRANSFORMER_DEFAULTS, AlignmentModel
from sonalign.models.components.projection import Projection, masked_pool
from sonalign.models.components.residual import PooledResidual
from sonalign.models.components.transformer_blocks import (
    TransformerStack,
    sinusoidal_positions,
    zero_padded,
)
from sonalign.models.losses.disentangle import DisentangleLoss
from sonalign.models.losses.hierarchical import ScoreContrastiveLoss, TokenAlignmentLoss
from sonalign.models.losses.infonce import InfoNCELoss

DEFAULT_WEIGHTS = {"sequence": 1.0, "token": 0.5, "block": 0.5, "factor": 1.0, "disentangle": 0.1}
HIERARCHIES = ("encoder", "stream")


class _Stream(nn.Module):
    """One modality's transformer over the encoder's levels; returns every block's output.

    ``hierarchy="encoder"``: one block per input level; block k reads the running state plus a lateral
    projection of level k (levels low to high, the final features last). ``"stream"``: ``depth`` blocks
    over the projected final features alone.
    """

    def __init__(self, level_dims: list[int], dim: int, depth: int, heads: int, ff_mult: int, dropout: float, positions: bool):
        super().__init__()
        self.laterals = nn.ModuleList(Projection(d, dim, dropout) for d in level_dims)
        self.blocks = TransformerStack(dim, depth, heads, ff_mult, dropout)
        self.positions = positions

    def forward(self, levels: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        if len(self.laterals) == 1:  # final features only
            h = self.laterals[0](levels[0])
            if self.positions:
                h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
            return self.blocks(h, mask)
        outputs: list[torch.Tensor] = []
        h = None
        for k, (lateral, block) in enumerate(zip(self.laterals, self.blocks.blocks)):
            x = lateral(levels[k])
            if h is None:
                h = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype) if self.positions else x
            else:
                h = h + x
            h = block(zero_padded(h, mask), mask)
            outputs.append(h)
        return outputs


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


#: Every configuration key and its default (``configs/hade.json`` overrides some).
DEFAULTS: dict[str, Any] = {
    **TRANSFORMER_DEFAULTS,
    "weights": dict(DEFAULT_WEIGHTS),
    "hierarchy": "encoder",
    "audio_pool": "max",
    "text_pool": "mean",
    "use_block_level": True,
    "audio_levels": ["block2", "block3"],
    "text_levels": ["layer2", "layer4"],
    "audio_level_dims": [128, 256],
    "text_level_dims": None,
    "num_blocks": 4,
    "block_levels": [1, 2],
    "use_token_level": True,
    "use_factors": True,
    "confidence": "geometric",
    "factor_mix": 0.5,
    "pooled_residual": True,
    "num_factors": 8,
    "factor_dim": 32,
    "disentangle_mode": "decorrelation",
}


class HADE(AlignmentModel):
    """Two-stream transformers over the encoders' levels, token/block/sequence alignment, K confidence-weighted latent factors."""

    required_inputs = ("audio_frames", "text_tokens")
    #: Read when present: positive groups for the contrastive terms.
    optional_inputs = ("groups",)
    defaults = DEFAULTS

    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        c = self.config
        audio_dim, text_dim = c["audio_dim"], c["text_dim"]
        dim, embed = c["dim"], c["embed_dim"]
        heads = c["num_heads"]
        ff, drop = c["ff_mult"], c["dropout"]
        temp = c["init_temperature"]
        self.weights = {**DEFAULT_WEIGHTS, **c["weights"]}
        if set(self.weights) != set(DEFAULT_WEIGHTS):
            raise ConfigError(f"hade: unknown loss weights {sorted(set(self.weights) - set(DEFAULT_WEIGHTS))}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.hierarchy = c["hierarchy"]
        if self.hierarchy not in HIERARCHIES:
            raise ConfigError(f"hade: hierarchy must be one of {HIERARCHIES}, got {self.hierarchy!r}")
        self.audio_pool, self.text_pool = c["audio_pool"], c["text_pool"]
        for name, mode in (("audio_pool", self.audio_pool), ("text_pool", self.text_pool)):
            if mode not in ("max", "mean"):
                raise ConfigError(f"hade: {name} must be 'max' or 'mean', got {mode!r}")
        use_blocks = c["use_block_level"] and self.weights["block"] > 0
        if self.hierarchy == "encoder":
            self.audio_levels = [f"audio_frames_{k}" for k in c["audio_levels"]]
            self.text_levels = [f"text_tokens_{k}" for k in c["text_levels"]]
            audio_dims, text_dims = list(c["audio_level_dims"]), list(c["text_level_dims"] or [text_dim] * len(self.text_levels))
            if not (len(self.audio_levels) == len(self.text_levels) == len(audio_dims) == len(text_dims)):
                raise ConfigError("hade: audio_levels, text_levels and their *_level_dims must have the same length")
            depth = len(self.audio_levels) + 1
            audio_dims, text_dims = audio_dims + [audio_dim], text_dims + [text_dim]
            self.block_levels: list[int] = list(range(depth - 1)) if use_blocks else []
            self.required_inputs = ("audio_frames", "text_tokens", *self.audio_levels, *self.text_levels)
        else:
            self.audio_levels, self.text_levels = [], []
            depth = c["num_blocks"]
            audio_dims, text_dims = [audio_dim], [text_dim]
            self.block_levels = list(c["block_levels"]) if use_blocks else []
            for level in self.block_levels:
                if not 0 <= level < depth:
                    raise ConfigError(f"hade: block level {level} outside 0..{depth - 1}")
        self.use_token = bool(c["use_token_level"]) and self.weights["token"] > 0
        self.use_factors = bool(c["use_factors"])
        self.confidence_mode = c["confidence"]
        if self.confidence_mode not in ("geometric", "product"):
            raise ConfigError(f"hade: confidence must be 'geometric' or 'product', got {self.confidence_mode!r}")
        self.factor_mix = float(c["factor_mix"]) if self.use_factors else 0.0

        self.audio_stream = _Stream(audio_dims, dim, depth, heads, ff, drop, positions=True)
        self.text_stream = _Stream(text_dims, dim, depth, heads, ff, drop, positions=False)
        self.audio_seq = nn.Linear(dim, embed)
        self.text_seq = nn.Linear(dim, embed)
        self.residual: nn.ModuleDict | None = None
        if c["pooled_residual"]:
            self.required_inputs = (*self.required_inputs, "audio_embedding", "text_embedding")
            self.residual = nn.ModuleDict({"audio": PooledResidual(audio_dim, dim, drop), "text": PooledResidual(text_dim, dim, drop)})
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
            k, f = c["num_factors"], c["factor_dim"]
            self.audio_factors = _FactorHead(dim, k, f)
            self.text_factors = _FactorHead(dim, k, f)
            if self.weights["factor"] > 0:
                self.factor_loss = ScoreContrastiveLoss(temp)
            self.disentangle = DisentangleLoss(c["disentangle_mode"])

    # ----------------------------------------------------------------------------------- encoders
    def _encode(self, side: str, batch: dict[str, torch.Tensor], final_key: str, level_keys: list[str], pool: str) -> dict[str, torch.Tensor]:
        x = batch[final_key]
        mask = batch.get(f"{final_key}_mask")
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        missing = [k for k in level_keys if k not in batch]
        if missing:
            raise KeyError(f"hade (hierarchy='encoder') needs the encoder levels {missing} in the batch: extract features with with_levels "
                           "(the model config's \"features\" asks for it), or use hierarchy='stream'")
        outs = getattr(self, f"{side}_stream")([batch[k] for k in level_keys] + [x], mask)
        pooled = masked_pool(outs[-1], mask, pool)
        if self.residual is not None:  # the global state every global head (sequence, factors) reads
            frozen = batch.get(f"{side}_embedding")
            if frozen is None:
                raise KeyError(f"hade with pooled_residual needs '{side}_embedding' in the batch")
            pooled = self.residual[side](pooled, frozen)
        out = {"seq": F.normalize(getattr(self, f"{side}_seq")(pooled), dim=-1), "mask": mask}
        if self.use_token:
            out["tokens"] = F.normalize(getattr(self, f"{side}_token")(outs[-1]), dim=-1)
        for i, level in enumerate(self.block_levels):
            out[f"block{level}"] = F.normalize(getattr(self, f"{side}_block")[i](masked_pool(outs[level], mask, pool)), dim=-1)
        if self.use_factors:
            out["factors"], out["confidence"] = getattr(self, f"{side}_factors")(pooled)
            flat = (out["confidence"].sqrt().unsqueeze(-1) * out["factors"]).flatten(1)
            out["embedding"] = torch.cat([math.sqrt(1 - self.factor_mix) * out["seq"], math.sqrt(self.factor_mix) * flat], dim=-1)
        else:
            out["embedding"] = out["seq"]
        return out

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._encode("audio", batch, "audio_frames", self.audio_levels, self.audio_pool)

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._encode("text", batch, "text_tokens", self.text_levels, self.text_pool)

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
        groups = batch.get("groups")
        losses = {"sequence": w["sequence"] * self.seq_loss(audio["seq"], text["seq"], groups)}
        if self.use_token:
            losses["token"] = w["token"] * self.token_loss(audio["tokens"], audio["mask"], text["tokens"], text["mask"], groups)
        if self.block_levels:
            block = torch.stack([loss(audio[f"block{lv}"], text[f"block{lv}"], groups) for lv, loss in zip(self.block_levels, self.block_losses)])
            losses["block"] = w["block"] * block.mean()
        if self.use_factors:
            if w["factor"] > 0:
                losses["factor"] = w["factor"] * self.factor_loss(self.factor_similarity(audio, text), groups=groups)
            if w["disentangle"] > 0:
                losses["disentangle"] = w["disentangle"] * self.disentangle(audio["factors"], text["factors"])
        return losses
