"""Search quality in numbers a user understands: index real sound clips, search their labels in words.

The collection is every clip of ../shared/data/sfx's `test` and `zeroshot` splits (never trained
on; the zeroshot labels are not even in the training data), indexed as files with
``sonalign index``. Each distinct label is one query in plain words ("cow mooing"), searched with
the best span per file (``--per-file``); a file is relevant when its clip has that label.

* hit@1: the first file is relevant; hit@5: one of the first five is; MRR: mean of 1 / rank of
  the first relevant file (0 beyond the first 50).

Both models run in the same process on the same collection: the packaged default model and, as
the reference, the one it replaced (read from git at ``--old REF``).

    python bench/search_quality.py [--old 5365861] [--transcripts]

Writes bench/results/search_quality.json (per split, per model, and every query's rank).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, require_shared, write_results  # noqa: E402

#: The last commit whose packaged default model was trained on nonverbal + asterisk only.
OLD_DEFAULT = "5365861"
DEPTH = 50


def old_model(ref: str, into: Path) -> Path:
    """The packaged default model as it was at git ``ref``, as a run folder."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:src/sonalign/assets/default_model/{name}"], check=True, capture_output=True).stdout
        (into / name).write_bytes(blob)
    return into


def collection(clips, into: Path) -> dict[str, str]:
    """Links named by clip id (no label in the name) -> {file name: label}."""
    into.mkdir(parents=True, exist_ok=True)
    labels = {}
    for c in clips:
        name = f"{c.id}{Path(c.audio).suffix}"
        (into / name).symlink_to(c.audio)
        labels[name] = c.label
    return labels


def score(model: str, folder: Path, idx: Path, labels: dict[str, str], queries: list[str], transcripts: bool) -> dict:
    from sonalign.index.build import build_index
    from sonalign.index.query import Searcher

    report = build_index(folder, idx, model=model, transcripts=transcripts, show_progress=False)
    searcher = Searcher.open(idx)
    ranks = {}
    for q in queries:
        hits = searcher.search(q, k=DEPTH, group_by_file=True)
        found = [n for n, h in enumerate(hits, 1) if labels.get(Path(h.path).name) == q]
        ranks[q] = found[0] if found else None
    return {"ranks": ranks, "index_seconds": round(report.wall_seconds, 1), "segments": report.segments}


def summary(ranks: dict[str, int | None]) -> dict[str, float]:
    values = list(ranks.values())
    return {
        "queries": len(values),
        "hit@1": round(sum(r == 1 for r in values) / len(values), 4),
        "hit@5": round(sum(r is not None and r <= 5 for r in values) / len(values), 4),
        "MRR": round(sum(1 / r for r in values if r) / len(values), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", default=OLD_DEFAULT, help="git ref of the previous packaged default model (the reference)")
    parser.add_argument("--transcripts", action="store_true", help="index with speech transcripts, as `sonalign index` does by default")
    args = parser.parse_args()

    from sonalign.data.readers import load_clips

    sfx = require_shared("sfx")
    clips = [c for c in load_clips(sfx / "manifest.jsonl") if c.split in ("test", "zeroshot")]
    splits = {split: sorted({c.label for c in clips if c.split == split}) for split in ("test", "zeroshot")}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sonalign-bench-") as tmp:
        tmp = Path(tmp)
        labels = collection(clips, tmp / "collection")
        models = {"previous default": str(old_model(args.old, tmp / "old")), "default": "default"}
        for name, model in models.items():
            run = score(model, tmp / "collection", tmp / f"idx-{len(results)}", labels, sorted(set(labels.values())), args.transcripts)
            results[name] = {"model": model if model == "default" else f"git {args.old}", **run,
                             "summary": {split: summary({q: run["ranks"][q] for q in queries}) for split, queries in splits.items()}}
            results[name]["summary"]["all"] = summary(run["ranks"])
    print(f"{len(clips)} files ({', '.join(f'{len(q)} {s} labels' for s, q in splits.items())}); one query per label, best span per file")
    print(f"{'model':<18} {'split':<9} {'hit@1':>6} {'hit@5':>6} {'MRR':>6}")
    for name, r in results.items():
        for split, s in r["summary"].items():
            print(f"{name:<18} {split:<9} {s['hit@1']:>6.3f} {s['hit@5']:>6.3f} {s['MRR']:>6.3f}")
    payload = {"collection": f"{sfx} test + zeroshot ({len(clips)} clips)", "query": "each label, in words", "per_file": True,
               "transcripts": args.transcripts, "depth": DEPTH, "models": results}
    print(f"wrote {write_results('search_quality', json.loads(json.dumps(payload)))}")


if __name__ == "__main__":
    main()
