"""How cost grows: indexing time and peak memory against collection size, query latency against
index size, training step time against batch size. Writes bench/results/scaling.json,
docs/scaling.png and the figures section of docs/performance.md.

* indexing: a base collection of real files from ../shared/data (every clip of ``--sets``, by
  default all four labelled sets, or ``--base-minutes`` of audio taken in manifest order), copied
  1x, 2x, 4x, 8x under new names, indexed from scratch
  with the default model, each size in its own process (so peak RSS is its own);
* query latency: the faiss index on synthetic normalised 256-d vectors at 10k..1M (exact below the
  HNSW threshold, HNSW above), p50/p99 of single queries;
* training: one optimizer step of each model on synthetic batches of 8..256 pairs (cached-feature
  shapes: 512-d audio, 384-d text, 12 segments, 60 frames, 20 tokens).

    python bench/scaling.py [--sets ...] [--base-minutes M] [--factors 1 2 4 8] [--skip-index] [--no-transcripts]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, peak_rss_mib, require_shared, write_results  # noqa: E402


def make_collection(sets: list[str], minutes: float | None, factor: int, out: Path) -> float:
    """``factor`` renamed copies of the sets' clips (all of them, or the first ``minutes`` of audio)."""
    from sonalign.data.readers import load_clips

    total, chosen = 0.0, []
    for s in sets:
        for clip in load_clips(require_shared(s) / "manifest.jsonl"):
            if minutes is not None and total >= minutes * 60 * (sets.index(s) + 1) / len(sets):
                break
            chosen.append(Path(clip.audio))
            total += clip.duration or 0.0
    for copy in range(factor):
        for f in chosen:
            target = out / f"copy{copy}" / f.parent.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)  # a renamed copy: same audio, new path (content hash dedups nothing)
    return total * factor


def index_part(folder: str, transcripts: bool = True) -> dict:
    from sonalign.index.build import build_index
    from sonalign.index.embedders import get_embedder

    get_embedder("default")  # model loading is a one-off per process, not part of the per-size cost
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        report = build_index(folder, Path(tmp) / "idx", show_progress=False, transcripts=transcripts)
        wall = time.perf_counter() - started
    return {"files": report.files, "segments": report.segments, "audio_seconds": round(report.audio_seconds, 1), "wall_seconds": round(wall, 2),
            "x_realtime": round(report.audio_seconds / wall, 2), "peak_rss_mib": round(peak_rss_mib(), 1),
            "worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def query_latency(sizes: list[int], dim: int = 256, queries: int = 200) -> list[dict]:
    import numpy as np

    from sonalign.index.vectors import FaissIndex, normalize

    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        x = normalize(rng.standard_normal((n, dim)).astype(np.float32))
        index = FaissIndex(dim)
        started = time.perf_counter()
        index.add(np.arange(n, dtype=np.int64), x)
        build = time.perf_counter() - started
        q = normalize(rng.standard_normal((queries, dim)).astype(np.float32))
        times = []
        for i in range(queries):
            t = time.perf_counter()
            index.search(q[i : i + 1], 10)
            times.append((time.perf_counter() - t) * 1000)
        rows.append({"vectors": n, "kind": index.kind, "build_seconds": round(build, 2), "p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)})
        print("query", rows[-1], flush=True)
    return rows


def train_steps(batch_sizes: list[int], configs: list[str]) -> list[dict]:
    import torch

    from sonalign.models.factory import create_model

    rows = []
    g = torch.Generator().manual_seed(0)
    for name in configs:
        model = create_model(name)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for b in batch_sizes:
            batch = {
                "audio_embedding": torch.randn(b, 512, generator=g), "audio_segments": torch.randn(b, 12, 512, generator=g),
                "audio_segments_mask": torch.ones(b, 12, dtype=torch.bool), "audio_frames": torch.randn(b, 60, 512, generator=g),
                "audio_frames_mask": torch.ones(b, 60, dtype=torch.bool), "text_embedding": torch.randn(b, 384, generator=g),
                "text_tokens": torch.randn(b, 20, 384, generator=g), "text_tokens_mask": torch.ones(b, 20, dtype=torch.bool),
                "text_segments": torch.randn(b, 2, 384, generator=g), "text_segments_mask": torch.ones(b, 2, dtype=torch.bool),
                "audio_mel": torch.randn(b, 300, 64, generator=g), "audio_mel_mask": torch.ones(b, 300, dtype=torch.bool),
                "labels": torch.randint(0, 7, (b,), generator=g),
            }
            times = []
            for step in range(4):
                t = time.perf_counter()
                out = model(batch)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                if step:  # the first step warms up allocators and kernels
                    times.append(time.perf_counter() - t)
            rows.append({"config": name, "batch_size": b, "step_ms": round(1000 * sum(times) / len(times), 1)})
            print("train", rows[-1], flush=True)
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    if results.get("index"):
        xs = [r["audio_seconds"] / 60 for r in results["index"]]
        axes[0].plot(xs, [r["wall_seconds"] for r in results["index"]], "o-", label="wall s")
        ax2 = axes[0].twinx()
        ax2.plot(xs, [r["peak_rss_mib"] for r in results["index"]], "s--", color="tab:red", label="peak RSS MiB")
        axes[0].set_xlabel("minutes of audio indexed")
        axes[0].set_ylabel("wall seconds")
        ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
        axes[0].set_title("indexing")
    q = results.get("query", [])
    if q:
        axes[1].loglog([r["vectors"] for r in q], [r["p50_ms"] for r in q], "o-", label="p50")
        axes[1].loglog([r["vectors"] for r in q], [r["p99_ms"] for r in q], "s--", label="p99")
        axes[1].set_xlabel("vectors in index")
        axes[1].set_ylabel("ms per query")
        axes[1].legend()
        axes[1].set_title("query latency (faiss)")
    for name in sorted({r["config"] for r in results.get("train", [])}):
        rows = [r for r in results["train"] if r["config"] == name]
        axes[2].loglog([r["batch_size"] for r in rows], [r["step_ms"] for r in rows], "o-", label=name)
    axes[2].set_xlabel("batch size")
    axes[2].set_ylabel("ms per training step")
    axes[2].legend(fontsize=7)
    axes[2].set_title("training step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["asterisk", "nonverbal", "fsdd", "emodb"])
    parser.add_argument("--base-minutes", type=float, default=None, help="audio per 1x (default: every clip of --sets, i.e. 1x = ../shared/data)")
    parser.add_argument("--factors", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 32, 128, 256])
    parser.add_argument("--configs", nargs="+", default=["clap-baseline", "hilbert", "robust-atr", "hade", "mga-clap", "calm"])
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--no-transcripts", action="store_true", help="index without the pocketsphinx cascade")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(index_part(args.part, not args.no_transcripts)))
        return
    results: dict = {"command": "python " + " ".join(sys.argv), "base_minutes": args.base_minutes, "sets": args.sets, "transcripts": not args.no_transcripts}
    if not args.skip_index:
        results["index"] = []
        for factor in args.factors:
            with tempfile.TemporaryDirectory(prefix="sonalign-scale-") as tmp:
                seconds = make_collection(args.sets, args.base_minutes, factor, Path(tmp))
                cmd = [sys.executable, __file__, "--part", tmp] + (["--no-transcripts"] if args.no_transcripts else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(done.stderr[-3000:])
                row = {"factor": factor, "collection_seconds": round(seconds, 1), **json.loads(done.stdout.strip().splitlines()[-1])}
                results["index"].append(row)
                print("index", row, flush=True)
    results["query"] = query_latency(args.sizes)
    results["train"] = train_steps(args.batch_sizes, args.configs)
    png = ROOT / "docs" / "scaling.png"
    plot(results, png)
    path = write_results("scaling", {**results, "plot": str(png.relative_to(ROOT))})
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
