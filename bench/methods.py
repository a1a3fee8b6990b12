"""Every alignment method, 3 seeds, on the real sets in ../shared/data: train, evaluate, report.

Tasks (``--tasks``, default all):

* ``nonverbal``     train on nonverbal train (val split for early stopping) with label captions
                    ("sound" template: "the sound of coughing"); test: class-prompt text-to-audio
                    retrieval and prompt classification (classes seen in training).
* ``asterisk``      spoken-content retrieval, transcript = caption, acoustic encoder (aisfx-cnn);
                    test: t2a and a2t R@1/5/10, mAP@10, median rank.
* ``asterisk-asr``  the same with the pocketsphinx cascade (audio = MiniLM of its ASR transcript);
                    CALM reads log-mels, so it is not run here (its asterisk run is in ``asterisk``).
* ``fsdd-zs``       zero-shot: the asterisk-trained runs (never saw fsdd) on fsdd test with the digit
                    template ("a person saying the number five").
* ``fsdd``          supervised prompt upper bound: train on fsdd train with the digit template.
* ``emodb``         train on emodb train with the emotion template; linear probe (UA/WA) on the
                    model's audio embeddings (train -> test), CALM also with its own emotion head.
* ``robustness``    nonverbal and asterisk (acoustic) test metrics with real noise (Clotho sample
                    clips) mixed in at 15, 10 and 5 dB SNR.

References that need no training (frozen features only) are computed alongside: linear probes on
raw aisfx-cnn clip embeddings (mean of segment embeddings) for nonverbal, fsdd and emodb, on
MiniLM-of-pocketsphinx-transcript for emodb, and the untrained ASR cascade (cosine between
MiniLM(transcript) and MiniLM(query)) for asterisk retrieval and fsdd zero-shot.

One feature cache (``WORKDIR/cache``) is shared by every run, so extraction happens once per
(encoder, segmenter, mel) setting. Run folders live in ``WORKDIR/runs/TASK/METHOD/seedN``; a run
whose ``summary.json`` and evaluation JSONs exist with the same settings is skipped, a run killed
mid-training is resumed from its last checkpoint, so the script can simply be started again.

    python bench/methods.py                       # everything: ~40 min on 2 busy cores
    python bench/methods.py --quick               # 1 seed, 3 epochs, small subsets (timing check)
    python bench/methods.py --tasks nonverbal emodb --methods clap-baseline hade --seeds 0
    python bench/methods.py --report-only         # rebuild JSON, docs and plots from the workdir
    python bench/methods.py --tasks nonverbal emodb --recheck OLD/bench/results/methods.json
                                                  # after method changes: seed 0 beside the same command's
                                                  # run on the earlier code, main tables untouched

Features follow each method's config (``"features"``): Robust-ATR reads silence-aware ``energy``
chunks, HADE the encoders' intermediate levels (``with_levels``), CALM log-mels; the others the
default fixed windows. The ASR cascade task keeps fixed windows and no levels for every method.

Writes bench/results/methods.json, docs/results.md and docs/results_*.png (``--quick`` writes
them into WORKDIR/quick/ instead, never into the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, peak_rss_mib, require_shared  # noqa: E402
from methods_bench.plan import BUDGETS, COST, DOCS, EvalSpec, METHODS, NOISE_SET, RECHECK_JSON, RESULTS_JSON, TASKS, TASK_COST, TUNE_TASKS, TUNE_VARIANTS, TUNING_JSON, _json_default, _read_json, apply_budgets, datasets, log, plan  # noqa: E402
from methods_bench.report import FLAT_VARIANT, aggregate, write_docs  # noqa: E402
from methods_bench.run import _init_worker, _unit_job, extract_all, feature_settings, flat_variant_eval, references  # noqa: E402

os.environ.setdefault("SONALIGN_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")



# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=TASKS)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help=f"max epochs for every task (default per task: {', '.join(f'{k} {v[0]}' for k, v in BUDGETS.items())})")
    parser.add_argument("--patience", type=int, default=None, help=f"early-stopping patience for every task (default per task: {', '.join(f'{k} {v[1]}' for k, v in BUDGETS.items())})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (runs, extraction shards) in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: many small ops on busy cores)")
    parser.add_argument("--quick", action="store_true", help="timing check: 1 seed, 3 epochs, stratified subsets; writes into WORKDIR/quick only")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sonalign-bench-methods"))
    parser.add_argument("--no-references", action="store_true", help="skip the frozen-feature references")
    parser.add_argument("--asr-emodb-reference", action="store_true", help="also probe MiniLM-of-pocketsphinx-transcript on emodb (ASR of 535 clips: slow)")
    parser.add_argument("--extract-only", action="store_true", help="only extract the features the plan needs (clean and noisy), then stop")
    parser.add_argument("--report-only", action="store_true", help="no training: aggregate what the workdir holds and rewrite the outputs")
    parser.add_argument("--recheck", type=Path, default=None, metavar="BEFORE_JSON",
                        help="re-run after method changes: train and evaluate (default seed 0) without touching the main tables, and write "
                             f"{RECHECK_JSON.relative_to(ROOT)} and a before/after section of docs/results.md comparing with BEFORE_JSON "
                             "(the methods.json of the same command run on the earlier code)")
    parser.add_argument("--tune", action="store_true", help=f"what-else-was-tried pass: seed 0, tasks {', '.join(TUNE_TASKS)}, variants "
                        f"{'; '.join(TUNE_VARIANTS)}; writes {TUNING_JSON.relative_to(ROOT)} and a section of docs/results.md")
    args = parser.parse_args()
    if args.tune:
        tune(args)
        return
    command = "python bench/methods.py " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the workers
    t0 = time.perf_counter()
    cache_dir = args.workdir.resolve() / "cache"  # shared by --quick and full runs (content-addressed)
    if args.quick:
        args.seeds = args.seeds if "--seeds" in sys.argv else [0]
        args.epochs = args.epochs if args.epochs is not None else 3
        args.workdir = args.workdir / "quick"
    if args.recheck is not None:
        args.seeds = args.seeds if "--seeds" in sys.argv else [0]
        if not args.recheck.exists():
            sys.exit(f"--recheck: {args.recheck} not found")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data = datasets(args.quick, workdir)
    noise = require_shared(NOISE_SET)
    specs = plan(args.tasks, args.methods, data, noise)
    apply_budgets(specs, args.epochs, args.patience)
    # seed-major (a cut-short benchmark still has every method on the first seed); inside a seed the
    # longest runs first, so the worker pool is not left waiting on one long run at the end
    units = [(spec, method, seed) for seed in args.seeds
             for spec, method in sorted(((s, m) for s in specs for m in s.methods), key=lambda sm: -COST.get(sm[1], 1) * TASK_COST.get(sm[0].key, 1))]
    log(f"plan: {len(units)} runs ({', '.join(f'{s.key}:{len(s.methods)}x[{s.epochs} ep, patience {s.patience}]' for s in specs)}) x seeds {args.seeds}, "
        f"batch {args.batch_size}, lr {args.lr}, {args.jobs} workers x {args.threads} threads; workdir {workdir}")

    import torch

    torch.set_num_threads(args.threads)
    log(f"torch {torch.__version__}")
    extraction_seconds = 0.0
    keys: dict[str, str] = {}
    timings: list[dict] = []
    runs: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    failures: list[dict[str, Any]] = []
    audio_keys_used: dict[str, set[str]] = {}
    if not args.report_only:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(args.threads,)) as pool:
            started = time.perf_counter()
            keys, timings = extract_all(specs, cache_dir, pool, args.jobs, noise, refs=not args.no_references, asr_emodb=args.asr_emodb_reference)
            extraction_seconds = time.perf_counter() - started
            log(f"features ready in {extraction_seconds:.0f} s")
            if args.extract_only:
                return
            futures = []
            for n, (spec, method, seed) in enumerate(units, start=1):
                setting = json.dumps(asdict(feature_settings(spec.features, method)), sort_keys=True)
                run_dir = workdir / "runs" / spec.key / method / f"seed{seed}"
                futures.append(pool.submit(_unit_job, spec, method, seed, str(run_dir), str(cache_dir), args.batch_size, args.lr, keys[setting],
                                           f"({n}/{len(units)}) {spec.key} {method} seed {seed}"))
            results = [f.result() for f in futures]
        for (spec, method, seed), res in zip(units, results):
            failures += res["failures"]
            if res["record"] is None:
                continue
            runs.setdefault(spec.key, {}).setdefault(method, {})[seed] = {"train": res["record"], "evals": res["evals"]}
    else:
        for spec, method, seed in units:
            run_dir = workdir / "runs" / spec.key / method / f"seed{seed}"
            record = _read_json(run_dir / "bench-run.json")
            if not record or "train_seconds" not in record:
                continue
            evals = {ev.name: e for ev in spec.evals if (e := _read_json(run_dir / f"bench-eval-{ev.name}.json"))}
            runs.setdefault(spec.key, {}).setdefault(method, {})[seed] = {"train": record, "evals": evals}
    for spec, method, seed in units:
        r = runs.get(spec.key, {}).get(method, {}).get(seed)
        if r:
            fs = feature_settings(spec.features, method)
            audio_keys_used.setdefault(f"{fs.audio_encoder}{'+mel' if fs.with_mel else ''}", set()).add(r["train"]["fingerprint"]["audio_key"])

    refs: dict[str, Any] = {}
    refs_path = workdir / "references.json"
    if not args.no_references:
        if args.report_only:
            refs = _read_json(refs_path) or {}
        else:
            refs = references(specs, args.tasks, data, cache_dir, asr_emodb=args.asr_emodb_reference)
            refs_path.write_text(json.dumps(refs, indent=2))

    table = aggregate(runs)
    wall = time.perf_counter() - t0
    payload = {
        "benchmark": "methods",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "quick": args.quick,
        "settings": {"tasks": args.tasks, "methods": args.methods, "seeds": args.seeds, "budgets": {s.key: {"epochs": s.epochs, "patience": s.patience} for s in specs},
                     "batch_size": args.batch_size, "lr": args.lr, "jobs": args.jobs, "threads": args.threads, "workdir": str(workdir)},
        "data": {k: str(v / "manifest.jsonl") for k, v in data.items()},
        "noise": {"folder": str(noise), "n_files": len([p for p in noise.iterdir() if p.is_file()])},
        "wall_seconds": round(wall, 1),
        "extraction_seconds": round(extraction_seconds, 1),
        "extraction": timings,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "audio_keys_used": {k: sorted(v) for k, v in audio_keys_used.items()},
        "failures": failures,
        "references": refs,
        "results": table,
        "runs": {key: {method: {str(seed): r for seed, r in by_seed.items()} for method, by_seed in by_method.items()} for key, by_method in runs.items()},
        "run_notes": {p.name: p.read_text(encoding="utf-8") for p in sorted((workdir / "notes").glob("*")) if p.suffix in (".md", ".txt")},
    }
    if args.recheck is not None:
        write_recheck(payload, runs, args.recheck, cache_dir)
        return
    if args.quick:
        json_path, md_path, png_dir = workdir / "methods.json", workdir / "results.md", workdir
    else:
        json_path, md_path, png_dir = RESULTS_JSON, DOCS / "results.md", DOCS
    if args.report_only and json_path.exists():
        old = json.loads(json_path.read_text())  # keep the timing and command of the run that made the numbers
        for k in ("wall_seconds", "extraction_seconds", "extraction", "command", "date"):
            if k in old:
                payload[k] = old[k]
    from sonalign.evaluation.report import atomic_write_text

    atomic_write_text(json_path, json.dumps(payload, indent=2, allow_nan=False, default=_json_default))
    written = write_docs(payload, md_path, png_dir, "results_")
    log(f"done in {wall / 60:.1f} min; {len(failures)} failures; wrote {json_path}, " + ", ".join(str(p) for p in written))


def tune(args) -> None:
    """Train every method under each :data:`TUNE_VARIANTS` setting (seed 0), then rewrite the report."""
    import copy

    command = "python bench/methods.py " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    workdir = args.workdir.resolve()
    cache_dir = workdir / "cache"
    data = datasets(False, workdir)
    specs = [s for s in plan(list(TUNE_TASKS), args.methods, data, require_shared(NOISE_SET)) if s.key in TUNE_TASKS]
    apply_budgets(specs, None, None)
    units = []
    for name, v in TUNE_VARIANTS.items():
        for spec in specs:
            vs = copy.deepcopy(spec)
            vs.evals = [e for e in vs.evals if e.name == "test"]
            vs.epochs = spec.epochs * v["epochs_factor"]
            vs.patience = v["patience"] if v["patience"] is not None else spec.patience
            for method in vs.methods:
                units.append((name, vs, method, v["lr"] if v["lr"] is not None else args.lr))
    units.sort(key=lambda u: -COST.get(u[2], 1) * TASK_COST.get(u[1].key, 1) * TUNE_VARIANTS[u[0]]["epochs_factor"])
    log(f"tuning plan: {len(units)} runs, seed 0, {args.jobs} workers; workdir {workdir / 'tune'}")
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(args.threads,)) as pool:
        keys, _ = extract_all(specs, cache_dir, pool, args.jobs, require_shared(NOISE_SET), refs=False)
        futures = []
        for n, (name, spec, method, lr) in enumerate(units, start=1):
            setting = json.dumps(asdict(feature_settings(spec.features, method)), sort_keys=True)
            run_dir = workdir / "tune" / name.replace(" ", "_").replace(",", "") / spec.key / method / "seed0"
            futures.append(pool.submit(_unit_job, spec, method, 0, str(run_dir), str(cache_dir), args.batch_size, lr, keys[setting],
                                       f"(tune {n}/{len(units)}) {name} {spec.key} {method}"))
        results = [f.result() for f in futures]
    rows = []
    for (name, spec, method, lr), res in zip(units, results):
        key = TUNE_TASKS[spec.key]
        metric = (res["evals"].get("test") or {}).get("metrics", {}).get(key)
        s = (res["record"] or {}).get("summary", {})
        rows.append({"variant": name, "task": spec.key, "method": method, "lr": lr, "epochs": spec.epochs, "patience": spec.patience,
                     "metric": key, "value": metric, "best_epoch": s.get("best_epoch"), "epochs_run": s.get("epochs_run"),
                     "train_seconds": (res["record"] or {}).get("train_seconds"), "failures": res["failures"]})
    from sonalign.evaluation.report import atomic_write_text

    payload = {"benchmark": "methods-tuning", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
               "machine": machine(), "variants": TUNE_VARIANTS, "tasks": TUNE_TASKS, "batch_size": args.batch_size, "default_lr": args.lr,
               "wall_seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    atomic_write_text(TUNING_JSON, json.dumps(payload, indent=2, allow_nan=False, default=_json_default))
    main_payload = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else None
    if main_payload:
        write_docs(main_payload, DOCS / "results.md", DOCS, "results_")
    log(f"tuning done in {(time.perf_counter() - t0) / 60:.1f} min; wrote {TUNING_JSON}" + (" and docs/results.md" if main_payload else ""))


def write_recheck(payload: dict[str, Any], runs: dict[str, Any], before_path: Path, cache_dir: Path) -> None:
    """``--recheck``: keep the main tables, record this run beside the earlier code's run of the same command."""
    from sonalign.evaluation.report import atomic_write_text

    before = json.loads(before_path.read_text())
    workdir = Path(payload["settings"]["workdir"])
    for key, by_method in runs.items():  # Robust-ATR: the refined pair score against the flat cosine, same weights
        for seed, r in by_method.get("robust-atr", {}).items():
            if "test" in r["evals"]:
                spec_eval = EvalSpec("test", r["evals"]["test"]["metadata"]["data"])
                ev = flat_variant_eval(workdir / "runs" / key / "robust-atr" / f"seed{seed}", spec_eval, cache_dir, r["train"])
                runs[key].setdefault(FLAT_VARIANT, {})[seed] = {"train": r["train"], "evals": {"test": ev}}
    after_table = aggregate(runs)
    diagnostics = {}
    for key, by_method in runs.items():
        for method, by_seed in by_method.items():
            for seed, r in by_seed.items():
                last = (r["train"].get("history") or [{}])[-1]
                diag = {k.removeprefix("train/"): v for k, v in last.items() if k.startswith("train/diag_")}
                if diag:
                    diagnostics[f"{key}/{method}/seed{seed}"] = diag
    record = {"benchmark": "methods-recheck", "date": payload["date"], "command": payload["command"], "machine": payload["machine"],
              "settings": payload["settings"], "wall_seconds": payload["wall_seconds"], "failures": payload["failures"],
              "before": {"path": str(before_path), "command": before.get("command"), "date": before.get("date"), "results": before["results"]},
              "after": {"results": after_table, "diagnostics": diagnostics}, "notes": payload.get("run_notes") or {}}
    atomic_write_text(RECHECK_JSON, json.dumps(record, indent=2, allow_nan=False, default=_json_default))
    main_payload = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else None
    if main_payload:
        write_docs(main_payload, DOCS / "results.md", DOCS, "results_")
    log(f"recheck written to {RECHECK_JSON}" + (" and docs/results.md" if main_payload else ""))



if __name__ == "__main__":
    main()
