"""Render docs/performance.md from bench/results/*.json with bench/templates/performance.md.j2.

The template holds the prose and the tables; this script only loads the result files and derives
the few values a table needs (goals met, profile shares, commit-cost ratios).

    python bench/performance_report.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jinja2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT  # noqa: E402

NAMES = ("features", "encoders", "index", "index_no_transcripts", "search", "search_milvus", "load", "search_cli", "search_quality", "scaling",
         "ceiling", "profile_index")
STAGES = {"prepare": "decode, energy gate, resample to 16 kHz, cut segments at 44.1 kHz", "vad": "silero-vad (batched streams)",
          "cnn": "aisfx CNN with its mel spectrogram and the alignment head"}


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def goals(r: dict) -> list[dict]:
    """One row per goal of the issues, met or not, from the result files."""
    rows = []
    if r["features"]:
        rows.append({"goal": "feature extraction >= 50x real time (2 cores)", "measured": f"{r['features']['x_realtime']}x", "met": r["features"]["x_realtime"] >= 50})
    for dev, ratio in (r["encoders"] or {}).get("ratio_sonalign_over_clap", {}).items():
        rows.append({"goal": f"encoder throughput >= 2x CLAP-HTSAT ({dev})", "measured": f"{ratio}x", "met": ratio >= 2})
    for key, what in (("index", "with transcripts"), ("index_no_transcripts", "without transcripts")):
        for part in ("folder", "long"):
            run = (r[key] or {}).get(part)
            if run:
                rows.append({"goal": f"indexing >= 100x real time end to end, {what}, {part}", "measured": f"{run['x_realtime']}x", "met": run["x_realtime"] >= 100})
    for res in (r["search"] or {}).get("results", []):
        if res["n"] >= 1_000_000 and res.get("hnsw") and res.get("data", "structured") == "structured":
            ok = [s for s in res["hnsw"]["sweep"] if s["recall_at_10"] >= 0.98]
            best = min(ok, key=lambda s: s["single_p50_ms"]) if ok else None
            rows.append({"goal": "1M vectors: recall@10 >= 0.98 with single-query p50 < 5 ms",
                         "measured": f"ef {best['ef_search']}: recall {best['recall_at_10']}, p50 {best['single_p50_ms']} ms" if best else "no efSearch reached 0.98",
                         "met": bool(best and best["single_p50_ms"] < 5)})
    if r["search_cli"]:
        rows.append({"goal": "`sonalign search` on a small index < 2.5 s", "measured": f"{r['search_cli']['search']['median_s']} s", "met": r["search_cli"]["search"]["median_s"] < 2.5})
    return rows


def profile(pr: dict | None) -> tuple[list[dict], list[str]]:
    if not pr:
        return [], ["-", "-"]
    by = {run["transcripts"]: run for run in pr["runs"]}
    stages = list(dict.fromkeys(k for run in pr["runs"] for k in run["main_thread_seconds"]))

    def cell(t: bool, k: str) -> str:
        if t not in by:
            return "-"
        seconds = by[t]["main_thread_seconds"].get(k, 0.0)
        return f"{seconds} s ({100 * seconds / by[t]['wall_seconds']:.0f}%)"

    rows = [{"stage": k, "cells": [cell(True, k), cell(False, k)]} for k in stages]
    totals = [f"{by[t]['wall_seconds']} s ({by[t]['x_realtime']}x)" if t in by else "-" for t in (True, False)]
    return rows, totals


def commit_rows(scaling: dict | None) -> tuple[list[dict], dict | None]:
    commit = (scaling or {}).get("commit")
    if not commit:
        return [], None
    by = {(row["factor"], row["policy"]): row for row in commit["rows"]}
    rows = [{"factor": f, "files": new["start"]["files"], "segments": new["start"]["segments"],
             "ms": round(1000 * new["seconds_per_file"], 3), "ref_ms": round(1000 * by[(f, "every_commit")]["seconds_per_file"], 3),
             "bytes": f"{new['vector_bytes_per_file']:,}", "ref_bytes": f"{by[(f, 'every_commit')]['vector_bytes_per_file']:,}"}
            for (f, policy), new in sorted(by.items()) if policy == "snapshots"]
    ratios = commit["ratios"]
    return rows, {"bytes": ratios["snapshots_vector_bytes_per_file_8x_over_1x"], "ref_bytes": ratios["every_commit_vector_bytes_per_file_8x_over_1x"],
                  "seconds": ratios["snapshots_seconds_per_file_8x_over_1x"], "ref_seconds": ratios["every_commit_seconds_per_file_8x_over_1x"]}


def main() -> None:
    r = {name: load(name) for name in NAMES}
    profile_rows, profile_totals = profile(r["profile_index"])
    commits, commit_ratio = commit_rows(r["scaling"])
    encoders = r["encoders"]
    cnn_x = encoders["rows"][0]["x_realtime"] if encoders else None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")), undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, keep_trailing_newline=True)
    text = env.get_template("performance.md.j2").render(
        r=r, goals=goals(r), profile_rows=profile_rows, profile_totals=profile_totals, commit_rows=commits, commit_ratio=commit_ratio,
        cnn_x=cnn_x, cnn_gflops=(cnn_x or 0) * 3.9 / 2.322,
        ceiling_rows=[{"stage": STAGES.get(k, k), "seconds": v} for k, v in ((r["ceiling"] or {}).get("stage_core_seconds") or {}).items()],
    )
    text = re.sub(r"\n{3,}", "\n\n", re.sub(r"\n(#+ )", r"\n\n\1", text))  # one blank line before each heading
    path = ROOT / "docs" / "performance.md"
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
