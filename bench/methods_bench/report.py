"""Reporting bench/methods.py: aggregate over seeds, tables and plots, docs/results.md (also the tuning and recheck sections)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from methods_bench.plan import BASELINE, METHODS, NOISE_SET, RECHECK_JSON, TUNING_JSON  # noqa: E402
from methods_bench.run import _short  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> dict[str, Any]:
    import numpy as np

    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def flat_eval(ev: dict[str, Any]) -> dict[str, float]:
    """One flat metric dict per evaluation: metrics, plus robustness as ``snr{X}/{metric}``."""
    out = {k: v for k, v in ev["metrics"].items() if not k.startswith("snr")}
    for cond, metrics in (ev.get("robustness") or {}).items():
        if cond != "clean":
            out.update({f"snr{cond}/{k}": v for k, v in metrics.items()})
    return out


def aggregate(runs: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """runs[task_key][method][seed] = {"train": record, "evals": {name: eval}} -> per (task/eval, method) stats."""
    table: dict[str, dict[str, Any]] = {}
    for key, by_method in runs.items():
        for method, by_seed in by_method.items():
            names = sorted({n for r in by_seed.values() for n in r["evals"]})
            for name in names:
                group = f"{key}/{name}"
                per_seed = {s: flat_eval(r["evals"][name]) for s, r in sorted(by_seed.items()) if name in r["evals"]}
                metrics = sorted({k for m in per_seed.values() for k in m})
                stats = {k: mean_std([per_seed[s].get(k) for s in per_seed]) for k in metrics}
                train = {s: r["train"] for s, r in by_seed.items()}
                table.setdefault(group, {})[method] = {
                    "seeds": sorted(per_seed),
                    "stats": stats,
                    "per_seed": {str(s): m for s, m in per_seed.items()},
                    "train_seconds": mean_std([t.get("train_seconds") for t in train.values()]),
                    "best_epoch": mean_std([t["summary"]["best_epoch"] for t in train.values()]),
                    # runs whose best val epoch was the last one the budget allowed: still improving when stopped
                    "budget_capped": sum(t["summary"]["best_epoch"] >= t["fingerprint"]["epochs"] for t in train.values()),
                    "n_runs": len(train),
                    "epochs_run": mean_std([t["summary"]["epochs_run"] for t in train.values()]),
                    "eval_seconds": mean_std([r["evals"][name].get("seconds") for r in by_seed.values() if name in r["evals"]]),
                    "n_test_clips": sorted({r["evals"][name].get("metadata", {}).get("n_clips") for r in by_seed.values() if name in r["evals"]} - {None}),
                }
    for group, by_method in table.items():
        base = by_method.get(BASELINE)
        for method, row in by_method.items():
            row["delta_vs_baseline"] = {}
            if base is None:
                continue
            for k, st in row["stats"].items():
                b = base["stats"].get(k)
                if b and st["mean"] is not None and b["mean"] is not None:
                    row["delta_vs_baseline"][k] = st["mean"] - b["mean"]
    return table


# ---------------------------------------------------------------------------------------------
# Report: docs/results.md and plots
# ---------------------------------------------------------------------------------------------

SECTIONS = [
    # (group, title, [(metric key, column name, higher is better)], [metric keys with a Δ column; the first decides "beats the baseline"])
    ("nonverbal/test", "Nonverbal vocalisations: class-prompt retrieval and prompt classification (trained on nonverbal train)",
     [("t2a/R@1", "t2a R@1", True), ("t2a/R@5", "t2a R@5", True), ("t2a/R@10", "t2a R@10", True), ("t2a/mAP@10", "t2a mAP@10", True),
      ("zeroshot/top1", "prompt acc.", True), ("zeroshot/balanced_accuracy", "prompt bal. acc.", True)],
     ["t2a/mAP@10", "zeroshot/top1"]),
    ("asterisk/test", "Asterisk spoken-content retrieval, acoustic encoder (aisfx-cnn; CALM: its own SpecTran on log-mels)",
     [("t2a/R@1", "t2a R@1", True), ("t2a/R@5", "t2a R@5", True), ("t2a/R@10", "t2a R@10", True), ("t2a/mAP@10", "t2a mAP@10", True),
      ("t2a/median_rank", "t2a med. rank", False), ("a2t/R@1", "a2t R@1", True), ("a2t/R@5", "a2t R@5", True), ("a2t/R@10", "a2t R@10", True),
      ("a2t/mAP@10", "a2t mAP@10", True), ("a2t/median_rank", "a2t med. rank", False)],
     ["t2a/R@10", "a2t/R@10"]),
    ("asterisk-asr/test", "Asterisk spoken-content retrieval, pocketsphinx cascade (audio = MiniLM of the ASR transcript)",
     [("t2a/R@1", "t2a R@1", True), ("t2a/R@5", "t2a R@5", True), ("t2a/R@10", "t2a R@10", True), ("t2a/mAP@10", "t2a mAP@10", True),
      ("t2a/median_rank", "t2a med. rank", False), ("a2t/R@1", "a2t R@1", True), ("a2t/R@5", "a2t R@5", True), ("a2t/R@10", "a2t R@10", True),
      ("a2t/mAP@10", "a2t mAP@10", True), ("a2t/median_rank", "a2t med. rank", False)],
     ["t2a/R@10", "a2t/R@10"]),
    ("asterisk/fsdd-zs", "FSDD digits, zero-shot: models trained on asterisk (acoustic), never on fsdd",
     [("zeroshot/top1", "top-1", True), ("zeroshot/balanced_accuracy", "bal. acc.", True), ("t2a/R@10", "t2a R@10", True), ("t2a/mAP@10", "t2a mAP@10", True)],
     ["zeroshot/top1"]),
    ("asterisk-asr/fsdd-zs", "FSDD digits, zero-shot: models trained on asterisk (pocketsphinx cascade), never on fsdd",
     [("zeroshot/top1", "top-1", True), ("zeroshot/balanced_accuracy", "bal. acc.", True), ("t2a/R@10", "t2a R@10", True), ("t2a/mAP@10", "t2a mAP@10", True)],
     ["zeroshot/top1"]),
    ("fsdd/test", "FSDD digits, supervised prompts (classes seen: trained on fsdd train with the digit template)",
     [("zeroshot/top1", "prompt acc.", True), ("zeroshot/balanced_accuracy", "bal. acc.", True), ("t2a/R@10", "t2a R@10", True), ("t2a/mAP@10", "t2a mAP@10", True)],
     ["zeroshot/top1"]),
    ("emodb/test", "EmoDB emotion (trained on emodb train with the emotion template): linear probe on the model's audio embeddings",
     [("probe/linear/UA", "probe UA", True), ("probe/linear/WA", "probe WA", True), ("probe/head/UA", "head UA", True), ("probe/head/WA", "head WA", True),
      ("zeroshot/top1", "prompt acc.", True), ("zeroshot/balanced_accuracy", "prompt UA", True)],
     ["probe/linear/UA"]),
]
ROBUST_GROUPS = [("nonverbal/noise", "Nonverbal", ["t2a/R@10", "t2a/mAP@10", "zeroshot/top1"]), ("asterisk/noise", "Asterisk (acoustic)", ["t2a/R@10", "t2a/mAP@10", "a2t/R@10"])]
HEADLINE = [("nonverbal/test", "t2a/R@10", "nonverbal\nt2a R@10"), ("nonverbal/test", "zeroshot/top1", "nonverbal\nprompt acc."),
            ("asterisk/test", "t2a/R@10", "asterisk (acoustic)\nt2a R@10"), ("asterisk-asr/test", "t2a/R@10", "asterisk (ASR cascade)\nt2a R@10"),
            ("asterisk/fsdd-zs", "zeroshot/top1", "fsdd zero-shot, top-1\n(trained on asterisk, acoustic)"),
            ("asterisk-asr/fsdd-zs", "zeroshot/top1", "fsdd zero-shot, top-1\n(trained on asterisk, ASR cascade)"), ("fsdd/test", "zeroshot/top1", "fsdd classes seen\nprompt acc."),
            ("emodb/test", "probe/linear/UA", "emodb\nprobe UA")]


def _pm(st: dict[str, Any] | None, digits: int = 3) -> str:
    if not st or st.get("mean") is None:
        return "-"
    if st["n"] <= 1:
        return f"{st['mean']:.{digits}f}"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f}"


def _delta(row: dict[str, Any], key: str, digits: int = 3) -> str:
    d = row.get("delta_vs_baseline", {}).get(key)
    return "-" if d is None else f"{d:+.{digits}f}"


def method_order(methods) -> list[str]:
    return [m for m in METHODS if m in methods] + sorted(m for m in methods if m not in METHODS)


def verdicts(table: dict[str, Any], group: str, key: str, higher: bool = True) -> tuple[list[str], list[str]]:
    """Methods whose mean beats / does not beat the baseline's mean on ``key`` (by more than the seeds' spread or not)."""
    by = table.get(group, {})
    base = by.get(BASELINE, {}).get("stats", {}).get(key)
    better, not_better = [], []
    if not base or base["mean"] is None:
        return better, not_better
    for method in method_order(by):
        if method == BASELINE:
            continue
        st = by[method]["stats"].get(key)
        if not st or st["mean"] is None:
            continue
        diff = (st["mean"] - base["mean"]) * (1 if higher else -1)
        spread = math.sqrt((st["std"] or 0) ** 2 + (base["std"] or 0) ** 2)
        single = min(st["n"], base["n"]) < 2
        note = " (one seed: no spread)" if single else (" (within the seeds' spread)" if 0 < diff <= spread else "")
        (better if diff > spread and not single else not_better).append(f"{method} ({'+' if diff >= 0 else ''}{diff:.3f}{note})")
    return better, not_better


def plot_headline(table: dict[str, Any], path: Path) -> bool:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(g, k, t) for g, k, t in HEADLINE if g in table]
    if not panels:
        return False
    ncols = min(4, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    fig = Figure(figsize=(3.4 * ncols, 3.9 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}
    for ax, (group, key, title) in zip(axes, panels):
        methods = method_order(table[group])
        means = [table[group][m]["stats"].get(key, {}).get("mean") or 0.0 for m in methods]
        stds = [table[group][m]["stats"].get(key, {}).get("std") or 0.0 for m in methods]
        x = np.arange(len(methods))
        ax.bar(x, means, yerr=stds, capsize=3, color=[colours.get(m, "grey") for m in methods])
        base = table[group].get(BASELINE, {}).get("stats", {}).get(key, {}).get("mean")
        if base is not None:
            ax.axhline(base, color="k", lw=0.8, ls="--")
        ax.set_xticks(x, methods, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, max(1e-3, max(m + s for m, s in zip(means, stds))) * 1.15)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Test metrics, mean ± std over seeds (dashed: clap-baseline)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    return True


def plot_robustness(table: dict[str, Any], path: Path) -> bool:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [(g, t, ks[0]) for g, t, ks in ROBUST_GROUPS if g in table] + [(g, t, ks[2]) for g, t, ks in ROBUST_GROUPS if g in table]
    if not panels:
        return False
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    conds = [("clean", ""), ("15 dB", "snr15/"), ("10 dB", "snr10/"), ("5 dB", "snr5/")]
    for ax, (group, title, key) in zip(axes, panels):
        for i, method in enumerate(method_order(table[group])):
            stats = table[group][method]["stats"]
            means = [(stats.get(p + key) or {}).get("mean") for _, p in conds]
            stds = [(stats.get(p + key) or {}).get("std") or 0.0 for _, p in conds]
            means = [np.nan if m is None else m for m in means]
            ax.errorbar(np.arange(len(conds)), means, yerr=stds, marker="o", ms=3, capsize=2, label=method, color=f"C{METHODS.index(method) if method in METHODS else i}",
                        ls="--" if method == BASELINE else "-")
        ax.set_xticks(np.arange(len(conds)), [c for c, _ in conds])
        ax.set_xlabel("added Clotho noise (SNR)")
        ax.set_title(f"{title}: {key}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    return True


def write_docs(payload: dict[str, Any], md_path: Path, png_dir: Path, png_prefix: str) -> list[Path]:
    from sonalign.evaluation.report import format_table

    table = payload["results"]
    refs = payload.get("references", {})
    written = []
    plots = {}
    for name, fn in (("headline", plot_headline), ("robustness", plot_robustness)):
        path = png_dir / f"{png_prefix}{name}.png"
        if fn(table, path):
            plots[name] = path
            written.append(path)
    cfg = payload["settings"]
    budgets = ", ".join(f"{k} {v['epochs']} / {v['patience']}" for k, v in cfg.get("budgets", {}).items())
    lines = [
        "# sonalign: every method on the real sets",
        "",
        f"Generated by `bench/methods.py` on {payload['date'][:10]} ({payload['date']}). Command:",
        "",
        "```bash",
        payload["command"],
        "```",
        "",
        "Do not edit the numbers by hand: re-run the command (or `python bench/methods.py --report-only` over the same "
        "`--workdir`) to regenerate this page, `bench/results/methods.json` (every number, per seed) and the plots.",
        "",
        "## Setup",
        "",
        f"* Methods: {', '.join(cfg['methods'])}; baseline for every Δ: `{BASELINE}`. Seeds: {', '.join(map(str, cfg['seeds']))}. "
        "Every cell is mean ± sample standard deviation (ddof = 1) over the seeds; Δ = method mean − baseline mean.",
        f"* Training budgets (max epochs / early-stopping patience): {budgets}. Batch {cfg['batch_size']} (label-prompted data: at most one "
        f"clip per class in a batch, so batches hold ≤ 16 / 10 / 7 pairs on nonverbal / fsdd / emodb: 31 / 240 / 51 steps an epoch; "
        f"asterisk 12), AdamW lr {cfg['lr']}, warmup + cosine, early stopping on the val split "
        f"(val primary: mean t2a R@1/5/10 for transcripts, prompt accuracy for label-only data); "
        "the best val epoch is evaluated. Each method's registered config (`src/sonalign/models/configs/*.json`) is used unchanged; "
        "these tables use one learning rate and one schedule for all"
        + ("; \"What else was tried\" below retrains every method (seed 0) with a smaller learning rate and with twice the epochs."
           if TUNING_JSON.exists() and not payload.get("quick") else
           " (no per-method tuning), so where a method trails the baseline this page says so for these settings only."),
        "* Frozen encoders: `aisfx-cnn` audio (512-d, fixed 5 s segments), `minilm-l6` text; `pocketsphinx` cascade where named. CALM "
        "reads 64-bin log-mels through its own SpecTran, so the audio-encoder choice does not apply to it: it is run once per task.",
        "* Data: `../shared/data/{nonverbal,asterisk,fsdd,emodb}/manifest.jsonl`, fixed splits (train → training, val → early stopping, "
        "test → every number below). Nonverbal test 162 clips / 16 classes, asterisk test 118 clips, fsdd test 300 clips "
        "(takes 0-4 of 6 speakers), emodb test 120 clips (speakers 03, 16).",
        "* Retrieval conventions (sonalign's evaluator): for transcripts each text queries all test clips (t2a) and each clip all texts "
        "(a2t); R@k = fraction of queries with the relevant item in the top k. For label-only sets each class prompt is one query and "
        "*every* test clip of that class is relevant; R@k is then the fraction of that class's clips found in the top k "
        "(so R@1 ≤ 1/n_class: ~0.1 on nonverbal, 1/30 on fsdd), mAP@10 is torchmetrics' convention. "
        "\"Prompt acc.\" is top-1 classification of every test clip against the class prompts.",
        f"* Robustness noise: the {payload.get('noise', {}).get('n_files', 7)} Clotho v1 evaluation clips in `../shared/data/{NOISE_SET}` "
        "(real environmental recordings: pug breathing, bunker, hospital elevator, rollercoaster, page flipping, bazaar), "
        "outside every evaluated set, mixed into the whole test recording before segmentation at 15, 10 and 5 dB SNR "
        "(deterministic per clip); the models are the clean-trained runs.",
    ]
    unreadable: dict[str, set[str]] = {}
    for t in payload.get("extraction", []):
        for path, why in t.get("failures", []):
            unreadable.setdefault(Path(t["source"]).parent.name, set()).add(f"{Path(path).name} ({why})")
    for src, items in sorted(unreadable.items()):
        lines.append(f"* Unreadable clips left out by the feature cache, {src}: {len(items)}: " + ", ".join(sorted(items)[:12]) + ("..." if len(items) > 12 else "") + ".")
    lines.append("")
    if "headline" in plots:
        lines += [f"![headline metrics per method and task]({plots['headline'].name})", ""]
    for group, title, cols, deltas in SECTIONS:
        by = table.get(group)
        if not by:
            continue
        names = {k: c for k, c, _ in cols}
        lines += [f"## {title}", ""]
        header = ["method"] + [c for _, c, _ in cols] + [f"Δ {names[k]}" for k in deltas] + ["train s/run", "best / run epochs"]
        rows = []
        for method in method_order(by):
            r = by[method]
            rows.append([method] + [_pm(r["stats"].get(k)) for k, _, _ in cols] + [_delta(r, k) for k in deltas]
                        + [_pm(r["train_seconds"], 0), f"{_pm(r['best_epoch'], 1)} / {_pm(r['epochs_run'], 1)}"])
        lines += [format_table(rows, header, style="markdown"), ""]
        n_clips = sorted({n for r in by.values() for n in r.get("n_test_clips", [])})
        if n_clips:
            lines += [f"Test clips scored: {', '.join(map(str, n_clips))}; seeds per cell: {', '.join(sorted({str(len(r['seeds'])) for r in by.values()}))}.", ""]
        lines += _section_notes(group, table, refs, [(k, names[k], dict((c[0], c[2]) for c in cols)[k]) for k in deltas], payload)
    robust = [(g, t, ks) for g, t, ks in ROBUST_GROUPS if g in table]
    if robust:
        lines += ["## Robustness: real noise at 15 / 10 / 5 dB SNR", ""]
        if "robustness" in plots:
            lines += [f"![degradation against SNR]({plots['robustness'].name})", ""]
        for group, title, keys in robust:
            by = table[group]
            header = ["method"] + [f"{k} {c}" for k in keys for c in ("clean", "15 dB", "10 dB", "5 dB")] + [f"Δ {keys[0]} 5 dB"]
            rows = []
            for method in method_order(by):
                st = by[method]["stats"]
                rows.append([method] + [_pm(st.get(p + k)) for k in keys for p in ("", "snr15/", "snr10/", "snr5/")] + [_delta(by[method], f"snr5/{keys[0]}")])
            lines += [f"**{title}**", "", format_table(rows, header, style="markdown"), ""]
            drops = []
            for method in method_order(by):
                st = by[method]["stats"]
                c, n = (st.get(keys[0]) or {}).get("mean"), (st.get(f"snr5/{keys[0]}") or {}).get("mean")
                if c is not None and n is not None:
                    drops.append(f"{method} {c:.3f} → {n:.3f}")
            lines += [f"{keys[0]} clean → 5 dB: " + "; ".join(drops) + ".", ""]
    lines += _tuning_section(payload)
    lines += _recheck_section(payload)
    lines += _refs_section(refs)
    lines += _timing_section(payload)
    lines += _notes_section(payload)
    lines += _missing_section(payload)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    written.append(md_path)
    return written


def _section_notes(group: str, table, refs, cols, payload) -> list[str]:
    key, _, higher = cols[0]
    out = []
    better, not_better = verdicts(table, group, key, higher)
    if better or not_better:
        if better:
            out.append(f"Beat `{BASELINE}` on {cols[0][1]} by more than the seeds' spread: " + ", ".join(better) + ".")
        if not_better:
            out.append(f"Did **not** beat `{BASELINE}` on {cols[0][1]} (by more than the seeds' spread): " + ", ".join(not_better) + ".")
        out.append("")
    if group == "nonverbal/test":
        r = refs.get("nonverbal/probe/aisfx-cnn")
        if r and "UA" in r:
            out += [f"Reference: a linear probe on the frozen aisfx-cnn clip embeddings (mean of segments; nonverbal train → test) reaches "
                    f"UA {r['UA']:.3f} / WA {r['WA']:.3f}; chance for 16 classes is 0.0625. The prompt accuracies above are *not* zero-shot: "
                    "the 16 classes and their prompts were seen in training.", ""]
    if group == "asterisk-asr/test":
        r = refs.get("asterisk/asr-cascade-untrained")
        if r and "metrics" in r:
            m = r["metrics"]
            out += [f"Reference, no training at all: cosine between MiniLM(pocketsphinx transcript) and MiniLM(query text) gives t2a R@1 "
                    f"{m['t2a/R@1']:.3f}, R@10 {m['t2a/R@10']:.3f}, mAP@10 {m['t2a/mAP@10']:.3f}; a2t R@1 {m['a2t/R@1']:.3f}, R@10 {m['a2t/R@10']:.3f}.", ""]
    if group in ("asterisk/fsdd-zs", "asterisk-asr/fsdd-zs"):
        out += ["Zero-shot with respect to fsdd: no fsdd clip, speaker or the digit template was used in training. The asterisk train split "
                "does contain single spoken digits (zero, three, four, six, seven, nine) by its one speaker, so the words themselves are not new. "
                "Chance top-1 is 0.100."]
        r = refs.get("fsdd-zs/asr-cascade-untrained")
        if r and "metrics" in r and group.startswith("asterisk-asr"):
            out.append(f"Untrained cascade (MiniLM(transcript) vs MiniLM(prompt)): top-1 {r['metrics']['zeroshot/top1']:.3f}.")
        out.append("")
    if group == "fsdd/test":
        r = refs.get("fsdd/probe/aisfx-cnn")
        out.append("Classes seen: an upper bound for the zero-shot table above, not a zero-shot result.")
        if r and "UA" in r:
            out.append(f"Reference: linear probe on frozen aisfx-cnn clip embeddings (fsdd train → test): UA {r['UA']:.3f} / WA {r['WA']:.3f}.")
        out.append("")
    if group == "emodb/test":
        out.append("Linear probe: StandardScaler + logistic regression on the model's audio embeddings, C chosen on the val split (speaker 08), "
                   "emodb train → test (speakers 03, 16). UA = mean per-class recall, WA = accuracy; chance UA = 1/7 = 0.143. "
                   "Head = the model's own classifier trained jointly (CALM's emotion head; HILBERT's document classifier in runs "
                   "that have one), given audio alone. The probe reads each model's `probe_output` (CALM: its CALM embedding in runs "
                   "made after issue 13, its CALP embedding before). Prompt acc. = the emotion prompts "
                   "(\"a person speaking with anger\"), classes seen in training.")
        for name, label in (("emodb/probe/aisfx-cnn", "frozen aisfx-cnn clip embeddings (mean of segments)"),
                            ("emodb/probe/pocketsphinx", "MiniLM of the pocketsphinx transcript (English ASR on German speech)")):
            r = refs.get(name)
            if r and "UA" in r:
                out.append(f"Reference: linear probe on {label}: UA {r['UA']:.3f} / WA {r['WA']:.3f}.")
            elif r:
                out.append(f"Reference on {label}: failed ({r.get('error')}).")
        out.append("")
    return out


def _refs_section(refs: dict[str, Any]) -> list[str]:
    if not refs:
        return []
    rows = []
    for name, r in sorted(refs.items()):
        if "error" in r:
            rows.append([name, "failed: " + r["error"]])
        else:
            rows.append([name, _short(r)])
    from sonalign.evaluation.report import format_table

    return ["## Frozen-feature references (no training, deterministic)", "", format_table(rows, ["reference", "result (test split)"], style="markdown"), ""]


def _timing_section(payload: dict[str, Any]) -> list[str]:
    from sonalign.evaluation.report import format_table

    out = ["## Cost", ""]
    train_total = sum(r["train"].get("train_seconds", 0.0) for by_method in payload.get("runs", {}).values()
                      for by_seed in by_method.values() for r in by_seed.values())
    out.append(f"Training time summed over every run: {train_total / 3600:.1f} h of worker time ({payload['machine']['cpu_count']} CPU cores, "
               f"{payload['settings']['jobs']} runs at a time, shared with other jobs, so timings are noisy). The script resumes: its last "
               f"invocation took {payload['wall_seconds'] / 60:.1f} min (feature extraction in it, cached features reused: "
               f"{payload.get('extraction_seconds', 0) / 60:.1f} min).")
    out.append("")
    rows = []
    for group, by in sorted(payload["results"].items()):
        if group.endswith("/test"):
            for method in method_order(by):
                r = by[method]
                rows.append([group.split("/")[0], method, _pm(r["train_seconds"], 0), _pm(r["epochs_run"], 1), _pm(r["best_epoch"], 1),
                             f"{r.get('budget_capped', '-')} / {r.get('n_runs', '-')}"])
    if rows:
        out += [format_table(rows, ["task", "method", "train s/run", "epochs run", "best epoch", "best = last allowed epoch"], style="markdown"), "",
                "\"best = last allowed epoch\" counts the seeds whose validation score was still improving when the epoch budget ran out: "
                "those runs are budget-limited, and their method may do better with a longer schedule than this machine allowed.", ""]
    return out


def _notes_section(payload: dict[str, Any]) -> list[str]:
    notes = payload.get("run_notes") or {}
    if not notes:
        return []
    out = ["## Notes on this run", ""]
    for name, text in sorted(notes.items()):
        out += [f"*{name}*:", "", text.strip(), ""]
    return out


def _missing_section(payload: dict[str, Any]) -> list[str]:
    out = []
    if payload.get("failures"):
        out += ["## Failed runs", ""] + [f"* `{f['task']}` / `{f['method']}` / seed {f['seed']} ({f['stage']}): {f['error']}" for f in payload["failures"]] + [""]
    keys = payload.get("audio_keys_used") or {}
    for setting, used in keys.items():
        if len(used) > 1:
            out += [f"Note: runs with {setting} features used {len(used)} different feature-cache keys ({', '.join(sorted(used))}): "
                    "the encoder changed between runs; compare with care.", ""]
    return out


def _tuning_section(payload: dict[str, Any]) -> list[str]:
    """What else was tried (``--tune``), beside the seed-0 run of the main table with the default setting."""
    if payload.get("quick") or not TUNING_JSON.exists():
        return []
    tuning = json.loads(TUNING_JSON.read_text())
    from sonalign.evaluation.report import format_table

    variants = list(tuning["variants"])
    runs = payload.get("runs", {})
    lines = ["## What else was tried (seed 0)", "",
             f"`{tuning['command']}` ({tuning['date'][:10]}) retrained every method on seed 0 with other settings; the first value column is "
             f"the seed-0 run of the tables above (lr {payload['settings']['lr']}, the task's budget). The best value per method is in bold. "
             "One seed only: differences within the seed spread of the main tables mean nothing.", ""]
    for task, key in tuning["tasks"].items():
        by = {(r["variant"], r["method"]): r for r in tuning["rows"] if r["task"] == task}
        header = ["method", "default"] + variants + ["best − baseline best"]
        rows, best_of = [], {}
        for method in method_order({m for _, m in by} | set(runs.get(task, {}))):
            default = ((runs.get(task, {}).get(method, {}).get("0") or {}).get("evals", {}).get("test") or {}).get("metrics", {}).get(key)
            values = [default] + [(by.get((v, method)) or {}).get("value") for v in variants]
            known = [x for x in values if x is not None]
            best_of[method] = max(known) if known else None
            rows.append((method, values))
        out_rows = []
        for method, values in rows:
            best = best_of[method]
            cells = ["-" if x is None else (f"**{x:.3f}**" if x == best else f"{x:.3f}") for x in values]
            base = best_of.get(BASELINE)
            out_rows.append([method] + cells + ["-" if best is None or base is None else f"{best - base:+.3f}"])
        lines += [f"**{task}: {key}**", "", format_table(out_rows, header, style="markdown"), ""]
        base = best_of.get(BASELINE)
        if base is not None:
            ahead = [m for m, v in best_of.items() if m != BASELINE and v is not None and v > base]
            tied = [m for m, v in best_of.items() if m != BASELINE and v is not None and v == base]
            better_variant = {m: variants[vals[1:].index(max(x for x in vals[1:] if x is not None))] for m, vals in rows
                              if m != BASELINE and vals[0] is not None and any(x is not None and x > vals[0] for x in vals[1:])}
            summary = [f"{task}: with its best setting, " + (", ".join(ahead) + " beat" if ahead else "no method beat") + f" the baseline's best ({base:.3f})"
                       + (f"; {', '.join(tied)} tied it" if tied else "") + "."]
            if better_variant:
                summary.append("Improved over the default setting: " + ", ".join(f"{m} ({v})" for m, v in better_variant.items()) + ".")
            lines += [" ".join(summary), ""]
    lines += ["These are single-seed observations: a setting that wins here needs the 3-seed table before it becomes a method's default.", ""]
    return lines


RECHECK_METRICS = {"nonverbal/test": [("t2a/mAP@10", "t2a mAP@10"), ("zeroshot/top1", "prompt acc.")],
                   "emodb/test": [("probe/linear/UA", "probe UA"), ("probe/head/UA", "head UA"), ("zeroshot/top1", "prompt acc.")]}
FLAT_VARIANT = "robust-atr, flat score"


def _recheck_section(payload: dict[str, Any]) -> list[str]:
    """Before/after of ``--recheck``: the main tables' mean, the earlier code's run and this code's run (same command, same seeds)."""
    if payload.get("quick") or not RECHECK_JSON.exists():
        return []
    from sonalign.evaluation.report import format_table

    rc = json.loads(RECHECK_JSON.read_text())
    seeds = ", ".join(map(str, rc["settings"]["seeds"]))
    lines = ["## Re-run after the method fixes of issue 13 (seed " + seeds + ")", "",
             f"`{rc['command']}` ({rc['date'][:10]}) trained and evaluated the current code; \"before\" is the same command on the code "
             f"before those fixes (`{rc['before']['command']}`, {str(rc['before']['date'])[:10]}), with the same trainer (the parameter groups, "
             "warmup and multi-positive batches of issue 13 item 7 are in both). \"main\" is the mean of the tables above (3 seeds, the "
             "earlier trainer: one clip per class in a batch). One seed: differences within the main tables' seed spread mean little.", ""]
    for group, metrics in RECHECK_METRICS.items():
        after, prior = rc["after"]["results"].get(group), rc["before"]["results"].get(group)
        if not after:
            continue
        main = payload["results"].get(group, {})
        header = ["method"] + [f"{name} {col}" for _, name in metrics for col in ("main", "before", "after", "Δ")]
        rows = []
        for method in method_order(set(after) | set(prior or {})):
            cells = [method]
            for key, _ in metrics:
                def mean(table, m=method, k=key):
                    st = ((table or {}).get(m) or {}).get("stats", {}).get(k)
                    return None if not st or st.get("mean") is None else st["mean"]
                m0, b, a = mean(main), mean(prior), mean(after)
                cells += ["-" if m0 is None else f"{m0:.3f}", "-" if b is None else f"{b:.3f}", "-" if a is None else f"{a:.3f}",
                          "-" if a is None or b is None else f"{a - b:+.3f}"]
            rows.append(cells)
        lines += [f"**{group}**", "", format_table(rows, header, style="markdown"), ""]
    if any(FLAT_VARIANT in (rc["after"]["results"].get(g) or {}) for g in RECHECK_METRICS):
        lines += [f"`{FLAT_VARIANT}` is the same Robust-ATR run scored with the cosine of the flat embeddings instead of the refined pair score.", ""]
    diag = rc["after"].get("diagnostics") or {}
    if diag:
        names = sorted({k for d in diag.values() for k in d})
        rows = [[run] + [("-" if d.get(k) is None else f"{d[k]:.3f}") for k in names] for run, d in sorted(diag.items())]
        lines += ["Training diagnostics of the last epoch (epoch means; not loss terms):", "", format_table(rows, ["run"] + names, style="markdown"), ""]
    for name, text in sorted((rc.get("notes") or {}).items()):
        lines += [f"*{name}*:", "", text.strip(), ""]
    if rc.get("failures"):
        lines += ["Failed: " + "; ".join(f"{f['task']}/{f['method']}/seed {f['seed']} ({f['stage']}): {f['error']}" for f in rc["failures"]), ""]
    return lines


