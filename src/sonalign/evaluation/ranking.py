"""Ranks and metrics of one retrieval direction: checks of the inputs, the rank of every relevant
item (pessimistic on ties, chunked for memory), R@k / HR@k / mAP@k / MRR / median and mean rank.
:mod:`sonalign.evaluation.retrieval` runs them in both directions and documents the conventions."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_MAP_K = 10
MapConvention = Literal["torchmetrics", "min_relevant_k"]
EmptyAction = Literal["error", "skip", "neg"]
# Upper bound on the number of score comparisons materialised at once (bool array entries).
_CHUNK_ELEMENTS = 1 << 22
# Mean relevant items per query above which sorting beats counting.
_DENSE_RELEVANCE = 32


# ---------------------------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------------------------


def as_score_matrix(scores: Any, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a 2-D floating numpy array (accepts numpy arrays and torch tensors).

    Raises:
        ValueError: not 2-D, empty, or containing NaN.
    """
    if hasattr(scores, "detach") and hasattr(scores, "cpu"):  # torch.Tensor without importing torch
        t = scores.detach().cpu()
        if not t.is_floating_point():
            t = t.double()
        elif str(t.dtype) not in ("torch.float32", "torch.float64"):
            t = t.float()  # bfloat16 / float16 have no exact numpy counterpart
        arr = t.numpy()
    else:
        arr = np.asarray(scores)
        if not np.issubdtype(arr.dtype, np.floating):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
                raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
            arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(arr.shape)}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN at {int(np.isnan(arr).sum())} positions")
    return arr


def _as_relevance(relevance: Any, shape: tuple[int, int]) -> np.ndarray:
    if hasattr(relevance, "detach"):
        relevance = relevance.detach().cpu().numpy()
    rel = np.asarray(relevance)
    if rel.shape != shape:
        raise ValueError(f"relevance has shape {rel.shape} but scores have shape {shape}")
    if rel.dtype != bool:
        if not np.isin(rel, (0, 1)).all():
            raise ValueError("relevance must be boolean (or 0/1)")
        rel = rel.astype(bool)
    return rel


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out) or any(int(k) != k for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    return out


def _check_text_to_audio(text_to_audio: Any, n_audio: int, n_text: int) -> np.ndarray:
    if hasattr(text_to_audio, "detach"):
        text_to_audio = text_to_audio.detach().cpu().numpy()
    t2a = np.asarray(text_to_audio)
    if t2a.ndim != 1 or t2a.shape[0] != n_text:
        raise ValueError(
            f"text_to_audio must have shape ({n_text},) (one clip index per caption / score column), "
            f"got {t2a.shape}"
        )
    if not np.issubdtype(t2a.dtype, np.integer):
        raise ValueError(f"text_to_audio must hold integer clip indices, got dtype {t2a.dtype}")
    bad = (t2a < 0) | (t2a >= n_audio)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"text_to_audio[{i}] = {int(t2a[i])} is not a clip index in [0, {n_audio}) "
            f"({int(bad.sum())} out-of-range entries)"
        )
    return t2a.astype(np.int64)


def relevance_from_text_to_audio(text_to_audio: Any, n_audio: int) -> np.ndarray:
    """Boolean (n_audio, n_text) matrix: ``rel[a, t]`` is True when caption ``t`` describes clip ``a``."""
    t2a = _check_text_to_audio(text_to_audio, n_audio, len(np.asarray(text_to_audio)))
    rel = np.zeros((n_audio, t2a.shape[0]), dtype=bool)
    rel[t2a, np.arange(t2a.shape[0])] = True
    return rel


# ---------------------------------------------------------------------------------------------
# Ranks
# ---------------------------------------------------------------------------------------------


def _pair_ranks_counting(scores: np.ndarray, rel: np.ndarray, q: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Pessimistic rank of each (query q, relevant item j) pair by counting who outranks it."""
    n_items = scores.shape[1]
    out = np.empty(q.shape[0], dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // n_items)
    col = np.arange(n_items)
    for start in range(0, q.shape[0], step):
        qs, js = q[start : start + step], j[start : start + step]
        rows = scores[qs]  # (b, n_items)
        s = scores[qs, js][:, None]
        ahead = rows > s
        tied = rows == s
        tied_nonrel = tied & ~rel[qs]
        tied_rel_before = tied & rel[qs] & (col[None, :] < js[:, None])
        out[start : start + step] = 1 + ahead.sum(1) + tied_nonrel.sum(1) + tied_rel_before.sum(1)
    return out


def _pair_ranks_sorting(scores: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same ranks as :func:`_pair_ranks_counting`, via one lexicographic sort per query."""
    n_q, n_items = scores.shape
    qs_all, js_all, rs_all = [], [], []
    step = max(1, _CHUNK_ELEMENTS // n_items)
    for start in range(0, n_q, step):
        s = scores[start : start + step]
        r = rel[start : start + step]
        # primary: descending score; then non-relevant first (pessimistic); then index (stable)
        order = np.lexsort((r, -s), axis=-1)
        ranked_rel = np.take_along_axis(r, order, axis=1)
        qi, pos = np.nonzero(ranked_rel)
        qs_all.append(qi + start)
        js_all.append(order[qi, pos])
        rs_all.append(pos + 1)
    q = np.concatenate(qs_all)
    j = np.concatenate(js_all)
    ranks = np.concatenate(rs_all).astype(np.int64)
    # order pairs like np.nonzero(rel) does: by query, then item index
    o = np.lexsort((j, q))
    return q[o], j[o], ranks[o]


def _ranks(s: np.ndarray, rel: np.ndarray, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """:func:`relevant_ranks` on validated arrays."""
    n_q = s.shape[0]
    n_rel = rel.sum(1).astype(np.int64)
    if method == "auto":
        method = "count" if n_rel.sum() <= _DENSE_RELEVANCE * n_q else "sort"
    if method == "count":
        q, j = np.nonzero(rel)
        pair_ranks = _pair_ranks_counting(s, rel, q, j)
    elif method == "sort":
        q, j, pair_ranks = _pair_ranks_sorting(s, rel)
    else:
        raise ValueError(f"method must be 'auto', 'count' or 'sort', got {method!r}")
    ranks = np.zeros((n_q, max(int(n_rel.max()), 1)), dtype=np.int64)
    # slot of each pair within its query (pairs are grouped by query, in item order)
    first = np.concatenate(([0], np.cumsum(n_rel)[:-1]))
    ranks[q, np.arange(q.shape[0]) - first[q]] = pair_ranks
    valid = np.arange(ranks.shape[1])[None, :] < n_rel[:, None]
    ranks = np.where(valid, ranks, np.iinfo(np.int64).max)
    ranks.sort(axis=1)
    return np.where(valid, ranks, 0), n_rel


def relevant_ranks(scores: Any, relevance: Any, method: Literal["auto", "count", "sort"] = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Ranks of every query's relevant items, sorted ascending per query.

    Args:
        scores: (n_queries, n_items) similarity scores, higher = more relevant.
        relevance: (n_queries, n_items) boolean matrix of relevant items.
        method: ``"count"`` (fast for few relevant items per query), ``"sort"`` (for dense
            relevance) or ``"auto"``; all give identical results.

    Returns:
        ``(ranks, n_relevant)``: ``ranks`` is an (n_queries, max(1, max_relevant)) int64 array
        whose row ``q`` holds the 1-based pessimistic ranks of query ``q``'s relevant items in
        ascending order, padded with 0 beyond ``n_relevant[q]``.
    """
    s = as_score_matrix(scores)
    return _ranks(s, _as_relevance(relevance, s.shape), method)


def ranks_from_scores(scores: Any, relevance: Any) -> np.ndarray:
    """Rank of each query's best-ranked relevant item, shape (n_queries,); 0 where a query has none."""
    ranks, _ = relevant_ranks(scores, relevance)
    return ranks[:, 0].copy()


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _average_precision(ranks: np.ndarray, n_rel: np.ndarray, k: int, convention: MapConvention) -> np.ndarray:
    valid = np.arange(ranks.shape[1])[None, :] < n_rel[:, None]
    hit = valid & (ranks <= k)
    i = np.cumsum(hit, axis=1)  # i-th relevant hit (ranks are sorted ascending)
    prec = np.where(hit, i / np.where(hit, ranks, 1), 0.0)
    if convention == "torchmetrics":
        denom = hit.sum(1)
    elif convention == "min_relevant_k":
        denom = np.minimum(n_rel, k)
    else:
        raise ValueError(f"map_convention must be 'torchmetrics' or 'min_relevant_k', got {convention!r}")
    return np.where(denom > 0, prec.sum(1) / np.maximum(denom, 1), 0.0)


def retrieval_metrics(scores: Any, relevance: Any, ks: Sequence[int] = DEFAULT_KS, *, map_k: int = DEFAULT_MAP_K,
                      map_convention: MapConvention = "torchmetrics", empty: EmptyAction = "error") -> dict[str, float]:
    """Retrieval metrics for a score matrix and boolean relevance matrix.

    Args:
        scores: (n_queries, n_items), higher = more relevant (numpy or torch).
        relevance: (n_queries, n_items) boolean; at least one True per query unless ``empty``
            says otherwise.
        ks: cut-offs for ``R@k`` and ``HR@k`` (clipped to n_items, as torchmetrics does).
        map_k: cut-off for ``mAP@{map_k}``.
        map_convention: ``"torchmetrics"`` (divide by relevant hits in top k) or
            ``"min_relevant_k"`` (divide by ``min(n_relevant, k)``).
        empty: queries without a relevant item: ``"error"`` (ValueError), ``"skip"`` (left
            out of all means) or ``"neg"`` (score 0, torchmetrics' default; left out of ranks).

    Returns:
        ``{"R@k": ..., "HR@k": ..., "mAP@{map_k}": ..., "MRR", "median_rank", "mean_rank",
        "n_queries"}`` -- see the module docstring for each definition.
    """
    s = as_score_matrix(scores)
    ranks, n_rel = _ranks(s, _as_relevance(relevance, s.shape))
    return _metrics_from_ranks(ranks, n_rel, s.shape[1], ks, map_k, map_convention, empty)


def _metrics_from_ranks(ranks: np.ndarray, n_rel: np.ndarray, n_items: int, ks: Sequence[int], map_k: int,
                        map_convention: MapConvention, empty: EmptyAction) -> dict[str, float]:
    """:func:`retrieval_metrics` given the output of :func:`relevant_ranks`."""
    ks = _check_ks(ks)
    (map_k,) = _check_ks((map_k,))
    if empty not in ("error", "skip", "neg"):
        raise ValueError(f"empty must be 'error', 'skip' or 'neg', got {empty!r}")
    if map_convention not in ("torchmetrics", "min_relevant_k"):
        raise ValueError(f"map_convention must be 'torchmetrics' or 'min_relevant_k', got {map_convention!r}")
    has = n_rel > 0
    if not has.all():
        if empty == "error":
            missing = np.flatnonzero(~has)
            raise ValueError(
                f"{missing.size} queries have no relevant item (first: query {int(missing[0])}); "
                "pass empty='skip' or empty='neg' to allow this"
            )
        if empty == "skip":
            ranks, n_rel, has = ranks[has], n_rel[has], has[has]
        if not has.any():
            raise ValueError("no query has a relevant item")
    valid = np.arange(ranks.shape[1])[None, :] < n_rel[:, None]
    denom = np.maximum(n_rel, 1)
    out: dict[str, float] = {}
    for k in ks:
        kk = min(k, n_items)
        in_top = valid & (ranks <= kk)
        out[f"R@{k}"] = float(np.mean(np.where(has, in_top.sum(1) / denom, 0.0)))
        out[f"HR@{k}"] = float(np.mean(in_top.any(1)))
    out[f"mAP@{map_k}"] = float(np.mean(_average_precision(ranks, n_rel, min(map_k, n_items), map_convention)))
    best = ranks[has, 0].astype(np.float64)
    out["MRR"] = float(np.sum(1.0 / best) / ranks.shape[0])
    out["median_rank"] = float(np.median(best))
    out["mean_rank"] = float(np.mean(best))
    out["n_queries"] = float(ranks.shape[0])
    return out


def recall_at_k_curve(best_ranks: Any, max_k: int = 10) -> np.ndarray:
    """Fraction of queries whose best-ranked relevant item is within the top k, for k = 1..max_k.

    ``best_ranks`` are 1-based ranks (e.g. ``RetrievalResult.ranks["t2a"]``). Returns shape (max_k,).
    """
    r = np.asarray(best_ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"best_ranks must be a non-empty 1-D array, got shape {r.shape}")
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    r = r[r > 0]
    counts = np.bincount(np.minimum(r, max_k + 1), minlength=max_k + 2)[1 : max_k + 1]
    return np.cumsum(counts) / np.asarray(best_ranks).size
