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
import math
import os
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, peak_rss_mib, require_shared  # noqa: E402

os.environ.setdefault("SONALIGN_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

METHODS = ["clap-baseline", "hilbert", "robust-atr", "hade", "mga-clap", "calm"]
BASELINE = "clap-baseline"
TASKS = ["nonverbal", "asterisk", "asterisk-asr", "fsdd-zs", "fsdd", "emodb", "robustness"]
#: Default epoch / patience budgets per training task, chosen to give every run a few hundred
#: optimizer steps (label-prompted batches hold one clip per class: 16 / 10 / 7 pairs on
#: nonverbal / fsdd / emodb, so those epochs have 31 / 240 / 51 steps; asterisk has 12).
#: ``--epochs`` / ``--patience`` override them for every task.
#: Sized for ~1.5 h of the whole benchmark (87 runs) on 2 shared CPU cores. Measured CPU cost of one
#: optimizer step (1 thread): CALM's SpecTran ~1.1 s for 16 nonverbal clips and several seconds for
#: 32 asterisk clips (long prompts, up to 1024 mel frames), HADE ~0.3 s (nonverbal) / ~3.5 s
#: (asterisk, up to 512 frames), MGA-CLAP ~0.13 s, HILBERT / Robust-ATR < 0.07 s, CLAP 0.01 s.
BUDGETS = {"nonverbal": (6, 2), "asterisk": (8, 2), "asterisk-asr": (8, 2), "fsdd": (1, 1), "emodb": (4, 2)}
#: Rough relative cost, to start the longest runs first (better packing of the worker pool).
COST = {"calm": 8, "hade": 5, "mga-clap": 3, "hilbert": 2, "robust-atr": 2, "clap-baseline": 1}
TASK_COST = {"asterisk": 4, "nonverbal": 2, "emodb": 2, "asterisk-asr": 2, "fsdd": 1}
ACOUSTIC = {"audio_encoder": "aisfx-cnn"}
#: The ASR cascade keeps fixed windows and no encoder levels for every method (a method config that
#: asks for other segmentation or levels -- Robust-ATR's energy chunks, HADE's levels -- is
#: overridden here: pocketsphinx decodes at ~1x real time, and it has no intermediate levels).
ASR = {"audio_encoder": "pocketsphinx", "segmenter": "fixed", "segmenter_options": {}, "with_levels": False}
#: Model-config overrides per task and method where a task's features do not give what the default
#: config reads: without encoder levels HADE aligns the blocks of its own stream (hierarchy "stream").
TASK_MODEL_OVERRIDES = {"asterisk-asr": {"hade": {"hierarchy": "stream", "num_blocks": 3, "block_levels": [0, 1]}}}
RECHECK_JSON = ROOT / "bench" / "results" / "methods_recheck.json"
NOISE_SET = "clotho_sample/evaluation"
QUICK_SIZES = {"train": 96, "val": 32, "test": 48}
DOCS = ROOT / "docs"
RESULTS_JSON = ROOT / "bench" / "results" / "methods.json"
BENCH_VERSION = 1  # bump to invalidate every cached run/evaluation record
TUNING_JSON = ROOT / "bench" / "results" / "methods_tuning.json"
#: ``--tune``: what else was tried, seed 0, on the two tasks with a clear per-method primary metric.
#: The default setting (lr 1e-3, the task's budget) is the seed-0 run of the main table.
TUNE_TASKS = {"nonverbal": "t2a/mAP@10", "asterisk": "t2a/R@10"}
TUNE_VARIANTS = {
    "lr 3e-4": {"lr": 3e-4, "epochs_factor": 1, "patience": None},  # transformers often want a smaller step than 1e-3
    "2x epochs, patience 4": {"lr": None, "epochs_factor": 2, "patience": 4},  # slow learners (CALM, HADE) were cut short
}


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------


@dataclass
class EvalSpec:
    name: str  # key in the run's results ("test", "noise", "fsdd-zs")
    data: str  # manifest
    template: str | None = None
    noise: str | None = None
    probe: str | None = None


@dataclass
class TrainSpec:
    key: str  # run folder group (nonverbal, asterisk, asterisk-asr, fsdd, emodb)
    data: str
    template: str | None
    features: dict[str, Any]
    methods: list[str]
    evals: list[EvalSpec] = field(default_factory=list)
    epochs: int = 0
    patience: int = 0
    #: method -> model-config overrides for this task (TASK_MODEL_OVERRIDES)
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def plan(tasks: list[str], methods: list[str], data: dict[str, Path], noise: Path) -> list[TrainSpec]:
    m = lambda p: str(data[p] / "manifest.jsonl")  # noqa: E731
    specs: list[TrainSpec] = []
    if {"nonverbal", "robustness"} & set(tasks):
        s = TrainSpec("nonverbal", m("nonverbal"), "sound", ACOUSTIC, methods)
        if "nonverbal" in tasks:
            s.evals.append(EvalSpec("test", m("nonverbal")))
        if "robustness" in tasks:
            s.evals.append(EvalSpec("noise", m("nonverbal"), noise=str(noise)))
        specs.append(s)
    if {"asterisk", "robustness", "fsdd-zs"} & set(tasks):
        s = TrainSpec("asterisk", m("asterisk"), None, ACOUSTIC, methods)
        if "asterisk" in tasks:
            s.evals.append(EvalSpec("test", m("asterisk")))
        if "robustness" in tasks:
            s.evals.append(EvalSpec("noise", m("asterisk"), noise=str(noise)))
        if "fsdd-zs" in tasks:
            s.evals.append(EvalSpec("fsdd-zs", m("fsdd"), template="digit"))
        specs.append(s)
    if "asterisk-asr" in tasks:
        s = TrainSpec("asterisk-asr", m("asterisk"), None, ASR, [x for x in methods if x != "calm"])
        s.evals.append(EvalSpec("test", m("asterisk")))
        if "fsdd-zs" in tasks:
            s.evals.append(EvalSpec("fsdd-zs", m("fsdd"), template="digit"))
        specs.append(s)
    if "fsdd" in tasks:
        specs.append(TrainSpec("fsdd", m("fsdd"), "digit", ACOUSTIC, methods, [EvalSpec("test", m("fsdd"))]))
    if "emodb" in tasks:
        specs.append(TrainSpec("emodb", m("emodb"), "emotion", ACOUSTIC, methods, [EvalSpec("test", m("emodb"), probe=m("emodb"))]))
    for s in specs:
        s.model_overrides = {m: o for m, o in TASK_MODEL_OVERRIDES.get(s.key, {}).items() if m in s.methods}
    return [s for s in specs if s.methods]


def apply_budgets(specs: list[TrainSpec], epochs: int | None, patience: int | None) -> None:
    for s in specs:
        e, p = BUDGETS[s.key]
        s.epochs = epochs if epochs is not None else e
        s.patience = patience if patience is not None else p


# ---------------------------------------------------------------------------------------------
# Data (real sets; --quick writes stratified subsets into the workdir)
# ---------------------------------------------------------------------------------------------


def subset_manifest(src: Path, dst: Path, sizes: dict[str, int]) -> Path:
    """Per split, up to ``sizes[split]`` rows, round-robin over labels (so every class stays)."""
    rows = [json.loads(line) for line in (src / "manifest.jsonl").open(encoding="utf-8") if line.strip()]
    keep = []
    for split, n in sizes.items():
        by_label: dict[Any, list[dict]] = {}
        for r in rows:
            if r.get("split") == split:
                by_label.setdefault(r.get("label"), []).append(r)
        queues = [by_label[k] for k in sorted(by_label, key=str)]
        picked: list[dict] = []
        while len(picked) < n and any(queues):
            for q in queues:
                if q and len(picked) < n:
                    picked.append(q.pop(0))
        keep += picked
    dst.mkdir(parents=True, exist_ok=True)
    out = dst / "manifest.jsonl"
    text = "".join(json.dumps({**r, "audio": str((src / r["audio"]).resolve())}) + "\n" for r in keep)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    return dst


def datasets(quick: bool, workdir: Path) -> dict[str, Path]:
    names = ["nonverbal", "asterisk", "fsdd", "emodb"]
    real = {n: require_shared(n) for n in names}
    if not quick:
        return real
    return {n: subset_manifest(p, workdir / "data" / n, QUICK_SIZES) for n, p in real.items()}


# ---------------------------------------------------------------------------------------------
# Feature extraction up front (so per-method timings are training + evaluation only)
# ---------------------------------------------------------------------------------------------


def feature_settings(features: dict[str, Any], method: str):
    from sonalign.cache.features import FeatureSettings
    from sonalign.models.factory import get_model_config
    from sonalign.train.trainer import model_inputs

    config = get_model_config(method)
    settings = FeatureSettings(**{**config.get("features", {}), **features})
    if "audio_mel" in model_inputs(config):
        settings.with_mel = True
    return settings


def extraction_jobs(specs: list[TrainSpec], refs: bool, asr_emodb: bool = False) -> list[tuple[Any, list[tuple[str, str | None]], list[str]]]:
    """``(FeatureSettings, [(source, split or None for all)], noisy sources)`` for every feature setting the plan needs.

    Training sources and probe sources need every split; evaluation sources only their test split.
    """
    from sonalign.cache.features import FeatureSettings

    needs: dict[str, tuple[Any, set[tuple[str, str | None]], set[str]]] = {}
    for s in specs:
        for method in s.methods:
            fs = feature_settings(s.features, method)
            entry = needs.setdefault(json.dumps(asdict(fs), sort_keys=True), (fs, set(), set()))
            entry[1].add((s.data, None))
            entry[1].update((e.data, "test") for e in s.evals)
            entry[1].update((e.probe, None) for e in s.evals if e.probe)
            entry[2].update(e.data for e in s.evals if e.noise)
    if refs and asr_emodb:  # the emodb pocketsphinx probe only on request (ASR is ~1x real time here)
        for s in specs:
            if s.key == "emodb":
                needs.setdefault(json.dumps(asdict(FeatureSettings(**ASR)), sort_keys=True), (FeatureSettings(**ASR), set(), set()))[1].add((s.data, None))
    out = []
    for _, (fs, sources, noisy) in sorted(needs.items(), key=lambda kv: (kv[1][0].with_mel, kv[0])):
        whole = {src for src, split in sources if split is None}
        out.append((fs, sorted((src, split) for src, split in sources if split is None or src not in whole), sorted(noisy)))
    return out


def _init_worker(threads: int) -> None:
    import warnings

    import torch

    torch.set_num_threads(threads)
    # the probe's C search scores val predictions with balanced accuracy; a class missing from a
    # small val split only triggers this warning, once per C, in every log line otherwise
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")


def _extract_job(settings: dict[str, Any], source: str, split: str | None, shard: int, n_shards: int, cache_dir: str, noise: str | None,
                 snrs: tuple[float, ...]) -> dict[str, Any]:
    """One shard of one source for one feature setting (clean features; noisy ones when ``noise``)."""
    from sonalign.cache.features import FeatureCache, FeatureSettings
    from sonalign.data.readers import load_clips

    fs = FeatureSettings(**settings)
    cache = FeatureCache(cache_dir, fs)
    started = time.perf_counter()
    if noise is None:
        clips = load_clips(source, split=split)[shard::n_shards]
        filled = 0
        if fs.with_mel:
            plain = FeatureCache(cache_dir, FeatureSettings(**{**settings, "with_mel": False}))
            filled = prefill_mel(plain, cache, clips)
        report = cache.extract(clips, show_progress=False)
        return {"features": settings, "audio_key": cache.audio_key, "source": source, "split": split or "all", "shard": f"{shard + 1}/{n_shards}", "clips": len(clips),
                "encoded": report.encoded, "mel_filled_from_plain": filled, "cached": report.cached, "failures": report.failures,
                "wall_seconds": round(time.perf_counter() - started, 1)}
    from sonalign.evaluation.run import noise_bank_from
    from sonalign.utils.hashing import settings_hash

    bank = noise_bank_from(noise, cache.audio_encoder.sample_rate)
    noise_key = settings_hash(bank.describe())
    clips = [c for c in load_clips(source, split="test") if cache.has_audio(cache.memo.hash(c.audio))][shard::n_shards]
    for snr in snrs:
        for clip in clips:
            cache.noisy_features(clip, bank, snr, noise_key)
    return {"features": settings, "audio_key": cache.audio_key, "source": source, "noisy": list(snrs), "shard": f"{shard + 1}/{n_shards}",
            "clips": len(clips), "wall_seconds": round(time.perf_counter() - started, 1)}


def extract_all(specs: list[TrainSpec], cache_dir: Path, pool, jobs: int, noise: Path, refs: bool, asr_emodb: bool = False) -> tuple[dict[str, str], list[dict]]:
    """Extract every (feature setting, source) pair the plan needs, then the noisy test features.

    Phases (each sharded over the worker pool): plain settings, then +mel (filled from the plain
    files plus log-mels), then the noisy test features of the robustness sets.
    """
    from sonalign.cache.features import FeatureCache
    from sonalign.evaluation.run import DEFAULT_SNRS

    needed = extraction_jobs(specs, refs, asr_emodb)
    keys = {json.dumps(asdict(fs), sort_keys=True): FeatureCache(cache_dir, fs).audio_key for fs, _, _ in needed}
    timings: list[dict] = []
    phases = [[(fs, src, split, None) for fs, sources, _ in needed if not fs.with_mel for src, split in sources],
              [(fs, src, split, None) for fs, sources, _ in needed if fs.with_mel for src, split in sources],
              [(fs, src, "test", str(noise)) for fs, _, noisy in needed for src in noisy]]
    for phase in phases:
        futures = [pool.submit(_extract_job, asdict(fs), src, split, k, jobs, str(cache_dir), nz, DEFAULT_SNRS) for fs, src, split, nz in phase for k in range(jobs)]
        for f in futures:
            t = f.result()
            timings.append(t)
            name = f"{t['features']['audio_encoder']}{'+mel' if t['features']['with_mel'] else ''} {Path(t['source']).parent.name} {t.get('split', 'test')} [{t['shard']}]"
            if t.get("noisy"):
                log(f"noisy features {name}: {t['clips']} test clips x {len(t['noisy'])} SNRs, {t['wall_seconds']:.0f} s")
            elif t["encoded"] or t["failures"] or t["mel_filled_from_plain"]:
                log(f"features {name}: {t['encoded']} encoded, {t['mel_filled_from_plain']} mel-filled, {t['cached']} cached, "
                    f"{len(t['failures'])} failed, {t['wall_seconds']:.0f} s")
            for path, why in t.get("failures", []):
                log(f"  unreadable: {path}: {why}")
    return keys, timings


def prefill_mel(plain, mel_cache, clips) -> int:
    """Fill ``mel_cache`` (same encoder and segmenter, ``with_mel``) from ``plain``'s files plus log-mels.

    CALM needs log-mels, and ``with_mel`` is part of the cache key, so ``extract`` would run the
    audio encoder a second time for the same segments. Here each recording's frozen-encoder
    outputs are copied from the plain cache and only the log-mels are computed, exactly as
    ``FeatureCache.encode_segments`` computes them (same segments, same waves); recordings missing
    from the plain cache are left to ``extract``. Returns how many files were written.
    """
    import numpy as np

    from sonalign.audio.io import resample
    from sonalign.audio.mel import log_mel
    from sonalign.cache.features import MEL_SETTINGS

    assert mel_cache.settings.with_mel and plain.audio_encoder.settings() == mel_cache.audio_encoder.settings()
    written = 0
    for clip in clips:
        try:
            h = mel_cache.memo.hash(clip.audio)
        except OSError:
            continue
        if mel_cache.has_audio(h) or not plain.has_audio(h):
            continue
        data = plain.load_audio_features(h)
        waves, segments = mel_cache._load_segments(clip)
        if [s.to_dict() for s in segments] != data["segments"]:
            continue  # not the same cut: let extract do it
        sr = mel_cache.audio_encoder.sample_rate
        mels = [np.asarray(log_mel(resample(w, sr, MEL_SETTINGS["sample_rate"]), **MEL_SETTINGS), dtype=np.float32) for w in waves]
        data["mel"] = np.concatenate(mels)
        data["mel_offsets"] = np.concatenate([[0], np.cumsum([m.shape[0] for m in mels])]).astype(np.int64)
        mel_cache._write(h, data, clip.audio)
        written += 1
    mel_cache.memo.save()
    return written


# ---------------------------------------------------------------------------------------------
# Runs and evaluations (resumable)
# ---------------------------------------------------------------------------------------------


def run_fingerprint(spec: TrainSpec, method: str, seed: int, args, audio_key: str) -> dict[str, Any]:
    fp = {"version": BENCH_VERSION, "method": method, "data": spec.data, "template": spec.template, "features": spec.features, "seed": seed,
          "epochs": spec.epochs, "batch_size": args.batch_size, "lr": args.lr, "patience": spec.patience, "audio_key": audio_key}
    if spec.model_overrides.get(method):
        fp["model_overrides"] = spec.model_overrides[method]
    return fp


def ensure_trained(spec: TrainSpec, method: str, seed: int, run_dir: Path, cache_dir: Path, args, audio_key: str) -> dict[str, Any]:
    from sonalign.train.trainer import TrainSettings, train

    fp = run_fingerprint(spec, method, seed, args, audio_key)
    record_path = run_dir / "bench-run.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    if record and record.get("fingerprint") == fp and (run_dir / "summary.json").exists() and "train_seconds" in record:
        return record, False
    resume = bool(record and record.get("fingerprint") == fp and (run_dir / "state.pt").exists())
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        record_path.write_text(json.dumps({"fingerprint": fp}, indent=2))
    settings = TrainSettings(config=method, data=spec.data, out=str(run_dir), epochs=spec.epochs, batch_size=args.batch_size, lr=args.lr,
                             seed=seed, patience=spec.patience, template=spec.template, cache=str(cache_dir), features=dict(spec.features),
                             model_overrides=dict(spec.model_overrides.get(method, {})))
    started = time.perf_counter()
    summary = train(settings, resume=resume, show_progress=False)
    seconds = time.perf_counter() - started + (record or {}).get("partial_seconds", 0.0)
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    record = {"fingerprint": fp, "summary": summary, "train_seconds": round(seconds, 1), "resumed": resume,
              "epoch_seconds": [h["seconds"] for h in history], "history": history}
    record_path.write_text(json.dumps(record, indent=2))
    return record, True


def ensure_evaluated(run_dir: Path, ev: EvalSpec, cache_dir: Path, run_record: dict[str, Any]) -> dict[str, Any]:
    from sonalign.evaluation.report import to_jsonable
    from sonalign.evaluation.run import evaluate_run

    path = run_dir / f"bench-eval-{ev.name}.json"
    fp = {"run": run_record["fingerprint"], "eval": asdict(ev)}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == fp:
            return saved, False
    started = time.perf_counter()
    result = evaluate_run(run_dir, ev.data, split="test", template=ev.template, noise=ev.noise, probe_data=ev.probe, cache_dir=cache_dir, show_progress=False)
    seconds = time.perf_counter() - started
    out = {
        "fingerprint": fp,
        "seconds": round(seconds, 1),
        "metrics": to_jsonable(result.metrics),
        "robustness": to_jsonable({("clean" if k == "clean" else f"{float(k):g}"): v for k, v in result.robustness.items()}),
        "probe": to_jsonable({k: v.to_dict() for k, v in result.probe.items()}),
        "zeroshot": to_jsonable(result.zeroshot.to_dict()) if result.zeroshot is not None and hasattr(result.zeroshot, "to_dict") else None,
        "metadata": to_jsonable(result.metadata),
    }
    path.write_text(json.dumps(out, indent=2))
    return out, True


def _unit_job(spec: TrainSpec, method: str, seed: int, run_dir: str, cache_dir: str, batch_size: int, lr: float, audio_key: str, label: str) -> dict[str, Any]:
    """Train (or reuse) one run and evaluate it on every evaluation of its spec; never raises."""
    run_dir, cache_dir = Path(run_dir), Path(cache_dir)
    args = argparse.Namespace(batch_size=batch_size, lr=lr)
    out: dict[str, Any] = {"task": spec.key, "method": method, "seed": seed, "record": None, "evals": {}, "failures": []}
    try:
        record, fresh = ensure_trained(spec, method, seed, run_dir, cache_dir, args, audio_key)
        s = record["summary"]
        log(f"{label}: trained {s['epochs_run']} epochs (best {s['best_epoch']}, val {s['best_val_primary']:.3f}) in {record['train_seconds']:.0f} s"
            f"{'' if fresh else ' [done before]'}")
    except Exception as exc:
        out["failures"].append({"task": spec.key, "method": method, "seed": seed, "stage": "train", "error": f"{type(exc).__name__}: {exc}"})
        log(f"{label}: TRAINING FAILED: {exc}\n{traceback.format_exc()}")
        return out
    out["record"] = record
    for ev in spec.evals:
        try:
            result, fresh = ensure_evaluated(run_dir, ev, cache_dir, record)
            out["evals"][ev.name] = result
            m = result["metrics"]
            shown = ", ".join(f"{k} {m[k]:.3f}" for k in ("t2a/R@10", "a2t/R@10", "zeroshot/top1", "probe/linear/UA", "probe/head/UA", "snr5/t2a/R@10") if k in m)
            log(f"{label}: eval {ev.name}: {shown} ({result['seconds']:.0f} s{'' if fresh else ', done before'})")
        except Exception as exc:
            out["failures"].append({"task": spec.key, "method": method, "seed": seed, "stage": f"eval {ev.name}", "error": f"{type(exc).__name__}: {exc}"})
            log(f"{label}: EVAL {ev.name} FAILED: {exc}\n{traceback.format_exc()}")
    return out


# ---------------------------------------------------------------------------------------------
# Frozen-feature references
# ---------------------------------------------------------------------------------------------


def _clip_matrix(cache, clips) -> tuple[Any, list]:
    import numpy as np

    rows, kept = [], []
    for c in clips:
        h = cache.memo.hash(c.audio)
        if cache.has_audio(h):
            rows.append(cache.load_audio_features(h)["embedding"].mean(0))
            kept.append(c)
    return np.stack(rows).astype(np.float64), kept


def raw_probe(cache_dir: Path, manifest: str, features: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from sonalign.cache.features import FeatureCache, FeatureSettings
    from sonalign.data.readers import load_clips
    from sonalign.evaluation.probe import linear_probe

    cache = FeatureCache(cache_dir, FeatureSettings(**features))
    parts = {}
    for split in ("train", "val", "test"):
        clips = [c for c in load_clips(manifest, split=split) if c.label is not None]
        cache.extract(clips, show_progress=False)
        x, kept = _clip_matrix(cache, clips)
        parts[split] = (x, np.array([c.label for c in kept]))
    res = linear_probe(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], parts["val"][0], parts["val"][1])
    return {"features": features, "data": manifest, "UA": res.ua, "WA": res.wa, "C": res.C, "n_train": res.n_train, "n_test": res.n_test}


def asr_cascade(cache_dir: Path, manifest: str, template: str | None) -> dict[str, Any]:
    """Untrained cascade: cosine(MiniLM(pocketsphinx transcript), MiniLM(query)) on the test split."""
    import numpy as np

    from sonalign.cache.features import FeatureCache, FeatureSettings
    from sonalign.data.readers import load_clips
    from sonalign.evaluation.retrieval import evaluate_retrieval, retrieval_metrics
    from sonalign.evaluation.zeroshot import zero_shot_from_scores
    from sonalign.train.data import _label_key
    from sonalign.train.prompts import render

    cache = FeatureCache(cache_dir, FeatureSettings(**ASR))
    clips = load_clips(manifest, split="test")
    cache.extract(clips, show_progress=False)
    audio, kept = _clip_matrix(cache, clips)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True) + 1e-12

    def text_matrix(texts: list[str]) -> np.ndarray:
        cache.text_store.ensure(sorted(set(texts)))
        t = np.stack([cache.text_store.get(x)["embedding"] for x in texts]).astype(np.float64)
        return t / (np.linalg.norm(t, axis=1, keepdims=True) + 1e-12)

    if template is None:
        texts, owner = [], []
        for i, c in enumerate(kept):
            for t in c.texts:
                texts.append(t)
                owner.append(i)
        result = evaluate_retrieval(audio @ text_matrix(texts).T, np.array(owner))
        return {"data": manifest, "metrics": {k: float(v) for k, v in result.metrics.items()}}
    names = sorted({c.label for c in kept}, key=_label_key)
    labels = np.array([names.index(c.label) for c in kept])
    prompts = [render(template, n) for n in names]
    scores = audio @ text_matrix(prompts).T
    relevance = labels[None, :] == np.arange(len(names))[:, None]
    t2a = retrieval_metrics(scores.T, relevance)
    zs = zero_shot_from_scores(scores, labels, names, template=template, prompts=prompts)
    metrics = {f"t2a/{k}": float(v) for k, v in t2a.items() if k != "n_queries"}
    metrics.update({f"zeroshot/{k}": float(v) for k, v in zs.metrics.items()})
    return {"data": manifest, "template": template, "metrics": metrics}


def references(specs: list[TrainSpec], tasks: list[str], data: dict[str, Path], cache_dir: Path, asr_emodb: bool = False) -> dict[str, Any]:
    refs: dict[str, Any] = {}
    m = lambda p: str(data[p] / "manifest.jsonl")  # noqa: E731
    keys = {s.key for s in specs}
    jobs = []
    if "nonverbal" in keys:
        jobs.append(("nonverbal/probe/aisfx-cnn", lambda: raw_probe(cache_dir, m("nonverbal"), ACOUSTIC)))
    if "fsdd" in keys:
        jobs.append(("fsdd/probe/aisfx-cnn", lambda: raw_probe(cache_dir, m("fsdd"), ACOUSTIC)))
    if "emodb" in keys:
        jobs.append(("emodb/probe/aisfx-cnn", lambda: raw_probe(cache_dir, m("emodb"), ACOUSTIC)))
        if asr_emodb:
            jobs.append(("emodb/probe/pocketsphinx", lambda: raw_probe(cache_dir, m("emodb"), ASR)))
    if "asterisk-asr" in keys:
        jobs.append(("asterisk/asr-cascade-untrained", lambda: asr_cascade(cache_dir, m("asterisk"), None)))
        if "fsdd-zs" in tasks:
            jobs.append(("fsdd-zs/asr-cascade-untrained", lambda: asr_cascade(cache_dir, m("fsdd"), "digit")))
    for name, job in jobs:
        started = time.perf_counter()
        try:
            refs[name] = {**job(), "seconds": round(time.perf_counter() - started, 1)}
            log(f"reference {name}: {_short(refs[name])}")
        except Exception as exc:  # a reference must not sink the benchmark; it is reported instead
            refs[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"reference {name} FAILED: {exc}")
    return refs


def _short(ref: dict[str, Any]) -> str:
    if "UA" in ref:
        return f"UA {ref['UA']:.3f} WA {ref['WA']:.3f}"
    m = ref.get("metrics", {})
    return ", ".join(f"{k} {m[k]:.3f}" for k in ("t2a/R@1", "t2a/R@10", "zeroshot/top1") if k in m)


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


def flat_variant_eval(run_dir: Path, ev: EvalSpec, cache_dir: Path, run_record: dict[str, Any]) -> dict[str, Any]:
    """The same Robust-ATR run scored with the flat cosine instead of the refined pair score (no retraining)."""
    variant = run_dir.parent / f"{run_dir.name}-flat"
    variant.mkdir(exist_ok=True)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["similarity"] = "flat"
    (variant / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copyfile(run_dir / "model.safetensors", variant / "model.safetensors")
    return ensure_evaluated(variant, EvalSpec(ev.name, ev.data, ev.template), cache_dir, {"fingerprint": {**run_record["fingerprint"], "similarity": "flat"}})[0]


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


def _json_default(o):
    if isinstance(o, set):
        return sorted(o)
    return str(o)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


if __name__ == "__main__":
    main()
