"""Train, measure and install sonalign's packaged default search model with sonalign's own CLI.

    python scripts/train_default_model.py                 # train, evaluate, write the model card, install
    python scripts/train_default_model.py --ablations     # also measure every recipe choice on sfx val
    python scripts/train_default_model.py --extra DIR     # add a registry corpus (scripts/registry_sfx.py)

Data (licence policy of ../shared/data/README.md: every clip has at least one licence option among
CC0, public domain, MIT, CC-BY-*, CC-BY-SA-*, LAL; no NC/ND, no GPL-only or GFDL-only clip):
* ../shared/data/sfx train + val clips with such a licence, every caption of a clip a positive
  (the `zeroshot` and `test` splits are never trained on);
* ../shared/data/asterisk train + val (telephone prompts, caption = the exact transcript, CC BY-SA 3.0)
  and a sample of ../shared/data/fsdd train + val (spoken digits, CC BY-SA 4.0), so spoken content
  keeps working;
* optionally more sound effects made by scripts/registry_sfx.py (same policy, per-file licences).

The run's validation split (sfx val, asterisk val, fsdd val) only stops training early. The
written training manifest (ids, licences, sources; no paths) ships beside the weights as
``training_data.jsonl``; a test checks every licence in it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sonalign.data.licences import allows_shipped_weights  # noqa: E402
from sonalign.data.readers import load_clips  # noqa: E402
from sonalign.data.prompts import render  # noqa: E402

DEST = ROOT / "src" / "sonalign" / "assets" / "default_model"
CONFIG = {"method": "clap_baseline", "audio_dim": 512, "text_dim": 384, "embed_dim": 256, "dropout": 0.1, "init_temperature": 0.07}
TRAIN = {"epochs": 30, "batch-size": 32, "lr": 1e-3, "seed": 0, "patience": 5}
SEEDS = 3  # every ablation row is a mean over these seeds; the final model is the seed with the best validation score
ABLATION_METRICS = ("t2a/R@1", "t2a/R@5", "t2a/R@10", "t2a/mAP@10", "a2t/R@1", "zeroshot/top1", "asterisk/t2a/R@10")
FSDD_PER_DIGIT = 30  # a sample keeps the 10 digit captions from crowding the sound effects out of every batch
DIGIT_CAPTIONS = ("a person saying the number {label}", "someone says {label}", "the spoken number {label}")
SFX_LICENCE = "per clip (sfx manifest `license`, `attribution`)"


def sfx_rows(shared: Path, splits: tuple[str, ...], *, shippable_only: bool = True) -> list[dict]:
    rows = []
    for c in load_clips(shared / "sfx" / "manifest.jsonl"):
        if c.split in splits and (allows_shipped_weights(c.license) or not shippable_only):
            rows.append(_row(f"sfx/{c.id}", c.audio, c.split, c.captions, c.license, "sfx", c.label, c.custom.get("attribution")))
    return rows


def speech_rows(shared: Path, asterisk_copies: int = 2) -> list[dict]:
    rows = []
    for c in load_clips(shared / "asterisk" / "manifest.jsonl"):
        for copy in range(asterisk_copies if c.split == "train" else 1):
            if c.split in ("train", "val") and c.text:
                rows.append(_row(f"asterisk/{c.id}" + (f"#{copy + 1}" if copy else ""), c.audio, c.split, [c.text], "CC-BY-SA-3.0", "asterisk", None,
                                 "Asterisk core sounds, voice: Allison Smith (Digium), CC BY-SA 3.0"))
    per_digit: dict[tuple[str, str], int] = {}
    for c in load_clips(shared / "fsdd" / "manifest.jsonl"):
        key = (c.split or "", c.label or "")
        if c.split in ("train", "val") and per_digit.get(key, 0) < FSDD_PER_DIGIT * (1 if c.split == "train" else 0.2):
            per_digit[key] = per_digit.get(key, 0) + 1
            captions = [render(t, c.label) for t in DIGIT_CAPTIONS]
            rows.append(_row(f"fsdd/{c.id}", c.audio, c.split, captions, "CC-BY-SA-4.0", "fsdd", c.label, "Free Spoken Digit Dataset (Jakobovski et al.), CC BY-SA 4.0"))
    return rows


def extra_rows(folder: Path) -> list[dict]:
    return [_row(f"{folder.name}/{c.id}", c.audio, "train", c.captions, c.license, c.source or folder.name, c.label, c.custom.get("attribution"))
            for c in load_clips(folder / "manifest.jsonl") if allows_shipped_weights(c.license)]


def _row(rid, audio, split, captions, licence, source, label, attribution) -> dict:
    return {"id": rid, "audio": str(audio), "split": split, "captions": list(captions), "label": label, "license": licence, "source": source, "attribution": attribution}


def write_manifest(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def sonalign(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("sonalign")), *args]
    print("$ sonalign", " ".join(args), flush=True)
    subprocess.run(command, check=True)


def train(manifest: Path, run: Path, cache: Path, config: dict, **overrides) -> dict:
    settings = {**TRAIN, **overrides}
    run.mkdir(parents=True, exist_ok=True)
    (run.parent / f"{run.name}.config.json").write_text(json.dumps(config))
    if not (run / "summary.json").exists():
        sonalign("train", "--config", str(run.parent / f"{run.name}.config.json"), "--data", str(manifest), "--out", str(run), "--cache", str(cache),
                 *[f"--{k}={v}" for k, v in settings.items()])
    return json.loads((run / "summary.json").read_text())


def evaluate(run: Path, data: Path, split: str, out: Path, cache: Path, *extra: str) -> dict:
    report = out / "metrics.json"
    if not report.exists():
        sonalign("evaluate", str(run), "--data", str(data), "--split", split, "--out", str(out), "--cache", str(cache), "--json", str(report), *extra)
    return json.loads(report.read_text())["metrics"]


# ---------------------------------------------------------------------------- ablations
def ablations(args, cache: Path) -> list[dict]:
    """Each recipe choice alone, trained on sfx train (early stopping on sfx val) with each seed and
    measured on the whole sfx val split (every licence: evaluation only) and asterisk val."""
    from default_model_augment import augmented_rows

    base = sfx_rows(args.shared, ("train", "val"))
    sfx = args.shared / "sfx" / "manifest.jsonl"
    variants = {
        "shippable sfx train, defaults (the recipe's base)": (base, CONFIG, {}),
        "all sfx train clips, GPL/GFDL too (not shippable)": (sfx_rows(args.shared, ("train", "val"), shippable_only=False), CONFIG, {}),
        "+ speech sets (asterisk train clips once, fsdd sample)": (base + speech_rows(args.shared, asterisk_copies=1), CONFIG, {}),
        "+ speech sets, asterisk train clips twice (the recipe's data)": (base + speech_rows(args.shared), CONFIG, {}),
        "+ random crops (3 per clip)": (base + augmented_rows(base, args.workdir / "aug", "crop", 3), CONFIG, {}),
        "+ two-clip mixes, 'A and B' captions (2 per clip)": (base + augmented_rows(base, args.workdir / "aug", "pair", 2), CONFIG, {}),
        "+ events in ambience at 0-20 dB, cut like the indexer (2 per clip)": (base + augmented_rows(base, args.workdir / "aug", "ambience", 2), CONFIG, {}),
        "embedding 128-d": (base, {**CONFIG, "embed_dim": 128}, {}),
        "embedding 512-d": (base, {**CONFIG, "embed_dim": 512}, {}),
        "dropout 0.3": (base, {**CONFIG, "dropout": 0.3}, {}),
        "initial temperature 0.03": (base, {**CONFIG, "init_temperature": 0.03}, {}),
        "lr 3e-4, 60 epochs": (base, CONFIG, {"lr": 3e-4, "epochs": 60, "patience": 10}),
        "batch 64": (base, CONFIG, {"batch-size": 64}),
    }
    for extra in args.extra + args.measure_extra:
        variants[f"+ registry sound effects ({extra.name}, scripts/registry_sfx.py)"] = (base + extra_rows(extra), CONFIG, {})
    results = []
    for name, (rows, config, train_args) in variants.items():
        slug = hashlib.sha256(name.encode()).hexdigest()[:10]  # a variant keeps its folder when others are added
        manifest = write_manifest(rows, args.workdir / "ablations" / f"{slug}.jsonl")
        per_seed = []
        for seed in range(SEEDS):
            run = args.workdir / "ablations" / (f"run-{slug}" + ("" if seed == 0 else f"-seed{seed}"))
            summary = train(manifest, run, cache, config, **{**train_args, "seed": seed})
            metrics = evaluate(run, sfx, "val", run / "eval-val", cache)
            speech = evaluate(run, args.shared / "asterisk" / "manifest.jsonl", "val", run / "eval-asterisk-val", cache)
            per_seed.append({"best_epoch": summary["best_epoch"], **{k: metrics[k] for k in ABLATION_METRICS[:-1]}, "asterisk/t2a/R@10": speech["t2a/R@10"]})
        results.append({"choice": name, "clips": len(rows), "seeds": SEEDS,
                        **{k: round(sum(r[k] for r in per_seed) / SEEDS, 4) for k in ("best_epoch", *ABLATION_METRICS)},
                        "spread": {k: round(max(r[k] for r in per_seed) - min(r[k] for r in per_seed), 4) for k in ABLATION_METRICS}})
        print(json.dumps(results[-1]), flush=True)
    return results


# ---------------------------------------------------------------------------- final model
def final_metrics(run: Path, shared: Path, workdir: Path, cache: Path) -> dict[str, dict]:
    sfx = shared / "sfx" / "manifest.jsonl"
    noise = shared / "clotho_sample" / "evaluation"
    return {
        "sfx test": evaluate(run, sfx, "test", workdir / "eval-sfx-test", cache, "--noise", str(noise)),
        "sfx zeroshot": evaluate(run, sfx, "zeroshot", workdir / "eval-sfx-zeroshot", cache),
        "asterisk test": evaluate(run, shared / "asterisk" / "manifest.jsonl", "test", workdir / "eval-asterisk-test", cache),
        "fsdd test": evaluate(run, shared / "fsdd" / "manifest.jsonl", "test", workdir / "eval-fsdd-test", cache),
    }


def install(run: Path, rows: list[dict], config: dict, summary: dict, metrics: dict, ablation_rows: list[dict] | None, extras: list[Path]) -> None:
    resolved = json.loads((run / "config.json").read_text())
    resolved["data"].update({"source": "see MODEL_CARD.md and training_data.jsonl", "cache": None})
    resolved["training"].update({"data": "training_data.jsonl", "out": None, "cache": None})
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "model.safetensors", DEST / "model.safetensors")
    (DEST / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    public = [{k: r[k] for k in ("id", "split", "label", "license", "source", "attribution")} for r in rows]
    write_manifest(public, DEST / "training_data.jsonl")
    if ablation_rows is not None:
        (DEST / "ablations.json").write_text(json.dumps(ablation_rows, indent=2) + "\n")
    elif (DEST / "ablations.json").exists():
        ablation_rows = json.loads((DEST / "ablations.json").read_text())
    (DEST / "MODEL_CARD.md").write_text(model_card(rows, config, summary, metrics, ablation_rows or [], extras))


def model_card(rows, config, summary, metrics, ablation_rows, extras) -> str:
    from default_model_card import render_card

    return render_card(rows=rows, config=config, train=TRAIN, summary=summary, metrics=metrics, ablations=ablation_rows, extras=[str(e) for e in extras], day=date.today().isoformat())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sonalign-default"))
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="registry corpora made by scripts/registry_sfx.py (folders with manifest.jsonl)")
    parser.add_argument("--measure-extra", type=Path, nargs="*", default=[], help="with --ablations: measure what a registry corpus adds, without training the shipped model on it")
    parser.add_argument("--ablations", action="store_true", help="also train and measure every recipe choice on sfx val (about 15 runs)")
    parser.add_argument("--no-install", action="store_true", help="train and measure only; leave the packaged model alone")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    cache = args.workdir / "cache"
    ablation_rows = ablations(args, cache) if args.ablations else None
    rows = sfx_rows(args.shared, ("train", "val")) + speech_rows(args.shared) + [r for e in args.extra for r in extra_rows(e)]
    bad = [r["id"] for r in rows if not allows_shipped_weights(r["license"])]
    if bad:
        sys.exit(f"refusing to train shipped weights on clips without a shippable licence: {bad[:5]}")
    manifest = write_manifest(rows, args.workdir / "default_train.jsonl")
    runs = {seed: train(manifest, args.workdir / f"run-seed{seed}", cache, CONFIG, seed=seed) for seed in range(SEEDS)}
    seed = max(runs, key=lambda s: runs[s]["best_val_primary"])  # model selection on the validation split only
    run, summary = args.workdir / f"run-seed{seed}", {**runs[seed], "seeds": {s: r["best_val_primary"] for s, r in runs.items()}, "seed": seed}
    metrics = final_metrics(run, args.shared, args.workdir / f"eval-seed{seed}", cache)
    print(json.dumps({k: {m: round(v, 4) for m, v in d.items() if "R@" in m or "top1" in m} for k, d in metrics.items()}, indent=1))
    if not args.no_install:
        install(run, rows, CONFIG, summary, metrics, ablation_rows, args.extra)
        print(f"installed into {DEST}")


if __name__ == "__main__":
    main()
