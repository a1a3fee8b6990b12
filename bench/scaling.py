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
  shapes: 512-d audio, 384-d text, 12 segments, 60 frames, 20 tokens);
* commit cost (``--commit-only`` runs just this, in a few minutes, and adds it to the existing results
  under ``commit``): the real ``IndexStore`` with synthetic vectors (256-d, plus 384-d transcript
  vectors for a share of the segments), growing to 1x..8x the real collection's files and segments
  (the 1x counts recorded by the indexing part) by batches of 20 files with a commit after each.
  Seconds and bytes written to vector files per file, with the default snapshot policy over a window
  that holds one snapshot of each vector file (so their cost is amortised honestly), and with
  ``snapshot_ratio=0`` (every commit rewrites the changed files, the old behaviour) as the same-run
  reference, measured at the window's start (where it is cheapest). Fastest of ``--repeats`` runs.

    python bench/scaling.py [--sets ...] [--base-minutes M] [--factors 1 2 4 8] [--skip-index] [--no-transcripts]
    python bench/scaling.py --commit-only [--factors 1 2 4 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine, peak_rss_mib, require_shared, write_results  # noqa: E402

COMMIT_BATCH = 20  # files per commit, as build.COMMIT_EVERY_FILES


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


# ---------------------------------------------------------------------- commit cost
class SyntheticFiles:
    """Deterministic fake files: ``1 + Poisson(segments_per_file - 1)`` segments of random 256-d vectors,
    a ``transcript_share`` of them (evenly spread) with a 384-d transcript vector too."""

    def __init__(self, segments_per_file: float, transcript_share: float, *, first: int = 0, seed: int = 0, dim: int = 256, transcript_dim: int = 384):
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.extra_segments = max(0.0, segments_per_file - 1)
        self.share, self.dim, self.tdim = transcript_share, dim, transcript_dim
        self.made = first  # files are numbered from here: new names, never replacing a stored file
        self.segments = 0

    def next(self) -> tuple:
        import numpy as np

        from sonalign.index.store import RecordingInfo
        from sonalign.segments import Segment

        i, self.made = self.made, self.made + 1
        n = 1 + int(self.rng.poisson(self.extra_segments))
        rid = f"file{i:07d}"
        segments = [Segment(f"{rid}-{j}", rid, float(j), 1.0) for j in range(n)]
        transcripts = self.rng.standard_normal((n, self.tdim)).astype(np.float32)
        k = np.arange(self.segments, self.segments + n)
        transcripts[np.floor((k + 1) * self.share) == np.floor(k * self.share)] = np.nan  # no transcript vector for these
        self.segments += n
        info = RecordingInfo(path=f"/synthetic/{rid}.wav", content_hash=rid, duration=float(n), sample_rate=16000, id=rid)
        return info, segments, self.rng.standard_normal((n, self.dim)).astype(np.float32), {"transcript": transcripts}


@contextlib.contextmanager
def counting_vector_writes():
    """Yields ``[bytes, files]`` written to vector files while inside."""
    from sonalign.index.vectors import FaissIndex

    written = [0, 0]
    real_save = FaissIndex.save

    def save(self, path, tag=None):
        real_save(self, path, tag)
        written[0] += Path(path).stat().st_size
        written[1] += 1

    FaissIndex.save = save
    try:
        yield written
    finally:
        FaissIndex.save = real_save


def fill(idx: Path, files: SyntheticFiles, until: int) -> None:
    """Add files to the store at ``idx`` until it holds ``until`` of them (large commits, not measured)."""
    from sonalign.index.store import IndexStore

    with IndexStore.open(idx, create=True, model="synthetic") as store:
        while files.made < until:
            info, segments, vectors, extras = files.next()
            store.upsert_recording(info, segments, vectors, extra_vectors=extras)
            if files.made % 5000 == 0:
                store.commit()


def measure_batches(idx: Path, files: SyntheticFiles, snapshot_ratio: float, batches: int = 1, until_writes: int = 0) -> dict:
    """Index batches of :data:`COMMIT_BATCH` files, a commit after each, at least ``batches`` of them and
    until ``until_writes`` vector files have been written; per-file costs."""
    from sonalign.index.store import IndexStore

    store = IndexStore.open(idx, snapshot_ratio=snapshot_ratio)
    upsert_s = commit_s = 0.0
    done = 0
    with counting_vector_writes() as written:
        while done < batches or written[1] < until_writes:
            done += 1
            batch = [files.next() for _ in range(COMMIT_BATCH)]  # made before the clock starts
            t = time.perf_counter()
            for info, segments, vectors, extras in batch:
                store.upsert_recording(info, segments, vectors, extra_vectors=extras)
            t2 = time.perf_counter()
            store.commit()
            upsert_s, commit_s = upsert_s + t2 - t, commit_s + time.perf_counter() - t2
        bytes_written, writes = written
    store.close()  # its snapshot, once per writing session, is not counted
    n = done * COMMIT_BATCH
    return {"batches": done, "measured_files": n, "seconds_per_file": round((upsert_s + commit_s) / n, 7), "commit_seconds_per_file": round(commit_s / n, 7),
            "vector_bytes_per_file": round(bytes_written / n), "vector_file_writes": writes}


def commit_cost(factors: list[int], base_files: int, base_segments: int, transcript_share: float, reference_batches: int, repeats: int) -> dict:
    """Per-file cost of indexing into a store growing to ``factor`` x the base collection, both snapshot
    policies. Each size and policy is measured ``repeats`` times from the same state, the sizes taking
    turns (so a busy spell on the shared machine does not land on one size); the fastest run is kept."""
    import statistics

    from sonalign.index.store import SNAPSHOT_RATIO, IndexStore

    per_file = base_segments / base_files
    files = SyntheticFiles(per_file, transcript_share)
    kinds = 1 + (transcript_share > 0)  # vector files: main, transcript
    policies = {"snapshots": (SNAPSHOT_RATIO, {"until_writes": kinds}), "every_commit": (0.0, {"batches": reference_batches})}
    with tempfile.TemporaryDirectory(prefix="sonalign-commit-") as tmp:
        idx, run = Path(tmp) / "idx", Path(tmp) / "run"
        starts = {}
        for factor in sorted(factors):
            # The default policy rewrites a file once its changes pass SNAPSHOT_RATIO of it. Each store is
            # filled to 1/(1 + ratio) of its size (its files just written) and measured while it grows to
            # the size, until each vector file has been rewritten once: one snapshot period, so the
            # snapshots' cost is in the mean, once.
            fill(idx, files, round(factor * base_files / (1 + SNAPSHOT_RATIO)))
            shutil.copytree(idx, Path(tmp) / f"{factor}x")
            with IndexStore.open(idx, readonly=True) as store:
                starts[factor] = {"files": store.stats()["counts"]["recordings"], "segments": store.index().ntotal, "transcript_vectors": store.index("transcript").ntotal}
        runs: dict[tuple[int, str], list[dict]] = {(f, p): [] for f in factors for p in policies}
        for seed in range(repeats):
            for factor in sorted(factors):
                for policy, (ratio, stop) in policies.items():
                    shutil.copytree(Path(tmp) / f"{factor}x", run)
                    runs[factor, policy].append(measure_batches(run, SyntheticFiles(per_file, transcript_share, first=files.made, seed=seed), ratio, **stop))
                    shutil.rmtree(run)
    rows = []
    for (factor, policy), results in sorted(runs.items()):
        seconds = [r["seconds_per_file"] for r in results]
        rows.append({"factor": factor, "policy": policy, "start": starts[factor], **min(results, key=lambda r: r["seconds_per_file"]),
                     "median_seconds_per_file": round(statistics.median(seconds), 7), "seconds_per_file_runs": seconds})
        print("commit", rows[-1], flush=True)
    by = {(r["policy"], r["factor"]): r for r in rows}
    low, high = min(factors), max(factors)
    ratios = {}
    for policy in policies:
        for metric in ("seconds_per_file", "median_seconds_per_file", "commit_seconds_per_file", "vector_bytes_per_file"):
            ratios[f"{policy}_{metric}_{high}x_over_{low}x"] = round(by[policy, high][metric] / max(by[policy, low][metric], 1e-12), 3)
    for factor in sorted(factors):
        ratios[f"seconds_per_file_snapshots_over_every_commit_{factor}x"] = round(by["snapshots", factor]["seconds_per_file"] / by["every_commit", factor]["seconds_per_file"], 3)
    print("commit ratios", ratios, flush=True)
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "base_files": base_files, "base_segments": base_segments,
            "segments_per_file": round(per_file, 3), "transcript_share": transcript_share, "batch_files": COMMIT_BATCH, "snapshot_ratio": SNAPSHOT_RATIO,
            "repeats": repeats, "rows": rows, "ratios": ratios}


def base_counts(args: argparse.Namespace, results: dict) -> tuple[int, int]:
    """Files and segments of the real collection at 1x: given, or as the indexing part recorded them
    (in this run, else in bench/results/scaling.json)."""
    if args.base_files and args.base_segments:
        return args.base_files, args.base_segments
    path = RESULTS / "scaling.json"
    rows = results.get("index") or (json.loads(path.read_text()).get("index") if path.exists() else None) or []
    one = next((r for r in rows if r["factor"] == 1), None)
    if one is None:
        sys.exit(f"{path}: no indexing result at 1x to size the commit benchmark; pass --base-files and --base-segments")
    return int(one["files"]), int(one["segments"])


def merge_results(name: str, key: str, value: dict) -> Path:
    """Put ``value`` under ``key`` in bench/results/NAME.json, keeping every other key as it was."""
    from sonalign.utils.atomic import atomic_write_text

    path = RESULTS / f"{name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"benchmark": name}
    results[key] = value
    atomic_write_text(path, json.dumps(results, indent=2))
    return path


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
    parser.add_argument("--commit-only", action="store_true", help="only the commit-cost part, added to the existing results")
    parser.add_argument("--base-files", type=int, help="files at 1x for the commit part (default: the indexing part's, from the results)")
    parser.add_argument("--base-segments", type=int, help="segments at 1x for the commit part (default: as --base-files)")
    parser.add_argument("--transcript-share", type=float, default=1 / 3, help="share of segments with a transcript vector (commit part)")
    parser.add_argument("--reference-batches", type=int, default=10, help="batches measured when every commit rewrites the files")
    parser.add_argument("--repeats", type=int, default=5, help="commit part: runs per size and policy (the fastest is kept)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(index_part(args.part, not args.no_transcripts)))
        return
    if args.commit_only:
        commit = commit_cost(args.factors, *base_counts(args, {}), args.transcript_share, args.reference_batches, args.repeats)
        commit["command"] = "python " + " ".join(sys.argv)
        print(f"wrote {merge_results('scaling', 'commit', commit)}")
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
    results["commit"] = commit_cost(args.factors, *base_counts(args, results), args.transcript_share, args.reference_batches, args.repeats)
    results["query"] = query_latency(args.sizes)
    results["train"] = train_steps(args.batch_sizes, args.configs)
    png = ROOT / "docs" / "scaling.png"
    plot(results, png)
    path = write_results("scaling", {**results, "plot": str(png.relative_to(ROOT))})
    print(f"wrote {path} and {png}")


if __name__ == "__main__":
    main()
