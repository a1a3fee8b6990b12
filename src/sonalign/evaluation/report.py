"""Evaluation reports: ``report.json``, ``report.md`` and PNG plots, written atomically.

Layout of a report directory (see :func:`write_report`)::

    report.json          all numbers, conventions and metadata (model, data, split, template, noise)
    report.md            Markdown tables: retrieval (both directions), zero-shot, robustness, probe
    recall_at_k.png      recall@k for k = 1..K, text-to-audio and audio-to-text (if ranks are known)
    robustness_snr.png   metrics against SNR: clean, 15, 10, 5 dB ... (if robustness was run)

Every file is written to a temporary file in the same directory and moved into place with
``os.replace``, so readers never see a half-written report. No timestamp is added
automatically (reports of identical inputs are byte-identical); put one in ``metadata`` if
wanted. Plots use matplotlib's object API with the Agg canvas, so the global pyplot backend
is never touched.

:func:`format_table` renders a mapping or rows as plain text, Markdown or a rich box table for
the terminal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from sonalign.evaluation.plots import plot_recall_at_k, plot_robustness
from sonalign.evaluation.retrieval import RetrievalResult
from sonalign.utils.atomic import atomic_write_bytes, atomic_write_text  # noqa: F401 (atomic_write_text: re-exported)

__all__ = [
    "SCHEMA",
    "ReportPaths",
    "atomic_write_bytes",
    "atomic_write_text",
    "to_jsonable",
    "snr_label",
    "normalise_robustness",
    "build_report_dict",
    "render_markdown",
    "plot_recall_at_k",
    "plot_robustness",
    "write_report",
    "load_report",
    "format_table",
    "rich_table",
]

SCHEMA = "sonalign.report/1"
RETRIEVAL_COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "median_rank", "mean_rank")


@dataclass
class ReportPaths:
    """Paths of the files a report wrote."""

    directory: Path
    json: Path
    markdown: Path
    plots: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Convert results, numpy values, paths and dataclasses to plain JSON types.

    Non-finite floats become ``None`` so the output is strict JSON.
    """
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# ---------------------------------------------------------------------------------------------
# Normalising inputs
# ---------------------------------------------------------------------------------------------


def snr_label(snr_db: Any) -> str:
    """``None``/``"clean"``/``inf`` -> ``"clean"``; ``10`` -> ``"10 dB"``."""
    value = _snr_value(snr_db)
    return "clean" if value is None else f"{value:g} dB"


def _snr_value(snr_db: Any) -> float | None:
    if snr_db is None:
        return None
    if isinstance(snr_db, str):
        text = snr_db.strip().lower().removesuffix("db").strip()
        if text in ("clean", "inf", "+inf", ""):
            return None
        try:
            snr_db = float(text)
        except ValueError:
            raise ValueError(f"robustness condition {snr_db!r} is neither 'clean' nor an SNR in dB") from None
    value = float(snr_db)
    if math.isnan(value):
        raise ValueError("robustness condition is NaN")
    return None if math.isinf(value) and value > 0 else value


def normalise_robustness(robustness: Mapping[Any, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{None|"clean"|snr_db: {metric: value}}`` -> list ordered clean first, then SNR descending.

    Each entry: ``{"condition": "10 dB", "snr_db": 10.0, "metrics": {...}}``.
    """
    rows = []
    seen: set[float | None] = set()
    for cond, metrics in robustness.items():
        value = _snr_value(cond)
        if value in seen:
            raise ValueError(f"robustness condition {snr_label(value)!r} appears twice")
        seen.add(value)
        rows.append({"condition": snr_label(value), "snr_db": value, "metrics": {k: float(v) for k, v in metrics.items()}})
    rows.sort(key=lambda r: (r["snr_db"] is not None, -(r["snr_db"] or 0.0)))
    return rows


def _named(results: Any, default_name: str) -> dict[str, Any]:
    """A single result or a mapping name -> result, as a mapping."""
    if results is None:
        return {}
    if isinstance(results, Mapping) and not ("metrics" in results and "conventions" in results):
        return dict(results)
    return {default_name: results}


def _as_dict(result: Any) -> dict[str, Any]:
    if isinstance(result, Mapping):
        return dict(to_jsonable(result))
    return dict(to_jsonable(result.to_dict()))


def build_report_dict(
    *,
    retrieval: RetrievalResult | Mapping[str, Any] | None = None,
    zeroshot: Any = None,
    robustness: Mapping[Any, Mapping[str, Any]] | None = None,
    probe: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-ready content of ``report.json`` (without the ``files`` list)."""
    report: dict[str, Any] = {"schema": SCHEMA, "metadata": to_jsonable(dict(metadata or {}))}
    if retrieval is not None:
        report["retrieval"] = _as_dict(retrieval)
    zs = _named(zeroshot, "zeroshot")
    if zs:
        report["zeroshot"] = {name: _as_dict(r) for name, r in zs.items()}
    if robustness:
        report["robustness"] = to_jsonable(normalise_robustness(robustness))
    pr = _named(probe, "probe")
    if pr:
        report["probe"] = {name: _as_dict(r) for name, r in pr.items()}
    return report


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _fmt(value: Any, floatfmt: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "-" if not math.isfinite(float(value)) else format(float(value), floatfmt)
    return str(value)


def _rows_headers(
    data: Mapping[str, Any] | Sequence[Sequence[Any]], headers: Sequence[str] | None, floatfmt: str
) -> tuple[list[str], list[list[str]]]:
    if isinstance(data, Mapping):
        rows = [[str(k), _fmt(v, floatfmt)] for k, v in data.items()]
        hdr = list(headers) if headers is not None else ["metric", "value"]
    else:
        rows = [[_fmt(v, floatfmt) for v in row] for row in data]
        hdr = list(headers) if headers is not None else []
    width = len(hdr) if hdr else (len(rows[0]) if rows else 0)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"row {i} has {len(row)} cells, expected {width}")
    return hdr, rows


def _markdown_table(hdr: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plain_table(hdr: list[str], rows: list[list[str]], title: str | None) -> str:
    cols = [hdr] + rows if hdr else rows
    widths = [max(len(r[i]) for r in cols) for i in range(len(cols[0]))] if cols else []

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [title] if title else []
    if hdr:
        out += [line(hdr), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def rich_table(
    data: Mapping[str, Any] | Sequence[Sequence[Any]],
    headers: Sequence[str] | None = None,
    *,
    title: str | None = None,
    floatfmt: str = ".4f",
) -> Any:
    """A ``rich.table.Table`` for ``console.print`` (numbers right-aligned)."""
    from rich.table import Table

    hdr, rows = _rows_headers(data, headers, floatfmt)
    table = Table(title=title, show_header=bool(hdr))
    for j, h in enumerate(hdr or [""] * (len(rows[0]) if rows else 0)):
        table.add_column(h, justify="left" if j == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def format_table(
    data: Mapping[str, Any] | Sequence[Sequence[Any]],
    headers: Sequence[str] | None = None,
    *,
    title: str | None = None,
    style: Literal["plain", "markdown", "rich"] = "plain",
    floatfmt: str = ".4f",
) -> str:
    """Render a table as a string.

    Args:
        data: a mapping ``{metric: value}`` (two columns) or a sequence of rows.
        headers: column names (default ``["metric", "value"]`` for a mapping).
        title: optional title line.
        style: ``"plain"`` (aligned text), ``"markdown"`` (pipe table) or ``"rich"`` (box
            drawing via rich, without colour codes).
        floatfmt: format spec for floats; ``None``/NaN print as ``-``.
    """
    if style == "rich":
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=200, color_system=None, force_terminal=False).print(
            rich_table(data, headers, title=title, floatfmt=floatfmt)
        )
        return buf.getvalue().rstrip("\n")
    hdr, rows = _rows_headers(data, headers, floatfmt)
    if style == "markdown":
        if not hdr:
            raise ValueError("a Markdown table needs headers")
        return (f"**{title}**\n\n" if title else "") + _markdown_table(hdr, rows)
    if style == "plain":
        return _plain_table(hdr, rows, title)
    raise ValueError(f"style must be 'plain', 'markdown' or 'rich', got {style!r}")


# ---------------------------------------------------------------------------------------------
# Markdown report
# ---------------------------------------------------------------------------------------------


def _retrieval_md(r: Mapping[str, Any]) -> list[str]:
    m = r.get("metrics", {})
    cols = [c for c in RETRIEVAL_COLUMNS if any(f"{d}/{c}" in m for d in ("t2a", "a2t"))]
    rows = [[name] + [m.get(f"{d}/{c}") for c in cols] for d, name in (("t2a", "text-to-audio"), ("a2t", "audio-to-text"))]
    out = ["## Retrieval", ""]
    if "n_audio" in r:
        out += [f"{r['n_audio']} clips, {r['n_text']} captions.", ""]
    out += [format_table(rows, ["direction"] + [c.replace("_", " ") for c in cols], style="markdown"), ""]
    if "primary" in m:
        how = r.get("conventions", {}).get("primary")
        out += [f"**Primary metric:** {_fmt(m['primary'])}" + (f" -- {how}" if how else ""), ""]
    conv = r.get("conventions", {})
    if conv:
        out += ["Conventions:", ""] + [f"- `{k}`: {v}" for k, v in conv.items()] + [""]
    return out


def _zeroshot_md(zs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = [
        [name, r.get("template") or "-", r.get("top1"), r.get("top5"), r.get("balanced_accuracy"), r.get("n")]
        for name, r in zs.items()
    ]
    out = ["## Zero-shot classification", ""]
    out += [format_table(rows, ["task", "template", "top-1", "top-5", "balanced acc.", "clips"], style="markdown"), ""]
    for name, r in zs.items():
        per = r.get("per_class") or {}
        if per:
            out += [f"Per-class accuracy, {name}:", "", format_table(per, ["class", "accuracy"], style="markdown"), ""]
    return out


def _robustness_md(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["metrics"] if k not in keys]
    table = [[row["condition"]] + [row["metrics"].get(k) for k in keys] for row in rows]
    return ["## Robustness to additive noise", "", format_table(table, ["condition"] + keys, style="markdown"), ""]


def _probe_md(pr: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = [[name, r.get("UA"), r.get("WA"), r.get("C"), r.get("n_train"), r.get("n_test")] for name, r in pr.items()]
    return [
        "## Linear probe",
        "",
        format_table(rows, ["task", "UA", "WA", "C", "train", "test"], style="markdown"),
        "",
        "UA = unweighted accuracy (mean per-class recall); WA = weighted accuracy (overall accuracy).",
        "",
    ]


def render_markdown(report: Mapping[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """Markdown text of a report dict (as built by :func:`build_report_dict`)."""
    meta = report.get("metadata") or {}
    out = ["# sonalign evaluation report", ""]
    if meta:
        flat = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in meta.items()}
        out += [format_table(flat, ["field", "value"], style="markdown"), ""]
    if "retrieval" in report:
        out += _retrieval_md(report["retrieval"])
    if "zeroshot" in report:
        out += _zeroshot_md(report["zeroshot"])
    if "robustness" in report:
        out += _robustness_md(report["robustness"])
    if "probe" in report:
        out += _probe_md(report["probe"])
    for name, fname in (plots or {}).items():
        out += [f"![{name}]({fname})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(
    out_dir: str | Path,
    *,
    retrieval: RetrievalResult | Mapping[str, Any] | None = None,
    zeroshot: Any = None,
    robustness: Mapping[Any, Mapping[str, Any]] | None = None,
    probe: Any = None,
    metadata: Mapping[str, Any] | None = None,
    recall_max_k: int = 10,
    robustness_metrics: Sequence[str] | None = None,
) -> ReportPaths:
    """Write ``report.json``, ``report.md`` and plots into ``out_dir`` (created if needed).

    Args:
        out_dir: report directory.
        retrieval: a :class:`RetrievalResult` (its ``ranks`` give the recall@k plot) or its
            ``to_dict()`` (with ``ranks`` for the plot).
        zeroshot: a ``ZeroShotResult`` or a mapping ``task name -> ZeroShotResult``.
        robustness: ``{condition: {metric: value}}``, condition ``"clean"``/``None`` or an SNR in dB.
        probe: a ``ProbeResult`` or a mapping ``task name -> ProbeResult``.
        metadata: model, data, split, template, noise source (e.g. ``NoiseBank.describe()``)...
        recall_max_k: largest k of the recall@k plot (10 or 50, say).
        robustness_metrics: metrics to plot against SNR (default: those in [0, 1]).

    Returns:
        :class:`ReportPaths` of everything written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report_dict(
        retrieval=retrieval, zeroshot=zeroshot, robustness=robustness, probe=probe, metadata=metadata
    )
    plots: dict[str, Path] = {}
    ranks = retrieval.ranks if isinstance(retrieval, RetrievalResult) else (retrieval or {}).get("ranks")
    if ranks:
        plots["recall_at_k"] = atomic_write_bytes(out / "recall_at_k.png", plot_recall_at_k(ranks, recall_max_k))
    if report.get("robustness"):
        png = plot_robustness(report["robustness"], robustness_metrics)
        plots["robustness_snr"] = atomic_write_bytes(out / "robustness_snr.png", png)
    report["files"] = {"markdown": "report.md", **{k: p.name for k, p in plots.items()}}
    json_path = atomic_write_text(
        out / "report.json", json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n"
    )
    md_path = atomic_write_text(out / "report.md", render_markdown(report, {k: p.name for k, p in plots.items()}))
    return ReportPaths(directory=out, json=json_path, markdown=md_path, plots=plots)


def load_report(path: str | Path) -> dict[str, Any]:
    """Read ``report.json`` from a report directory (or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    with open(p, encoding="utf-8") as fh:
        return json.load(fh)
