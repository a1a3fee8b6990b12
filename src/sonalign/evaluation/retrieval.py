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
from typing import Any, Sequence

import numpy as np

from sonalign.evaluation.ranking import (  # noqa: F401 (public names re-exported)
    DEFAULT_KS,
    DEFAULT_MAP_K,
    EmptyAction,
    MapConvention,
    _check_ks,
    _check_text_to_audio,
    _metrics_from_ranks,
    _ranks,
    as_score_matrix,
    ranks_from_scores,
    recall_at_k_curve,
    relevance_from_text_to_audio,
    relevant_ranks,
    retrieval_metrics,
)

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
# Directions
# ---------------------------------------------------------------------------------------------


def _checked(scores: Any, text_to_audio: Any, ks: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    s = as_score_matrix(scores)
    return s, _check_ks(ks), _check_text_to_audio(text_to_audio, s.shape[0], s.shape[1])


def _directional(prefix: str, general: dict[str, float], ks: tuple[int, ...], recall_key: str) -> dict[str, float]:
    out = {f"{prefix}/R@{k}": general[f"{recall_key}@{k}"] for k in ks}
    for key, value in general.items():
        if key.startswith(("mAP@", "median_rank", "mean_rank", "MRR")):
            out[f"{prefix}/{key}"] = value
    return out


def text_to_audio_metrics(scores: Any, text_to_audio: Any, ks: Sequence[int] = DEFAULT_KS, *,
                          map_k: int = DEFAULT_MAP_K, map_convention: MapConvention = "torchmetrics") -> tuple[dict[str, float], np.ndarray]:
    """Text-to-audio retrieval: every caption queries all clips; exactly one clip is relevant.

    Args:
        scores: (n_audio, n_text) audio-by-caption similarity matrix.
        text_to_audio: (n_text,) clip index of each caption.

    Returns:
        ``(metrics, ranks)``: metrics keyed ``t2a/R@k``, ``t2a/mAP@10``, ``t2a/median_rank``,
        ``t2a/mean_rank``, ``t2a/MRR``; ranks (n_text,) of each caption's clip.
    """
    s, ks, t2a = _checked(scores, text_to_audio, ks)
    rel = np.zeros((s.shape[1], s.shape[0]), dtype=bool)
    rel[np.arange(s.shape[1]), t2a] = True
    st = np.ascontiguousarray(s.T)
    ranks, n_rel = _ranks(st, rel)
    general = _metrics_from_ranks(ranks, n_rel, st.shape[1], ks, map_k, map_convention, "error")
    return _directional("t2a", general, ks, "R"), ranks[:, 0].copy()


def audio_to_text_metrics(scores: Any, text_to_audio: Any, ks: Sequence[int] = DEFAULT_KS, *,
                          map_k: int = DEFAULT_MAP_K, map_convention: MapConvention = "torchmetrics") -> tuple[dict[str, float], np.ndarray]:
    """Audio-to-text retrieval: every clip queries all captions; its own captions are relevant.

    ``a2t/R@k`` follows the Clotho/AudioCaps convention: a hit when the *best-ranked* relevant
    caption is in the top k (torchmetrics RetrievalHitRate). ``a2t/mAP@k`` averages over all
    relevant captions (torchmetrics RetrievalMAP). Ranks are those of the best-ranked caption.

    Raises:
        ValueError: a clip has no caption.
    """
    s, ks, t2a = _checked(scores, text_to_audio, ks)
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


def evaluate_retrieval(scores: Any, text_to_audio: Any, ks: Sequence[int] = DEFAULT_KS, *, map_k: int = DEFAULT_MAP_K,
                       map_convention: MapConvention = "torchmetrics") -> RetrievalResult:
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
