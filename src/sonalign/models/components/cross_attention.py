"""Cross-modal attention blocks.

* :class:`CrossAttention` -- a Transformer cross-attention block (Vaswani et al. 2017): the query
  sequence attends to a context sequence (masked), with residual, LayerNorm and feed-forward.
* :class:`BidirectionalCrossAttention` -- two such blocks, audio->text and text->audio, over
  row-aligned pairs (the i-th audio with the i-th text). Used by HILBERT's joint embedding.
* :class:`PooledBiAttention` -- bidirectional attention with one shared affinity matrix per pair,
  as in BiDAF (Seo et al., "Bidirectional Attention Flow for Machine Comprehension", ICLR 2017):
  ``S[s, l] = <q_a(a_s), q_t(t_l)> / sqrt(d)`` per head; audio->text attention is the softmax of
  S over text positions l, text->audio the softmax over audio positions s. Each side's attended
  context is pooled with that side's *own* pooling weights (computed without the other modality)
  and added to its pooled vector: ``r_a = LN(a_bar + W_oa sum_s w_s sum_l alpha_sl v_t(t_l))``,
  and symmetrically ``r_t``. Because pooling is linear this is exactly "pool the cross-attended
  sequence"; it lets one evaluate the refined pair score ``cos(r_a(i|j), r_t(j|i))`` for *every*
  (audio i, text j) pair in chunks, which Robust-ATR's ``similarity`` does at retrieval time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.models.components.pooling import ensure_nonempty, masked_softmax


class CrossAttention(nn.Module):
    """Post-norm cross-attention block: ``x = LN(q + MHA(q, ctx, ctx)); x = LN(x + FFN(x))``."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1, ff_dim: int | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim or 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim or 2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        key_padding = None if context_mask is None else ~ensure_nonempty(context_mask)
        attended, _ = self.attn(query, context, context, key_padding_mask=key_padding, need_weights=False)
        x = self.norm1(query + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ff(x)))


class BidirectionalCrossAttention(nn.Module):
    """Audio attends to text and text attends to audio, for row-aligned pairs."""

    def __init__(self, dim: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.audio_to_text = CrossAttention(dim, heads, dropout)
        self.text_to_audio = CrossAttention(dim, heads, dropout)

    def forward(
        self, audio: torch.Tensor, audio_mask: torch.Tensor | None, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.audio_to_text(audio, text, text_mask), self.text_to_audio(text, audio, audio_mask)


class PooledBiAttention(nn.Module):
    """BiDAF-style bidirectional attention, pooled with each side's own weights; scores any pair.

    Inputs per side: ``seq`` (N, S, E), ``mask`` (N, S), pooling ``weights`` (N, S) summing to 1
    over valid positions, and the pooled vector ``pooled`` (N, E) (= sum_s weights_s seq_s).
    """

    def __init__(self, dim: int, heads: int = 4, attn_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        if attn_dim % heads:
            raise ValueError(f"attn_dim {attn_dim} must be divisible by heads {heads}")
        self.heads, self.head_dim = heads, attn_dim // heads
        self.q_audio = nn.Linear(dim, attn_dim)
        self.q_text = nn.Linear(dim, attn_dim)
        self.v_audio = nn.Linear(dim, attn_dim)
        self.v_text = nn.Linear(dim, attn_dim)
        self.out_audio = nn.Linear(attn_dim, dim)  # maps the attended text context into the audio side
        self.out_text = nn.Linear(attn_dim, dim)
        self.norm_audio = nn.LayerNorm(dim)
        self.norm_text = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim)

    def refine(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], pairwise: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined pooled vectors. ``pairwise=False``: row-aligned pairs -> two (B, E).
        ``pairwise=True``: all pairs -> two (Na, Nt, E), ``[i, j]`` = audio i with text j."""
        a_mask, t_mask = ensure_nonempty(audio["mask"]), ensure_nonempty(text["mask"])
        qa, qt = self._heads(self.q_audio(audio["sequence"])), self._heads(self.q_text(text["sequence"]))
        va, vt = self._heads(self.v_audio(audio["sequence"])), self._heads(self.v_text(text["sequence"]))
        wa, wt = audio["weights"], text["weights"]
        scale = 1.0 / math.sqrt(self.head_dim)
        if pairwise:
            # affinity (Na, Nt, H, S, L)
            aff = torch.einsum("ishd,jlhd->ijhsl", qa, qt) * scale
            alpha = masked_softmax(aff, t_mask[None, :, None, None, :], dim=-1)  # audio -> text
            gamma = masked_softmax(aff, a_mask[:, None, None, :, None], dim=-2)  # text -> audio
            beta = torch.einsum("is,ijhsl->ijhl", wa, alpha)  # pooled attention over text positions
            delta = torch.einsum("jl,ijhsl->ijhs", wt, gamma)  # pooled attention over audio positions
            ctx_a = torch.einsum("ijhl,jlhd->ijhd", beta, vt).flatten(-2)
            ctx_t = torch.einsum("ijhs,ishd->ijhd", delta, va).flatten(-2)
            a_bar, t_bar = audio["pooled"][:, None, :], text["pooled"][None, :, :]
        else:
            aff = torch.einsum("ishd,ilhd->ihsl", qa, qt) * scale  # (B, H, S, L)
            alpha = masked_softmax(aff, t_mask[:, None, None, :], dim=-1)
            gamma = masked_softmax(aff, a_mask[:, None, :, None], dim=-2)
            beta = torch.einsum("is,ihsl->ihl", wa, alpha)
            delta = torch.einsum("il,ihsl->ihs", wt, gamma)
            ctx_a = torch.einsum("ihl,ilhd->ihd", beta, vt).flatten(-2)
            ctx_t = torch.einsum("ihs,ishd->ihd", delta, va).flatten(-2)
            a_bar, t_bar = audio["pooled"], text["pooled"]
        r_a = self.norm_audio(a_bar + self.dropout(self.out_audio(ctx_a)))
        r_t = self.norm_text(t_bar + self.dropout(self.out_text(ctx_t)))
        return r_a, r_t

    @torch.no_grad()
    def score_matrix(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], max_elements: int = 1 << 24
    ) -> torch.Tensor:
        """Cosine of the refined pair for all (audio, text) pairs, in blocks whose affinity tensor
        holds at most ``max_elements`` entries. Returns (Na, Nt)."""
        na, s = audio["sequence"].shape[:2]
        nt, length = text["sequence"].shape[:2]
        per_pair = self.heads * s * length
        t_block = max(1, min(nt, max_elements // per_pair))
        a_block = max(1, min(na, max_elements // (per_pair * t_block)))
        out = audio["sequence"].new_empty(na, nt)
        keys = ("sequence", "mask", "weights", "pooled")
        for i in range(0, na, a_block):
            a = {k: audio[k][i : i + a_block] for k in keys}
            for j in range(0, nt, t_block):
                t = {k: text[k][j : j + t_block] for k in keys}
                r_a, r_t = self.refine(a, t, pairwise=True)
                out[i : i + a_block, j : j + t_block] = F.cosine_similarity(r_a, r_t, dim=-1)
        return out
