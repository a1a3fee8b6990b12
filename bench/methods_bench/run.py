"""Running bench/methods.py: shared feature extraction, training and evaluation of each run (resumable), frozen-feature references."""

from __future__ import annotations

import argparse
import json
import shutil
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any
from methods_bench.plan import ACOUSTIC, ASR, BENCH_VERSION, EvalSpec, TrainSpec, log  # noqa: E402


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
    from sonalign.batches import _label_key
    from sonalign.data.prompts import render

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


def flat_variant_eval(run_dir: Path, ev: EvalSpec, cache_dir: Path, run_record: dict[str, Any]) -> dict[str, Any]:
    """The same Robust-ATR run scored with the flat cosine instead of the refined pair score (no retraining)."""
    variant = run_dir.parent / f"{run_dir.name}-flat"
    variant.mkdir(exist_ok=True)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["similarity"] = "flat"
    (variant / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copyfile(run_dir / "model.safetensors", variant / "model.safetensors")
    return ensure_evaluated(variant, EvalSpec(ev.name, ev.data, ev.template), cache_dir, {"fingerprint": {**run_record["fingerprint"], "similarity": "flat"}})[0]


