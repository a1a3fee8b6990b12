"""Vector search benchmark: build time, single-query latency, batch throughput, HNSW recall@10.

    python bench/search.py                       # 10k, 100k and 1M vectors (1M: HNSW build takes minutes)
    python bench/search.py --quick               # 10k and 100k, fewer queries
    python bench/search.py --sizes 10000 100000 --ef 64 128 256 --data isotropic

For each size it builds the two kinds of ``sonalign.index.vectors.FaissIndex``: exact (IndexFlatIP)
and HNSW (M=32, efConstruction=80), over the same synthetic L2-normalised d=256 vectors, then measures

* single queries, one at a time (what the server does per request): p50/p99 latency in ms;
* a batch of queries in one call: queries/s;
* recall@10 of HNSW against the exact top-10, for each efSearch in ``--ef``.

Data (``--data``): ``structured`` (default) draws vectors from a 32-dimensional Gaussian subspace plus
isotropic noise (10 % of the norm) - real embeddings concentrate on a low-dimensional subspace like this -
with queries drawn independently from the same distribution. ``isotropic`` draws i.i.d. Gaussian
vectors: the worst case for any graph or cluster index, where all pairwise similarities are nearly
equal; shown for honesty, it needs a very large efSearch.

Writes ``bench/results/search.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sonalign.index.vectors import FaissIndex, normalize  # noqa: E402

HERE = Path(__file__).resolve().parent


def make_data(n: int, nq: int, dim: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        x = rng.standard_normal((n, dim), dtype=np.float32)
        q = rng.standard_normal((nq, dim), dtype=np.float32)
        return normalize(x), normalize(q)
    rank = 32
    basis = rng.standard_normal((rank, dim), dtype=np.float32)
    out = []
    for count in (n, nq):
        parts = []
        for start in range(0, count, 100_000):
            m = min(100_000, count - start)
            z = rng.standard_normal((m, rank), dtype=np.float32) @ basis
            z /= np.linalg.norm(z, axis=1, keepdims=True)
            noise = rng.standard_normal((m, dim), dtype=np.float32)
            noise *= 0.1 / np.linalg.norm(noise, axis=1, keepdims=True)
            parts.append(normalize(z + noise))
        out.append(np.concatenate(parts))
    return out[0], out[1]


def latency(index: FaissIndex, queries: np.ndarray, k: int) -> tuple[float, float]:
    index.search(queries[0], k)  # warm-up
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q, k)
        times.append(time.perf_counter() - t0)
    arr = np.array(times) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def batch_qps(index: FaissIndex, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    _, ids = index.search(queries, k)
    return queries.shape[0] / (time.perf_counter() - t0), ids


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth, strict=True)]))


def run_size(n: int, args: argparse.Namespace) -> dict:
    print(f"\n== {n:,} vectors x {args.dim} ({args.data}) ==", flush=True)
    t0 = time.perf_counter()
    x, q = make_data(n, args.queries, args.dim, args.data)
    print(f"data: {time.perf_counter() - t0:.1f} s", flush=True)
    ids = np.arange(n, dtype=np.int64)
    single = q[: args.single]
    flat_single = q[: max(20, min(args.single, int(args.single * 100_000 / n)))]  # exact is slow at 1M: fewer samples

    flat = FaissIndex(args.dim, hnsw_threshold=2**62)
    t0 = time.perf_counter()
    flat.add(ids, x)
    flat_build = time.perf_counter() - t0
    qps, truth = batch_qps(flat, q, args.k)
    p50, p99 = latency(flat, flat_single, args.k)
    res = {
        "n": n,
        "dim": args.dim,
        "data": args.data,
        "queries": int(q.shape[0]),
        "flat": {"build_s": round(flat_build, 3), "batch_qps": round(qps, 1), "single_p50_ms": round(p50, 3), "single_p99_ms": round(p99, 3), "single_samples": int(flat_single.shape[0])},
    }
    print(f"flat : build {flat_build:7.2f} s | single p50 {p50:7.3f} ms p99 {p99:7.3f} ms | batch {qps:9.1f} q/s", flush=True)
    del flat

    hnsw = FaissIndex(args.dim, hnsw_threshold=0)
    t0 = time.perf_counter()
    step = 100_000
    for start in range(0, n, step):  # add in chunks, to print progress on big builds
        hnsw.add(ids[start : start + step], x[start : start + step])
        if n > step:
            done = min(n, start + step)
            print(f"  hnsw build {done:,}/{n:,}  {time.perf_counter() - t0:7.1f} s", flush=True)
    hnsw_build = time.perf_counter() - t0
    sweep = []
    for ef in args.ef:
        hnsw.ef_search = ef
        qps, found = batch_qps(hnsw, q, args.k)
        p50, p99 = latency(hnsw, single, args.k)
        rec = recall_at(found, truth)
        sweep.append({"ef_search": ef, "recall_at_10": round(rec, 4), "batch_qps": round(qps, 1), "single_p50_ms": round(p50, 3), "single_p99_ms": round(p99, 3)})
        print(f"hnsw : ef {ef:4d} | recall@10 {rec:.4f} | single p50 {p50:7.3f} ms p99 {p99:7.3f} ms | batch {qps:9.1f} q/s", flush=True)
    res["hnsw"] = {"build_s": round(hnsw_build, 2), "M": hnsw.m, "ef_construction": hnsw.ef_construction, "sweep": sweep}
    ok = [s for s in sweep if s["recall_at_10"] >= 0.98]
    res["smallest_ef_for_recall_0.98"] = ok[0]["ef_search"] if ok else None
    print(f"hnsw : build {hnsw_build:7.2f} s", flush=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of vectors (default 10000 100000 1000000)")
    ap.add_argument("--quick", action="store_true", help="10k and 100k only, 300 batch queries, 100 single ones")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--data", choices=["structured", "isotropic"], default="structured")
    ap.add_argument("--queries", type=int, default=1000, help="batch size (and recall queries)")
    ap.add_argument("--single", type=int, default=300, help="single queries timed one by one")
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256], help="efSearch values to measure")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads for builds and batches (default: all cores)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "search.json")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.quick:
        args.queries, args.single = min(args.queries, 300), min(args.single, 100)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    machine = {
        "cpu_count": os.cpu_count(),
        "omp_threads": faiss.omp_get_max_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "load_avg_at_start": list(os.getloadavg()),
        "note": "single queries run on 1 OpenMP thread (FaissIndex does this for <= 4 queries); batches use all threads",
    }
    results = [run_size(n, args) for n in args.sizes]
    machine["load_avg_at_end"] = list(os.getloadavg())
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": "python " + " ".join(sys.argv), "machine": machine, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print("\n| vectors | index | build s | efSearch | recall@10 | single p50 ms | single p99 ms | batch q/s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        f = r["flat"]
        print(f"| {r['n']:,} | flat (exact) | {f['build_s']:.2f} | - | 1.0000 | {f['single_p50_ms']:.3f} | {f['single_p99_ms']:.3f} | {f['batch_qps']:.0f} |")
        for s in r["hnsw"]["sweep"]:
            print(
                f"| {r['n']:,} | hnsw M=32 | {r['hnsw']['build_s']:.1f} | {s['ef_search']} | {s['recall_at_10']:.4f} | "
                f"{s['single_p50_ms']:.3f} | {s['single_p99_ms']:.3f} | {s['batch_qps']:.0f} |"
            )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
