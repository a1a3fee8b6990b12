"""Cross-modal attention blocks.

* :class:`CrossAttention` -- a Transformer cross-attention block (Vaswani et al. 2017): the query
  sequence attends to a context sequence (masked), with residual, LayerNorm and feed-forward.
* :class:`BidirectionalCrossAttention` -- two such blocks, audio->text and text->audio, over
  row-aligned pairs (the i-th audio with the i-th text). Used by HILBERT's joint embedding.
* :class:`PairwiseBiAttention` -- bidirectional cross-attention between one item's *pooled*
  vector and the other item's sequence (audio summary -> caption tokens, caption summary -> audio
  chunks). Its cost per pair is linear in the two lengths, so the refined pair score can be
  evaluated for *every* (audio i, text j) pair in chunks -- which Robust-ATR's ``similarity`` does
  at retrieval time. (A chunk-by-token attention costs O(S L) per pair instead of O(S + L) --
  about 14x more at S = 32, L = 24.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sonalign.models.components.pooling import ensure_nonempty


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


class PairwiseBiAttention(nn.Module):
    """Bidirectional cross-attention between each item's pooled vector and the other item's sequence.

    For an audio item i (chunks A_i, pooled a_i) and a text item j (tokens T_j, pooled t_j), in an
    ``attn_dim``-dimensional space with ``heads`` heads (concatenated):

        c_a(i|j) = MHA(q = W_qa a_i, k = W_kt T_j, v = V_t T_j)    audio -> text: the caption's tokens
                                                                  that audio i picks
        c_t(j|i) = MHA(q = W_qt t_j, k = W_ka A_i, v = V_a A_i)    text -> audio: the chunks of clip i
                                                                  that caption j picks

    with padded keys masked, and each item's own summary mapped by U_a / U_t. The pair is compared
    modality against modality: its *audio view* ``x_a(i|j) = [n(U_a a_i), n(c_t(j|i)), n(U_a a_i)] / sqrt 3``
    (clip summary, the clip's chunks the caption selected, clip summary) against its *text view*
    ``x_t(i|j) = [n(c_a(i|j)), n(U_t t_j), n(U_t t_j)] / sqrt 3`` (the caption's tokens the clip
    selected, caption summary, caption summary), n = L2 normalisation. Both views are unit vectors
    and the pair score is

        s(i, j) = <x_a, x_t> = 1/3 [cos(U_a a_i, c_a(i|j)) + cos(c_t(j|i), U_t t_j) + cos(U_a a_i, U_t t_j)],

    each cosine between an audio-derived and a text-derived vector: the two cross-attention matches
    (SCAN: Lee et al., "Stacked Cross Attention for Image-Text Matching", ECCV 2018) and the match of
    the two summaries. The value and summary maps (V, U) have no bias, so every term is a normalised
    bilinear form of one audio and one text quantity: no term depends on one item alone. (The
    earlier form ``cos(U_a a_i + c_a, U_t t_j + c_t)`` mixed modalities inside each side; with one
    chunk and one token it expands to ``<U_a a_i, V_a A_i>`` and ``<V_t T_j, U_t t_j>``, scores of
    one item with itself that lift or sink that item for every query: hubs.) An all-zero item
    scores 0 against everything.

    The MHA output projection and a post-attention LayerNorm are left out: the cosines normalise
    scale, and without them a pair costs only O(H (S + L) d_h) once the per-item projections are
    computed, which is what makes scoring every pair affordable.
    Inputs per side: dicts with ``sequence`` (N, S, E), ``mask`` (N, S) and ``pooled`` (N, E).
    """

    def __init__(self, dim: int, heads: int = 4, attn_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        if attn_dim % heads:
            raise ValueError(f"attn_dim {attn_dim} must be divisible by heads {heads}")
        self.heads, self.head_dim = heads, attn_dim // heads
        self.q_audio = nn.Linear(dim, attn_dim)  # pooled audio -> queries over text tokens
        self.k_text = nn.Linear(dim, attn_dim)
        self.v_text = nn.Linear(dim, attn_dim, bias=False)  # V_t
        self.q_text = nn.Linear(dim, attn_dim)  # pooled text -> queries over audio chunks
        self.k_audio = nn.Linear(dim, attn_dim)
        self.v_audio = nn.Linear(dim, attn_dim, bias=False)  # V_a
        self.res_audio = nn.Linear(dim, attn_dim, bias=False)  # U_a
        self.res_text = nn.Linear(dim, attn_dim, bias=False)  # U_t
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim)

    @staticmethod
    def _bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive key bias: 0 on valid positions, -inf on padding (rows are made non-empty first)."""
        mask = ensure_nonempty(mask)
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))

    @staticmethod
    def views(own_audio: torch.Tensor, ctx_audio: torch.Tensor, ctx_text: torch.Tensor, own_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio view ``[n(U_a a), n(c_t), n(U_a a)] / sqrt 3`` and text view ``[n(c_a), n(U_t t), n(U_t t)] / sqrt 3`` (broadcast)."""
        own_audio, ctx_audio = torch.broadcast_tensors(own_audio, ctx_audio)
        ctx_text, own_text = torch.broadcast_tensors(ctx_text, own_text)
        n = lambda x: torch.nn.functional.normalize(x, dim=-1, eps=1e-8) / math.sqrt(3.0)  # noqa: E731
        return torch.cat([n(own_audio), n(ctx_audio), n(own_audio)], dim=-1), torch.cat([n(ctx_text), n(own_text), n(own_text)], dim=-1)

    def refine(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], pairwise: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio and text views of pairs (training path, with dropout on the attended contexts), each
        of width ``3 attn_dim``. ``pairwise=False``: row-aligned pairs -> two (B, 3 attn_dim).
        ``pairwise=True``: every pair -> two (Na, Nt, 3 attn_dim), ``[i, j]`` = audio i with text j.
        The pair score is their dot product."""
        a_seq, t_seq = audio["sequence"], text["sequence"]
        a_bar, t_bar = audio["pooled"], text["pooled"]
        scale = 1.0 / math.sqrt(self.head_dim)
        qa = self._split(self.q_audio(a_bar)) * scale  # (Na, H, d)
        qt = self._split(self.q_text(t_bar)) * scale  # (Nt, H, d)
        kt, vt = self._split(self.k_text(t_seq)), self._split(self.v_text(t_seq))  # (Nt, L, H, d)
        ka, va = self._split(self.k_audio(a_seq)), self._split(self.v_audio(a_seq))  # (Na, S, H, d)
        t_bias = self._bias(text["mask"], qa.dtype)  # (Nt, L)
        a_bias = self._bias(audio["mask"], qa.dtype)  # (Na, S)
        own_a, own_t = self.res_audio(a_bar), self.res_text(t_bar)
        if pairwise:
            att_a = torch.softmax(torch.einsum("ihd,jlhd->ijhl", qa, kt) + t_bias[None, :, None, :], dim=-1)
            att_t = torch.softmax(torch.einsum("jhd,ishd->ijhs", qt, ka) + a_bias[:, None, None, :], dim=-1)
            ctx_a = torch.einsum("ijhl,jlhd->ijhd", att_a, vt).flatten(-2)  # (Na, Nt, H*d): text tokens audio i picks
            ctx_t = torch.einsum("ijhs,ishd->ijhd", att_t, va).flatten(-2)  # audio chunks text j picks
            own_a, own_t = own_a[:, None, :], own_t[None, :, :]
        else:
            att_a = torch.softmax(torch.einsum("ihd,ilhd->ihl", qa, kt) + t_bias[:, None, :], dim=-1)
            att_t = torch.softmax(torch.einsum("ihd,ishd->ihs", qt, ka) + a_bias[:, None, :], dim=-1)
            ctx_a = torch.einsum("ihl,ilhd->ihd", att_a, vt).flatten(-2)  # (B, H*d)
            ctx_t = torch.einsum("ihs,ishd->ihd", att_t, va).flatten(-2)
        return self.views(own_a, self.dropout(ctx_t), self.dropout(ctx_a), own_t)

    # ------------------------------------------------------------------ all-pairs scoring
    # Layouts: H heads, d = head_dim, N items on the key side, M items on the query side.
    def _prepare(self, side: dict[str, torch.Tensor], audio: bool) -> dict[str, torch.Tensor]:
        """Per-item projections, computed once: query (H, d, N), keys (H, N, S, d), values
        (H, N, d, S), key bias (1, N, S, 1), own summary U x (H, d, N) and its norm (N,)."""
        q, k, v, res = (
            (self.q_audio, self.k_audio, self.v_audio, self.res_audio)
            if audio
            else (self.q_text, self.k_text, self.v_text, self.res_text)
        )
        seq, pooled = side["sequence"], side["pooled"]
        own = res(pooled)
        return {
            "q": (self._split(q(pooled)) / math.sqrt(self.head_dim)).permute(1, 2, 0).contiguous(),
            "k": self._split(k(seq)).permute(2, 0, 1, 3).contiguous(),
            "v": self._split(v(seq)).permute(2, 0, 3, 1).contiguous(),
            "bias": self._bias(side["mask"], seq.dtype)[None, :, :, None],
            "own": self._split(own).permute(1, 2, 0).contiguous(),
            "own_norm": torch.linalg.vector_norm(own, dim=-1),
            "own_unit": torch.nn.functional.normalize(own, dim=-1, eps=1e-8),
        }

    @staticmethod
    def _attend(keys: dict[str, torch.Tensor], query: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every query item attends over every key item: the contexts (H, N, d, M)."""
        h, n, s, d = keys["k"].shape
        m = query["q"].shape[-1]
        logits = torch.bmm(keys["k"].view(h, n * s, d), query["q"]).view(h, n, s, m).add_(keys["bias"])
        return torch.matmul(keys["v"], torch.softmax(logits, dim=2))

    @staticmethod
    def _cosine_to_own(ctx: torch.Tensor, query: dict[str, torch.Tensor]) -> torch.Tensor:
        """cos(query item's own summary, its context over each key item): (N, M) from ctx (H, N, d, M)."""
        dot = (ctx * query["own"][:, None]).sum(dim=(0, 2))
        norm = torch.linalg.vector_norm(ctx, dim=(0, 2))
        return dot / (norm * query["own_norm"][None, :]).clamp_min(1e-8)

    @torch.no_grad()
    def score_matrix(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], max_elements: int = 1 << 24
    ) -> torch.Tensor:
        """``s(i, j) = 1/3 [cos(U_a a_i, c_a(i|j)) + cos(c_t(j|i), U_t t_j) + cos(U_a a_i, U_t t_j)]`` for every (audio i, text j): (Na, Nt).

        Inference path (no dropout), equal to the dot product of :meth:`refine`'s views in eval
        mode. Per-item projections are computed once; pairs are then scored in blocks whose largest
        intermediate holds about ``max_elements`` values, each block trimmed to its own longest
        valid row (exact: padding gets zero weight).
        """
        na, s = audio["sequence"].shape[:2]
        nt, length = text["sequence"].shape[:2]
        per_pair = max(self.heads * max(s, length), self.heads * self.head_dim)
        pairs = max(1, max_elements // per_pair)
        a_block = max(1, min(na, math.isqrt(pairs)))  # square-ish blocks: the one transpose per block stays cache-friendly
        t_block = max(1, min(nt, pairs // a_block))
        texts = [(j, self._prepare(_trimmed(text, j, j + t_block), audio=False)) for j in range(0, nt, t_block)]
        out = audio["sequence"].new_empty(na, nt)
        for i in range(0, na, a_block):
            a = self._prepare(_trimmed(audio, i, i + a_block), audio=True)
            for j, t in texts:
                audio_side = self._cosine_to_own(self._attend(t, a), a)  # (Nt, Na): audio i vs the tokens of j it picks
                text_side = self._cosine_to_own(self._attend(a, t), t)  # (Na, Nt): text j vs the chunks of i it picks
                summaries = a["own_unit"] @ t["own_unit"].T  # (Na, Nt): clip summary vs caption summary
                out[i : i + a_block, j : j + t_block] = (audio_side.T + text_side + summaries) / 3.0
        return out


def _trimmed(side: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    """Rows lo:hi, with trailing positions that are padding in every row cut off."""
    mask = side["mask"][lo:hi]
    valid = mask.any(dim=0).nonzero()
    length = int(valid.max()) + 1 if valid.numel() else 1
    return {"sequence": side["sequence"][lo:hi, :length], "mask": mask[:, :length], "pooled": side["pooled"][lo:hi]}
