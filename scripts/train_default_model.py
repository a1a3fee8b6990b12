"""Train the packaged default search model with sonalign's own `train`, and write its model card.

Data (never the test splits, so the README can report test-split quality honestly):
* ../shared/data/nonverbal train+val: 16 vocalisation classes, caption "the sound of {label}";
* ../shared/data/asterisk train+val: telephone prompts, caption = the exact transcript.

    python scripts/train_default_model.py [--shared ../shared/data] [--workdir /tmp/sonalign-default]

Copies config.json + model.safetensors into src/sonalign/assets/default_model/ with MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "sonalign" / "assets" / "default_model"
CONFIG, EPOCHS, SEED, BATCH, LR = "clap-baseline", 40, 0, 32, 1e-3


def combined_manifest(shared: Path, out: Path, exclude: tuple[str, ...] = ()) -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from sonalign.train.prompts import render

    rows = []
    for line in ([] if "nonverbal" in exclude else (shared / "nonverbal" / "manifest.jsonl").open()):
        r = json.loads(line)
        if r["split"] in ("train", "val"):
            rows.append({"id": f"nonverbal/{r['id']}", "audio": str((shared / "nonverbal" / r["audio"]).resolve()), "split": r["split"], "captions": [render("sound", r["label"])]})
    for line in ([] if "asterisk" in exclude else (shared / "asterisk" / "manifest.jsonl").open()):
        r = json.loads(line)
        if r["split"] in ("train", "val"):
            rows.append({"id": f"asterisk/{r['id']}", "audio": str((shared / "asterisk" / r["audio"]).resolve()), "split": r["split"], "captions": [r["text"]]})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "default_train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sonalign-default"))
    parser.add_argument("--exclude", nargs="*", default=[], choices=["nonverbal", "asterisk"],
                        help="leave a set out, e.g. nonverbal (CC BY-NC-ND) for weights free of its non-commercial terms")
    args = parser.parse_args()
    manifest = combined_manifest(args.shared, args.workdir, tuple(args.exclude))
    run = args.workdir / "run"
    command = ["sonalign", "train", "--config", CONFIG, "--data", str(manifest), "--out", str(run),
               "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--lr", str(LR), "--seed", str(SEED), "--patience", "8"]
    print("$", " ".join(command), flush=True)
    subprocess.run([str(Path(sys.executable).parent / "sonalign"), *command[1:]], check=True)
    resolved = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    resolved["data"]["source"] = "nonverbal train+val (label captions) + asterisk train+val (transcripts); see MODEL_CARD.md"
    resolved["data"]["cache"] = None
    resolved["training"]["data"] = "default_train.jsonl"
    resolved["training"]["out"] = None
    resolved["training"]["cache"] = None
    DEST.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "model.safetensors", DEST / "model.safetensors")
    (DEST / "config.json").write_text(json.dumps(resolved, indent=2))
    n_train, n_val = resolved["data"]["n_train_clips"], resolved["data"]["n_val_clips"]
    card = f"""# sonalign default search model

A `{CONFIG}` alignment head (projection of frozen **aisfx-cnn** audio embeddings and frozen
**MiniLM-L6** sentence embeddings into one 256-d space, symmetric InfoNCE), made by sonalign's own
trainer on real recordings. Used by `sonalign index` / `search` / `serve` when no model is given.

* **Training data**: `../shared/data/nonverbal` train+val splits (human vocalisations, 16 classes;
  caption "the sound of {{label}}"; CC BY-NC-ND 4.0, non-commercial evaluation use) and
  `../shared/data/asterisk` train+val splits (telephone prompts; caption = exact transcript;
  CC BY-SA 3.0). {n_train} training clips, {n_val} validation clips. **No test-split clip was used.**
* **Command** ({date.today().isoformat()}): `python scripts/train_default_model.py`, which runs
  `{' '.join(command).replace(str(args.workdir), 'WORKDIR')}`.
* **Best epoch** {summary['best_epoch']} of {summary['epochs_run']}; validation primary metric (mean
  text-to-audio R@1/5/10 over the validation captions): {summary['best_val_primary']:.3f}.
* **Frozen encoders**: aisfx (Ma et al., ISMIR 2022; checkpoint CC BY 4.0) and all-MiniLM-L6-v2
  (Apache 2.0). Speech segments are additionally matched through their pocketsphinx transcripts
  (fused at search time; not part of this head).
* **Licence caveat**: part of the training data (nonverbal) is CC BY-NC-ND 4.0, published for
  non-commercial evaluation. Until a decision on derived weights is made, treat these weights as
  non-commercial; `python scripts/train_default_model.py --exclude nonverbal` retrains without it
  (sound-event quality then drops; telephone/speech prompts remain).
* **Limits**: trained on ~30 minutes of vocalisations and telephone prompts only; it knows little
  about music, nature or urban sounds. Train your own with `sonalign train` and pass `--model RUN`.
"""
    (DEST / "MODEL_CARD.md").write_text(card)
    print(f"wrote {DEST}")


if __name__ == "__main__":
    main()
