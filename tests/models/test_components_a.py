"""Components: masked pooling, sequence encoder, cross-attention blocks, pairwise bidirectional attention."""

from __future__ import annotations

import math

import pytest
import torch

from sonalign.models.components.cross_attention import BidirectionalCrossAttention, CrossAttention, PairwiseBiAttention
from sonalign.models.components.pooling import (
    AttentivePooling,
    SelfAttentivePooling,
    ensure_nonempty,
    frobenius_penalty,
    masked_softmax,
)
from sonalign.models.components.sequence import SequenceEncoder, sinusoidal_positions


def _mask(lengths: list[int], size: int) -> torch.Tensor:
    return torch.arange(size)[None, :] < torch.tensor(lengths)[:, None]


def _scramble_pads(x: torch.Tensor, mask: torch.Tensor, seed: int = 99) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = 50 * torch.randn(x.shape, generator=g)
    return torch.where(mask.unsqueeze(-1), x, noise)


# ---------------------------------------------------------------- pooling
def test_masked_softmax_zero_on_pads_and_empty_rows():
    logits = torch.randn(3, 5)
    mask = _mask([2, 5, 0], 5)
    w = masked_softmax(logits, mask)
    assert torch.all(w[~mask] == 0)
    assert torch.allclose(w[:2].sum(-1), torch.ones(2))
    assert torch.all(w[2] == 0)
    assert torch.allclose(w[0, :2], torch.softmax(logits[0, :2], -1))


def test_ensure_nonempty_only_touches_empty_rows():
    mask = _mask([0, 2], 3)
    fixed = ensure_nonempty(mask)
    assert fixed.tolist() == [[True, False, False], [True, True, False]]
    assert ensure_nonempty(_mask([1, 2], 3)).tolist() == _mask([1, 2], 3).tolist()


def test_frobenius_penalty_direct_formula():
    a = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]]])
    gram = a[0] @ a[0].T
    expected = float(((gram - torch.eye(2)) ** 2).sum())
    assert frobenius_penalty(a).item() == pytest.approx(expected)
    one_hot = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    assert frobenius_penalty(one_hot).item() == pytest.approx(0.0)


def test_self_attentive_pooling_lin_formula_and_masks():
    torch.manual_seed(0)
    pool = SelfAttentivePooling(dim=6, hidden=5, heads=3, out_dim=4)
    h = torch.randn(2, 7, 6)
    mask = _mask([7, 3], 7)
    out, att = pool(h, mask)
    assert out.shape == (2, 4) and att.shape == (2, 3, 7)
    # A = softmax(W2 tanh(W1 H^T)) over valid positions; M = A H
    scores = pool.w2.weight @ torch.tanh(pool.w1.weight @ h[1, :3].T)
    a_ref = torch.softmax(scores, dim=-1)
    assert torch.allclose(att[1, :, :3], a_ref, atol=1e-6)
    assert torch.all(att[1, :, 3:] == 0)
    assert torch.allclose(out[1], pool.out((a_ref @ h[1, :3]).flatten()), atol=1e-5)
    out2, _ = pool(_scramble_pads(h, mask), mask)
    assert torch.equal(out, out2)


def test_attentive_pooling_formula_and_masks():
    torch.manual_seed(1)
    pool = AttentivePooling(dim=5, hidden=4)
    h = torch.randn(3, 6, 5)
    mask = _mask([6, 2, 4], 6)
    out, w = pool(h, mask)
    ref_w = torch.softmax(torch.tanh(pool.proj(h[2, :4])) @ pool.query, dim=0)
    assert torch.allclose(w[2, :4], ref_w, atol=1e-6)
    assert torch.allclose(out[2], (ref_w[:, None] * h[2, :4]).sum(0), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(3))
    out2, _ = pool(_scramble_pads(h, mask), mask)
    assert torch.equal(out, out2)


# ---------------------------------------------------------------- sequence encoder
def test_sinusoidal_positions_values():
    table = sinusoidal_positions(5, 6)
    assert table.shape == (5, 6)
    assert torch.allclose(table[0, 0::2], torch.zeros(3)) and torch.allclose(table[0, 1::2], torch.ones(3))
    assert table[3, 0].item() == pytest.approx(math.sin(3.0))
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # odd width


@pytest.mark.parametrize("layers", [0, 1])
def test_sequence_encoder_ignores_padding_and_survives_empty_rows(layers: int):
    torch.manual_seed(2)
    enc = SequenceEncoder(12, 8, layers=layers, heads=2, dropout=0.0).eval()
    x = torch.randn(3, 5, 12)
    mask = _mask([5, 2, 0], 5)
    h, m = enc(x, mask)
    h2, _ = enc(_scramble_pads(x, mask), mask)
    assert torch.isfinite(h).all()
    assert m[2, 0] and not m[2, 1:].any()
    valid = m.unsqueeze(-1).expand_as(h)
    assert torch.allclose(h[valid], h2[valid], atol=1e-6)


# ---------------------------------------------------------------- cross-attention
def test_cross_attention_ignores_padded_context():
    torch.manual_seed(3)
    block = CrossAttention(8, heads=2, dropout=0.0).eval()
    q = torch.randn(2, 4, 8)
    ctx = torch.randn(2, 6, 8)
    mask = _mask([6, 3], 6)
    out = block(q, ctx, mask)
    assert torch.allclose(out, block(q, _scramble_pads(ctx, mask), mask), atol=1e-6)
    assert not torch.allclose(out, block(q, ctx, None), atol=1e-4)  # the mask is actually used
    bi = BidirectionalCrossAttention(8, heads=2, dropout=0.0).eval()
    a2t, t2a = bi(q, None, ctx, mask)
    assert a2t.shape == q.shape and t2a.shape == ctx.shape


def _side(n: int, length: int, lengths: list[int], dim: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = _mask(lengths, length)
    seq = torch.where(mask.unsqueeze(-1), torch.randn(n, length, dim, generator=g), torch.zeros(n, length, dim))
    return {"sequence": seq, "mask": mask, "pooled": torch.randn(n, dim, generator=g)}


def _reference_pair(mod: PairwiseBiAttention, a: dict, t: dict, i: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive per-pair multi-head attention from each pooled vector over the other's valid positions."""
    A, T = a["sequence"][i][a["mask"][i]], t["sequence"][j][t["mask"][j]]
    a_bar, t_bar = a["pooled"][i], t["pooled"][j]
    h, d = mod.heads, mod.head_dim

    def mha(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        q, k, v = query.view(h, 1, d), keys.view(-1, h, d).transpose(0, 1), values.view(-1, h, d).transpose(0, 1)
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)  # (H, 1, L)
        return (w @ v).reshape(-1)

    ctx_a = mha(mod.q_audio(a_bar), mod.k_text(T), mod.v_text(T))  # the caption tokens audio i picks
    ctx_t = mha(mod.q_text(t_bar), mod.k_audio(A), mod.v_audio(A))  # the chunks caption j picks
    n = lambda x: torch.nn.functional.normalize(x, dim=0) / math.sqrt(3)  # noqa: E731
    x_a = torch.cat([n(mod.res_audio(a_bar)), n(ctx_t), n(mod.res_audio(a_bar))])  # audio view: audio-derived parts only
    x_t = torch.cat([n(ctx_a), n(mod.res_text(t_bar)), n(mod.res_text(t_bar))])  # text view: text-derived parts only
    return x_a, x_t


def test_pairwise_bi_attention_matches_naive_per_pair_attention():
    torch.manual_seed(4)
    mod = PairwiseBiAttention(dim=8, heads=2, attn_dim=6, dropout=0.0).eval()
    a = _side(3, 5, [5, 2, 4], 8, seed=5)
    t = _side(4, 6, [6, 1, 3, 5], 8, seed=6)
    with torch.no_grad():
        r_a, r_t = mod.refine(a, t, pairwise=True)
        assert r_a.shape == (3, 4, 18) and r_t.shape == (3, 4, 18)
        scores = mod.score_matrix(a, t)
        for i in range(3):
            for j in range(4):
                ref_a, ref_t = _reference_pair(mod, a, t, i, j)
                assert torch.allclose(r_a[i, j], ref_a, atol=1e-5)
                assert torch.allclose(r_t[i, j], ref_t, atol=1e-5)
                assert scores[i, j].item() == pytest.approx(torch.nn.functional.cosine_similarity(ref_a, ref_t, dim=0).item(), abs=1e-5)


def test_pairwise_bi_attention_paired_equals_pairwise_diagonal_and_chunking_is_exact():
    torch.manual_seed(7)
    mod = PairwiseBiAttention(dim=8, heads=2, attn_dim=8, dropout=0.0).eval()
    a = _side(5, 4, [4, 1, 3, 2, 4], 8, seed=8)
    t = _side(5, 3, [3, 3, 1, 2, 2], 8, seed=9)
    with torch.no_grad():
        pa, pt = mod.refine(a, t, pairwise=False)
        ra, rt = mod.refine(a, t, pairwise=True)
        idx = torch.arange(5)
        assert torch.allclose(pa, ra[idx, idx], atol=1e-6) and torch.allclose(pt, rt[idx, idx], atol=1e-6)
        full = mod.score_matrix(a, t)
        tiny = mod.score_matrix(a, t, max_elements=1)  # one pair per block
        assert full.shape == (5, 5) and torch.allclose(full, tiny, atol=1e-6)
        assert torch.allclose(full, torch.nn.functional.cosine_similarity(ra, rt, dim=-1), atol=1e-5)


def test_pairwise_bi_attention_ignores_padding_but_not_content():
    torch.manual_seed(10)
    mod = PairwiseBiAttention(dim=8, heads=2, attn_dim=8, dropout=0.0).eval()
    a = _side(3, 5, [5, 2, 3], 8, seed=11)
    t = _side(2, 4, [1, 4], 8, seed=12)
    base = mod.score_matrix(a, t)
    a2 = dict(a, sequence=_scramble_pads(a["sequence"], a["mask"]))
    t2 = dict(t, sequence=_scramble_pads(t["sequence"], t["mask"], seed=5))
    assert torch.allclose(base, mod.score_matrix(a2, t2), atol=1e-6)
    a3 = dict(a, sequence=a["sequence"] + a["mask"].unsqueeze(-1))  # change valid chunks only
    assert not torch.allclose(base, mod.score_matrix(a3, t), atol=1e-4)


def test_pairwise_bi_attention_rejects_bad_head_split():
    with pytest.raises(ValueError):
        PairwiseBiAttention(dim=8, heads=3, attn_dim=8)
