"""Cross-modal retrieval metrics: text-to-audio and audio-to-text (Clotho / AudioCaps protocol).

Everything here is a pure function of a score matrix and a relevance structure; no encoder
is involved. The core is :func:`retrieval_metrics`, which takes ``scores`` (n_queries,
n_items) and a boolean ``relevance`` matrix of the same shape and is used by both
directions (:func:`text_to_audio_metrics`, :func:`audio_to_text_metrics`,
:func:`evaluate_retrieval`).

Conventions (also returned in words in every result's ``conventions``):

* **Ranks** are 1-based. Every (query, relevant item) pair gets the rank of that item in the
  query's ranking by descending score.
* **Ties are pessimistic and deterministic**: an item tied with a non-relevant item ranks
  *behind* it; relevant items tied with each other keep their index order. A model whose
  scores are all equal therefore gets the worst possible ranks rather than a lucky R@1.
  torchmetrics breaks ties by ``torch.argsort``/``topk``, whose order among equal scores is
  unspecified; on tie-free scores the two agree exactly (the tests check this).
* ``R@k`` (:func:`retrieval_metrics`) is torchmetrics ``RetrievalRecall(top_k=k)``: the
  fraction of a query's relevant items ranked within the top k, averaged over queries.
* ``HR@k`` is torchmetrics ``RetrievalHitRate(top_k=k)``: 1 if *any* relevant item is in the
  top k. With one relevant item per query, ``R@k == HR@k``.
* ``mAP@k`` is torchmetrics ``RetrievalMAP(top_k=k)``: for one query with relevant items at
  ranks ``r_1 < r_2 < ...``, ``AP@k = (1/h) * sum_{i: r_i <= k} i / r_i`` where ``h`` is the
  number of relevant items within the top k (0 if ``h == 0``). Note that the denominator is
  the number of relevant items *retrieved* in the top k, not ``min(n_relevant, k)``; pass
  ``map_convention="min_relevant_k"`` for the latter. With a single relevant item both give
  ``1/rank if rank <= k else 0`` -- the DCASE 2022 Task 6b definition.
* ``median_rank``, ``mean_rank`` and ``MRR`` use each query's *best-ranked* relevant item.
* torchmetrics (1.9) silently treats relevant items whose score is ``<= 0`` as non-relevant
  in RetrievalRecall/RetrievalMAP/RetrievalMRR. That is not replicated here: every metric
  here depends only on the ranking, so it is invariant to shifting or scaling the scores
  (cosine similarities may be negative).

Direction-specific keys (:func:`evaluate_retrieval`): ``t2a/R@1`` ... ``a2t/mAP@10``,
``t2a/median_rank``, and ``primary`` = mean of t2a R@1, R@5, R@10.

Memory/time: ranks are computed by counting, per relevant pair, how many items outrank it,
in chunks of bounded size: O(n_relevant_pairs * n_items) comparisons, about 0.1 s for a
Clotho-size 1000 x 5000 matrix in both directions. Dense relevance falls back to one sort per
query (O(n_queries * n_items * log n_items)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

__all__ = [
    "RetrievalResult",
    "as_score_matrix",
    "relevance_from_text_to_audio",
    "relevant_ranks",
    "ranks_from_scores",
    "retrieval_metrics",
    "recall_at_k_curve",
    "text_to_audio_metrics",
    "audio_to_text_metrics",
    "evaluate_retrieval",
    "DEFAULT_KS",
    "DEFAULT_MAP_K",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_MAP_K = 10
MapConvention = Literal["torchmetrics", "min_relevant_k"]
EmptyAction = Literal["error", "skip", "neg"]

# Upper bound on the number of score comparisons materialised at once (bool array entries).
_CHUNK_ELEMENTS = 1 << 22
# Mean relevant items per query above which sorting beats counting.
_DENSE_RELEVANCE = 32

CONVENTIONS_GENERAL: dict[str, str] = {
    "ranks": "1-based rank of each relevant item in the query's ranking by descending score.",
    "ties": (
        "Pessimistic, deterministic: a relevant item tied with a non-relevant one ranks behind it; "
        "tied relevant items keep index order. Equal to torchmetrics on tie-free scores."
    ),
    "R@k": "torchmetrics RetrievalRecall(top_k=k): fraction of a query's relevant items in its top k, mean over queries.",
    "HR@k": "torchmetrics RetrievalHitRate(top_k=k): 1 if any relevant item is in the top k, mean over queries.",
    "mAP@k": (
        "torchmetrics RetrievalMAP(top_k=k): AP@k = (1/h) * sum over relevant items with rank r_i <= k "
        "of i / r_i (i-th relevant hit), h = number of relevant items in the top k, 0 if none; mean over "
        "queries. With one relevant item: 1/rank if rank <= k else 0 (DCASE 2022 Task 6b)."
    ),
    "median_rank": "Median over queries of the rank of the best-ranked relevant item.",
    "mean_rank": "Mean over queries of the rank of the best-ranked relevant item.",
    "MRR": "Mean over queries of 1 / rank of the best-ranked relevant item (torchmetrics RetrievalMRR).",
    "score_sign": (
        "Only the ranking matters; torchmetrics' rule that relevant items with score <= 0 count as "
        "non-relevant is not replicated."
    ),
}


@dataclass
class RetrievalResult:
    """Retrieval metrics for both directions.

    Attributes:
        metrics: flat mapping such as ``{"t2a/R@1": 0.12, "a2t/mAP@10": 0.2, "primary": ...}``.
        conventions: in words, which convention each metric key follows.
        ranks: ``{"t2a": (n_text,), "a2t": (n_audio,)}`` int arrays: rank of the best-ranked
            relevant item for every query (for plots such as recall@k curves).
        n_audio, n_text: sizes of the evaluated collection.
    """

    metrics: dict[str, float]
    conventions: dict[str, str]
    ranks: dict[str, np.ndarray] = field(default_factory=dict)
    n_audio: int = 0
    n_text: int = 0

    @property
    def primary(self) -> float:
        """The primary metric (mean of t2a R@1, R@5, R@10)."""
        return self.metrics["primary"]

    def recall_curve(self, direction: str, max_k: int = 10) -> np.ndarray:
        """Recall@k for k = 1..max_k (any-relevant convention) for ``"t2a"`` or ``"a2t"``."""
        if direction not in self.ranks:
            raise ValueError(f"unknown direction {direction!r}; have {sorted(self.ranks)}")
        return recall_at_k_curve(self.ranks[direction], max_k)

    def to_dict(self, include_ranks: bool = False) -> dict[str, Any]:
        """JSON-ready dict: metrics, conventions, sizes (and ranks as lists if asked)."""
        out: dict[str, Any] = {
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "conventions": dict(self.conventions),
            "n_audio": int(self.n_audio),
            "n_text": int(self.n_text),
        }
        if include_ranks:
            out["ranks"] = {k: v.astype(int).tolist() for k, v in self.ranks.items()}
        return out


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


def relevant_ranks(
    scores: Any, relevance: Any, method: Literal["auto", "count", "sort"] = "auto"
) -> tuple[np.ndarray, np.ndarray]:
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


def retrieval_metrics(
    scores: Any,
    relevance: Any,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_k: int = DEFAULT_MAP_K,
    map_convention: MapConvention = "torchmetrics",
    empty: EmptyAction = "error",
) -> dict[str, float]:
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


def _metrics_from_ranks(
    ranks: np.ndarray,
    n_rel: np.ndarray,
    n_items: int,
    ks: Sequence[int],
    map_k: int,
    map_convention: MapConvention,
    empty: EmptyAction,
) -> dict[str, float]:
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


# ---------------------------------------------------------------------------------------------
# Directions
# ---------------------------------------------------------------------------------------------


def _directional(prefix: str, general: dict[str, float], ks: tuple[int, ...], recall_key: str) -> dict[str, float]:
    out = {f"{prefix}/R@{k}": general[f"{recall_key}@{k}"] for k in ks}
    for key, value in general.items():
        if key.startswith(("mAP@", "median_rank", "mean_rank", "MRR")):
            out[f"{prefix}/{key}"] = value
    return out


def text_to_audio_metrics(
    scores: Any,
    text_to_audio: Any,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_k: int = DEFAULT_MAP_K,
    map_convention: MapConvention = "torchmetrics",
) -> tuple[dict[str, float], np.ndarray]:
    """Text-to-audio retrieval: every caption queries all clips; exactly one clip is relevant.

    Args:
        scores: (n_audio, n_text) audio-by-caption similarity matrix.
        text_to_audio: (n_text,) clip index of each caption.

    Returns:
        ``(metrics, ranks)``: metrics keyed ``t2a/R@k``, ``t2a/mAP@10``, ``t2a/median_rank``,
        ``t2a/mean_rank``, ``t2a/MRR``; ranks (n_text,) of each caption's clip.
    """
    s = as_score_matrix(scores)
    ks = _check_ks(ks)
    t2a = _check_text_to_audio(text_to_audio, s.shape[0], s.shape[1])
    rel = np.zeros((s.shape[1], s.shape[0]), dtype=bool)
    rel[np.arange(s.shape[1]), t2a] = True
    st = np.ascontiguousarray(s.T)
    ranks, n_rel = _ranks(st, rel)
    general = _metrics_from_ranks(ranks, n_rel, st.shape[1], ks, map_k, map_convention, "error")
    return _directional("t2a", general, ks, "R"), ranks[:, 0].copy()


def audio_to_text_metrics(
    scores: Any,
    text_to_audio: Any,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_k: int = DEFAULT_MAP_K,
    map_convention: MapConvention = "torchmetrics",
) -> tuple[dict[str, float], np.ndarray]:
    """Audio-to-text retrieval: every clip queries all captions; its own captions are relevant.

    ``a2t/R@k`` follows the Clotho/AudioCaps convention: a hit when the *best-ranked* relevant
    caption is in the top k (torchmetrics RetrievalHitRate). ``a2t/mAP@k`` averages over all
    relevant captions (torchmetrics RetrievalMAP). Ranks are those of the best-ranked caption.

    Raises:
        ValueError: a clip has no caption.
    """
    s = as_score_matrix(scores)
    ks = _check_ks(ks)
    t2a = _check_text_to_audio(text_to_audio, s.shape[0], s.shape[1])
    rel = np.zeros(s.shape, dtype=bool)
    rel[t2a, np.arange(s.shape[1])] = True
    no_caption = np.flatnonzero(~rel.any(1))
    if no_caption.size:
        raise ValueError(
            f"{no_caption.size} clips have no caption in text_to_audio (first: clip {int(no_caption[0])}); "
            "audio-to-text retrieval needs at least one caption per clip"
        )
    ranks, n_rel = _ranks(s, rel)
    general = _metrics_from_ranks(ranks, n_rel, s.shape[1], ks, map_k, map_convention, "error")
    return _directional("a2t", general, ks, "HR"), ranks[:, 0].copy()


def _conventions(ks: tuple[int, ...], map_k: int, map_convention: MapConvention, captions_per_clip: str) -> dict[str, str]:
    ap = (
        "AP@k = (1/h) * sum_{relevant hits i within top k} i / rank_i, h = relevant hits in top k "
        "(torchmetrics RetrievalMAP(top_k=k))"
        if map_convention == "torchmetrics"
        else "AP@k = sum_{relevant hits i within top k} i / rank_i / min(n_relevant, k)"
    )
    kstr = ", ".join(str(k) for k in ks)
    return {
        "ties": CONVENTIONS_GENERAL["ties"],
        "ranks": "1-based; t2a: rank of the caption's clip among all clips; a2t: rank of the clip's best-ranked caption among all captions.",
        "t2a/R@k": f"k in ({kstr}): fraction of captions whose clip is in the top k (one relevant clip; torchmetrics RetrievalRecall == RetrievalHitRate).",
        f"t2a/mAP@{map_k}": f"{ap}; one relevant clip so AP@{map_k} = 1/rank if rank <= {map_k} else 0 (DCASE 2022 Task 6b).",
        "t2a/median_rank": "median over captions of the rank of the caption's clip.",
        "t2a/mean_rank": "mean over captions of the rank of the caption's clip.",
        "t2a/MRR": "mean over captions of 1/rank of the caption's clip.",
        "a2t/R@k": (
            f"k in ({kstr}): fraction of clips whose best-ranked relevant caption is in the top k "
            "(Clotho/AudioCaps convention; torchmetrics RetrievalHitRate, not RetrievalRecall)."
        ),
        f"a2t/mAP@{map_k}": f"{ap}; over all of the clip's captions ({captions_per_clip}).",
        "a2t/median_rank": "median over clips of the rank of the best-ranked relevant caption.",
        "a2t/mean_rank": "mean over clips of the rank of the best-ranked relevant caption.",
        "a2t/MRR": "mean over clips of 1/rank of the best-ranked relevant caption.",
        "primary": "mean of t2a/R@1, t2a/R@5 and t2a/R@10 (text-to-audio is the DCASE task direction).",
        "score_sign": CONVENTIONS_GENERAL["score_sign"],
    }


def evaluate_retrieval(
    scores: Any,
    text_to_audio: Any,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    map_k: int = DEFAULT_MAP_K,
    map_convention: MapConvention = "torchmetrics",
) -> RetrievalResult:
    """Both retrieval directions for an (n_audio, n_text) score matrix.

    Args:
        scores: (n_audio, n_text) similarities (e.g. ``audio_emb @ text_emb.T``), numpy or torch.
        text_to_audio: (n_text,) int: the clip each caption describes (Clotho: 5 per clip).
        ks: recall cut-offs; must include 1, 5 and 10 for the ``primary`` metric.
        map_k: mAP cut-off (10 in DCASE 2022 Task 6b).
        map_convention: see :func:`retrieval_metrics`.

    Returns:
        :class:`RetrievalResult` with keys ``t2a/R@k``, ``t2a/mAP@10``, ``t2a/median_rank``,
        ``t2a/mean_rank``, ``t2a/MRR``, the same for ``a2t/``, ``primary``; ``ranks`` per
        direction; and ``conventions`` in words.
    """
    s = as_score_matrix(scores)
    ks = _check_ks(ks)
    missing = [k for k in (1, 5, 10) if k not in ks]
    if missing:
        raise ValueError(f"ks must include 1, 5 and 10 for the primary metric; missing {missing}")
    t2a = _check_text_to_audio(text_to_audio, s.shape[0], s.shape[1])
    m_t2a, r_t2a = text_to_audio_metrics(s, t2a, ks, map_k=map_k, map_convention=map_convention)
    m_a2t, r_a2t = audio_to_text_metrics(s, t2a, ks, map_k=map_k, map_convention=map_convention)
    metrics = {**m_t2a, **m_a2t}
    metrics["primary"] = float(np.mean([metrics[f"t2a/R@{k}"] for k in (1, 5, 10)]))
    counts = np.bincount(t2a, minlength=s.shape[0])
    per_clip = f"{int(counts.min())}" if counts.min() == counts.max() else f"{int(counts.min())}-{int(counts.max())}"
    return RetrievalResult(
        metrics=metrics,
        conventions=_conventions(ks, map_k, map_convention, f"{per_clip} captions per clip"),
        ranks={"t2a": r_t2a, "a2t": r_a2t},
        n_audio=int(s.shape[0]),
        n_text=int(s.shape[1]),
    )
