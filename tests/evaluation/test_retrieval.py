"""Retrieval metrics against torchmetrics, plus edge cases (perfect, reversed, ties, errors)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMAP,
    RetrievalMRR,
    RetrievalRecall,
)

from sonalign.evaluation.retrieval import (
    audio_to_text_metrics,
    evaluate_retrieval,
    recall_at_k_curve,
    relevant_ranks,
    retrieval_metrics,
    text_to_audio_metrics,
)


def _tm(metric_cls, scores: np.ndarray, rel: np.ndarray, **kw) -> float:
    """torchmetrics value for a (n_queries, n_items) score matrix: one query per row."""
    n_q, n_i = scores.shape
    m = metric_cls(**kw)
    idx = torch.arange(n_q).repeat_interleave(n_i)
    m.update(torch.as_tensor(scores, dtype=torch.float64).flatten(), torch.as_tensor(rel).flatten(), indexes=idx)
    return float(m.compute())


def _positive_scores(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    # torchmetrics treats relevant items with score <= 0 as non-relevant: keep scores positive.
    return rng.random(shape) + 0.01


def _clotho_like(rng: np.random.Generator, n_audio: int = 30, per_clip: int = 5, signal: float = 0.5):
    t2a = np.repeat(np.arange(n_audio), per_clip)
    rng.shuffle(t2a)
    s = _positive_scores(rng, (n_audio, t2a.size))
    s[t2a, np.arange(t2a.size)] += signal * rng.random(t2a.size)  # informative but imperfect
    return s, t2a


# ------------------------------------------------------------------ torchmetrics agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_rel", [1, 5])
def test_general_metrics_match_torchmetrics(seed: int, n_rel: int) -> None:
    rng = np.random.default_rng(seed)
    n_q, n_i = 25, 40
    s = _positive_scores(rng, (n_q, n_i))
    rel = np.zeros((n_q, n_i), dtype=bool)
    for q in range(n_q):
        rel[q, rng.choice(n_i, size=n_rel, replace=False)] = True
    ours = retrieval_metrics(s, rel, ks=(1, 5, 10), map_k=10)
    for k in (1, 5, 10):
        assert ours[f"R@{k}"] == pytest.approx(_tm(RetrievalRecall, s, rel, top_k=k), abs=1e-6)
        assert ours[f"HR@{k}"] == pytest.approx(_tm(RetrievalHitRate, s, rel, top_k=k), abs=1e-6)
    assert ours["mAP@10"] == pytest.approx(_tm(RetrievalMAP, s, rel, top_k=10), abs=1e-6)
    assert ours["MRR"] == pytest.approx(_tm(RetrievalMRR, s, rel), abs=1e-6)
    if n_rel == 1:
        assert ours["R@5"] == ours["HR@5"]


def test_general_metrics_variable_relevant_count_match_torchmetrics() -> None:
    rng = np.random.default_rng(7)
    n_q, n_i = 30, 25
    s = _positive_scores(rng, (n_q, n_i))
    rel = np.zeros((n_q, n_i), dtype=bool)
    for q in range(n_q):
        rel[q, rng.choice(n_i, size=int(rng.integers(1, 15)), replace=False)] = True
    ours = retrieval_metrics(s, rel, ks=(1, 3, 10), map_k=5)
    for k in (1, 3, 10):
        assert ours[f"R@{k}"] == pytest.approx(_tm(RetrievalRecall, s, rel, top_k=k), abs=1e-6)
        assert ours[f"HR@{k}"] == pytest.approx(_tm(RetrievalHitRate, s, rel, top_k=k), abs=1e-6)
    assert ours["mAP@5"] == pytest.approx(_tm(RetrievalMAP, s, rel, top_k=5), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 3])
def test_t2a_matches_torchmetrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s, t2a = _clotho_like(rng)
    m, ranks = text_to_audio_metrics(s, t2a)
    st = s.T  # queries = captions
    rel = np.zeros(st.shape, dtype=bool)
    rel[np.arange(t2a.size), t2a] = True
    for k in (1, 5, 10):
        assert m[f"t2a/R@{k}"] == pytest.approx(_tm(RetrievalRecall, st, rel, top_k=k), abs=1e-6)
    assert m["t2a/mAP@10"] == pytest.approx(_tm(RetrievalMAP, st, rel, top_k=10), abs=1e-6)
    # DCASE 2022 Task 6b: AP@10 = 1/rank if rank <= 10 else 0
    assert m["t2a/mAP@10"] == pytest.approx(np.mean(np.where(ranks <= 10, 1.0 / ranks, 0.0)))
    assert ranks.shape == (t2a.size,)
    assert m["t2a/median_rank"] == np.median(ranks)
    assert m["t2a/mean_rank"] == pytest.approx(ranks.mean())


@pytest.mark.parametrize("seed", [0, 4])
def test_a2t_matches_torchmetrics_hit_rate_and_map(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s, t2a = _clotho_like(rng)
    m, ranks = audio_to_text_metrics(s, t2a)
    rel = np.zeros(s.shape, dtype=bool)
    rel[t2a, np.arange(t2a.size)] = True
    for k in (1, 5, 10):
        # Clotho convention: best-ranked caption counts == torchmetrics RetrievalHitRate
        assert m[f"a2t/R@{k}"] == pytest.approx(_tm(RetrievalHitRate, s, rel, top_k=k), abs=1e-6)
    assert m["a2t/mAP@10"] == pytest.approx(_tm(RetrievalMAP, s, rel, top_k=10), abs=1e-6)
    # fraction-of-relevant recall is the other convention and (generally) differs
    frac = retrieval_metrics(s, rel)["R@5"]
    assert frac == pytest.approx(_tm(RetrievalRecall, s, rel, top_k=5), abs=1e-6)
    assert frac <= m["a2t/R@5"]
    # best-caption ranks
    order = np.argsort(-s, axis=1, kind="stable")
    pos = np.argsort(order, axis=1) + 1
    expect = np.array([pos[a, rel[a]].min() for a in range(s.shape[0])])
    np.testing.assert_array_equal(ranks, expect)


def test_min_relevant_k_convention() -> None:
    s = np.array([[0.9, 0.8, 0.7, 0.6]])
    rel = np.array([[True, False, False, True]])
    # hits at ranks 1 and 4; top-2 sees one hit: torchmetrics AP@2 = 1/1 ; min(n_rel,k)=2 -> 0.5
    assert retrieval_metrics(s, rel, ks=(1,), map_k=2)["mAP@2"] == pytest.approx(1.0)
    assert retrieval_metrics(s, rel, ks=(1,), map_k=2, map_convention="min_relevant_k")["mAP@2"] == pytest.approx(0.5)
    full = retrieval_metrics(s, rel, ks=(1,), map_k=4)["mAP@4"]
    assert full == pytest.approx((1 / 1 + 2 / 4) / 2)


# ------------------------------------------------------------------ perfect / worst / ties


def test_perfect_scores() -> None:
    t2a = np.repeat(np.arange(20), 5)
    s = np.zeros((20, 100))
    s[t2a, np.arange(100)] = 1.0
    r = evaluate_retrieval(s, t2a)
    for d in ("t2a", "a2t"):
        for k in (1, 5, 10):
            assert r.metrics[f"{d}/R@{k}"] == 1.0
        assert r.metrics[f"{d}/mAP@10"] == 1.0
        assert r.metrics[f"{d}/median_rank"] == 1.0
        assert r.metrics[f"{d}/mean_rank"] == 1.0
    assert r.primary == 1.0
    np.testing.assert_array_equal(r.ranks["t2a"], 1)


def test_reversed_scores_give_worst_ranks() -> None:
    t2a = np.repeat(np.arange(20), 5)
    s = np.zeros((20, 100))
    s[t2a, np.arange(100)] = 1.0
    r = evaluate_retrieval(-s, t2a)
    np.testing.assert_array_equal(r.ranks["t2a"], 20)  # last of 20 clips
    np.testing.assert_array_equal(r.ranks["a2t"], 96)  # 5 relevant captions at ranks 96..100
    for d in ("t2a", "a2t"):
        assert r.metrics[f"{d}/R@10"] == 0.0
        assert r.metrics[f"{d}/mAP@10"] == 0.0
    assert r.metrics["t2a/median_rank"] == 20
    assert r.primary == 0.0


def test_constant_scores_are_pessimistic_and_deterministic() -> None:
    t2a = np.repeat(np.arange(10), 5)
    s = np.full((10, 50), 0.3)
    r1 = evaluate_retrieval(s, t2a)
    r2 = evaluate_retrieval(s.copy(), t2a)
    np.testing.assert_array_equal(r1.ranks["t2a"], 10)
    np.testing.assert_array_equal(r1.ranks["a2t"], 46)
    assert r1.metrics == r2.metrics
    assert r1.metrics["t2a/R@1"] == 0.0


def test_ties_between_relevant_items_keep_index_order() -> None:
    s = np.array([[0.5, 0.5, 0.5, 0.9]])
    rel = np.array([[True, False, True, False]])
    ranks, n_rel = relevant_ranks(s, rel)
    # item 3 first; tied group {0,1,2}: non-relevant 1 first, then relevant 0, 2
    np.testing.assert_array_equal(ranks, [[3, 4]])
    np.testing.assert_array_equal(n_rel, [2])


def test_count_and_sort_methods_agree_with_ties() -> None:
    rng = np.random.default_rng(11)
    s = rng.integers(0, 4, size=(40, 30)).astype(float)  # lots of ties
    rel = rng.random((40, 30)) < 0.3
    rel[:, 0] = True
    a, na = relevant_ranks(s, rel, method="count")
    b, nb = relevant_ranks(s, rel, method="sort")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(na, nb)
    # each query's ranks of relevant items are distinct and form a valid pessimistic order
    for q in range(40):
        r = a[q, : na[q]]
        assert len(set(r.tolist())) == r.size
        assert r.max() <= 30


def test_metrics_depend_only_on_ranking() -> None:
    rng = np.random.default_rng(5)
    s, t2a = _clotho_like(rng)
    base = evaluate_retrieval(s, t2a).metrics
    shifted = evaluate_retrieval(3.0 * s - 10.0, t2a).metrics  # all scores negative
    assert base == pytest.approx(shifted)


def test_torch_input_matches_numpy() -> None:
    rng = np.random.default_rng(6)
    s, t2a = _clotho_like(rng)
    a = evaluate_retrieval(s, t2a).metrics
    b = evaluate_retrieval(torch.from_numpy(s).float(), torch.from_numpy(t2a)).metrics
    assert a == pytest.approx(b)


# ------------------------------------------------------------------ curves, results, speed


def test_recall_curve_matches_metrics() -> None:
    rng = np.random.default_rng(8)
    s, t2a = _clotho_like(rng)
    r = evaluate_retrieval(s, t2a)
    for d in ("t2a", "a2t"):
        curve = r.recall_curve(d, 10)
        assert curve.shape == (10,)
        assert np.all(np.diff(curve) >= 0)
        for k in (1, 5, 10):
            assert curve[k - 1] == pytest.approx(r.metrics[f"{d}/R@{k}"])
    np.testing.assert_allclose(recall_at_k_curve([1, 2, 2, 7], 3), [0.25, 0.75, 0.75])


def test_result_keys_and_conventions() -> None:
    rng = np.random.default_rng(9)
    s, t2a = _clotho_like(rng)
    r = evaluate_retrieval(s, t2a)
    for key in ("t2a/R@1", "t2a/R@5", "t2a/R@10", "t2a/mAP@10", "t2a/median_rank", "t2a/mean_rank",
                "a2t/R@1", "a2t/R@5", "a2t/R@10", "a2t/mAP@10", "a2t/median_rank", "a2t/mean_rank",
                "primary"):
        assert key in r.metrics
        assert isinstance(r.metrics[key], float)
    assert r.primary == pytest.approx(np.mean([r.metrics[f"t2a/R@{k}"] for k in (1, 5, 10)]))
    for key in ("ties", "t2a/R@k", "a2t/R@k", "t2a/mAP@10", "a2t/mAP@10", "primary"):
        assert key in r.conventions and r.conventions[key]
    assert "best-ranked" in r.conventions["a2t/R@k"]
    d = r.to_dict(include_ranks=True)
    assert d["n_audio"] == 30 and d["n_text"] == 150
    assert len(d["ranks"]["a2t"]) == 30


def test_clotho_size_is_fast() -> None:
    rng = np.random.default_rng(0)
    t2a = np.repeat(np.arange(1000), 5)
    s = rng.standard_normal((1000, 5000)).astype(np.float32)
    t0 = time.perf_counter()
    r = evaluate_retrieval(s, t2a)
    assert time.perf_counter() - t0 < 5.0
    assert 0.0 <= r.primary <= 0.05  # random scores: about chance


# ------------------------------------------------------------------ errors


def test_bad_inputs() -> None:
    s = np.random.default_rng(0).random((4, 8))
    t2a = np.repeat(np.arange(4), 2)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_retrieval(s[0], t2a)
    with pytest.raises(ValueError, match="shape"):
        evaluate_retrieval(s, t2a[:-1])
    with pytest.raises(ValueError, match="clip index"):
        evaluate_retrieval(s, np.where(t2a == 3, 4, t2a))
    with pytest.raises(ValueError, match="integer"):
        evaluate_retrieval(s, t2a.astype(float))
    bad = s.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(bad, t2a)
    with pytest.raises(ValueError, match="no caption"):
        evaluate_retrieval(s, np.where(t2a == 3, 0, t2a))
    with pytest.raises(ValueError, match="ks"):
        evaluate_retrieval(s, t2a, ks=(1, 5))
    rel = np.zeros((4, 8), dtype=bool)
    rel[:3, 0] = True
    with pytest.raises(ValueError, match="no relevant"):
        retrieval_metrics(s, rel)
    skip = retrieval_metrics(s, rel, empty="skip")
    neg = retrieval_metrics(s, rel, empty="neg")
    assert skip["n_queries"] == 3 and neg["n_queries"] == 4
    assert neg["HR@10"] == pytest.approx(0.75 * skip["HR@10"])
    assert neg["HR@10"] == pytest.approx(_tm(RetrievalHitRate, s, rel, top_k=10))
