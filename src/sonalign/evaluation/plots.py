"""The evaluation report's plots: recall@k curves and metrics against SNR, as PNG bytes (matplotlib, Agg)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sonalign.evaluation.retrieval import recall_at_k_curve


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def plot_recall_at_k(ranks: Mapping[str, Any], max_k: int = 10) -> bytes:
    """PNG bytes: recall@k (any relevant in top k) for k = 1..max_k, one line per direction."""
    from matplotlib.figure import Figure

    labels = {"t2a": "text-to-audio", "a2t": "audio-to-text"}
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot()
    ks = np.arange(1, max_k + 1)
    for direction, r in ranks.items():
        ax.plot(ks, recall_at_k_curve(np.asarray(r), max_k), marker="o", ms=3, label=labels.get(direction, direction))
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(1, max_k)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Retrieval recall@k")
    return _png(fig)


def plot_robustness(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None) -> bytes:
    """PNG bytes: each metric against condition (clean, then SNR descending).

    ``metrics`` defaults to every metric whose values all lie in [0, 1] (ranks are left out,
    they would squash the axis).
    """
    from matplotlib.figure import Figure

    if metrics is None:
        names: list[str] = []
        for row in rows:
            names += [k for k in row["metrics"] if k not in names]
        metrics = [
            k for k in names
            if all(0.0 <= row["metrics"].get(k, 0.0) <= 1.0 for row in rows if row["metrics"].get(k) is not None)
        ]
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for name in metrics:
        y = [row["metrics"].get(name, np.nan) for row in rows]
        y = [np.nan if v is None else v for v in y]
        ax.plot(x, y, marker="o", label=name)
    ax.set_xticks(x, [row["condition"] for row in rows])
    ax.set_xlabel("condition (SNR of added noise)")
    ax.set_ylabel("metric")
    ax.grid(alpha=0.3)
    if metrics:
        ax.legend(fontsize="small")
    ax.set_title("Degradation under additive noise")
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
