"""Milvus beside faiss: insert time, index build, single-query p50/p99 latency, recall@10 against exact search.

    python bench/search_milvus.py --milvus                    # starts a local Milvus standalone (PyPI milvus 2.3.5)
    python bench/search_milvus.py --milvus-uri http://host:19530
    python bench/search_milvus.py --milvus --sizes 100000 --dim 256 --data structured

Same synthetic data as ``bench/search.py`` (``make_data``: L2-normalised vectors, ``structured`` by
default). For each size it measures, on the same vectors and queries:

* faiss: ``FaissIndex`` exact (IndexFlatIP) and HNSW (M=32, efConstruction=80, efSearch 128) - build time,
  single-query p50/p99;
* Milvus through ``MilvusIndex`` (HNSW M=32, efConstruction=80, ef 128, inner product):
  - insert: ``add`` (upserts in 16 MB requests) + ``save`` (the tag) - the rows are searchable then;
  - index build: sealing the segments (Milvus ``flush``) and waiting until the HNSW index covers every row;
  - single queries one at a time (what the server does per request), p50/p99, for the default
    ``commit`` consistency (Customized with the last save's timestamp) and for ``Strong``;
  - a batch of queries in one call: queries/s;
  - recall@10 against the exact faiss top-10, before sealing (growing segments, Milvus' interim index)
    and after the HNSW build.

Writes ``bench/results/search_milvus.json`` (``--out``) and prints a table. The server runs on the same
2 cores as the client when started with ``--milvus``: latencies include gRPC on loopback.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "index"))

from search import make_data, recall_at  # noqa: E402  (bench/search.py: same data as the faiss benchmark)

from sonalign.index.vectors import FaissIndex  # noqa: E402


def timed_single(search, queries: np.ndarray, k: int) -> tuple[float, float]:
    search(queries[0], k)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search(q, k)
        times.append(time.perf_counter() - t0)
    arr = np.array(times) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def run_size(n: int, args: argparse.Namespace, uri: str) -> dict:
    from sonalign.index.milvus import MilvusIndex

    print(f"\n== {n:,} vectors x {args.dim} ({args.data}) ==", flush=True)
    x, q = make_data(n, args.queries, args.dim, args.data)
    ids = np.arange(n, dtype=np.int64)
    single = q[: args.single]
    res: dict = {"n": n, "dim": args.dim, "data": args.data, "queries": int(q.shape[0]), "single_samples": int(single.shape[0])}

    flat = FaissIndex(args.dim, hnsw_threshold=2**62)
    t0 = time.perf_counter()
    flat.add(ids, x)
    build = time.perf_counter() - t0
    _, truth = flat.search(q, args.k)
    p50, p99 = timed_single(flat.search, single[: max(20, args.single // 3)], args.k)
    res["faiss_flat"] = {"build_s": round(build, 3), "single_p50_ms": round(p50, 3), "single_p99_ms": round(p99, 3)}
    print(f"faiss flat : build {build:7.2f} s | p50 {p50:7.3f} ms p99 {p99:7.3f} ms", flush=True)
    del flat

    hnsw = FaissIndex(args.dim, hnsw_threshold=0, ef_search=args.ef)
    t0 = time.perf_counter()
    hnsw.add(ids, x)
    build = time.perf_counter() - t0
    _, found = hnsw.search(q, args.k)
    p50, p99 = timed_single(hnsw.search, single, args.k)
    res["faiss_hnsw"] = {"build_s": round(build, 2), "ef_search": args.ef, "recall_at_10": round(recall_at(found, truth), 4),
                         "single_p50_ms": round(p50, 3), "single_p99_ms": round(p99, 3)}
    print(f"faiss hnsw : build {build:7.2f} s | recall@10 {res['faiss_hnsw']['recall_at_10']:.4f} | p50 {p50:7.3f} ms p99 {p99:7.3f} ms", flush=True)
    del hnsw

    name = f"bench_{n}_{args.dim}"
    index = MilvusIndex(args.dim, uri=uri, collection=name, overwrite=True, ef_search=args.ef)
    t0 = time.perf_counter()
    index.add(ids, x)
    index.save(tag={"bench": n})
    insert = time.perf_counter() - t0
    print(f"milvus     : insert {insert:7.2f} s", flush=True)
    _, found = index.search(q, args.k)
    growing_recall = recall_at(found, truth)
    t0 = time.perf_counter()
    index.seal(wait=True, timeout=3600)
    build = time.perf_counter() - t0
    time.sleep(2)  # let the query node swap the growing segments for the indexed ones
    out = {"insert_s": round(insert, 2), "index_build_s": round(build, 2), "ef_search": args.ef, "M": index.m,
           "ef_construction": index.ef_construction, "recall_at_10_before_index": round(growing_recall, 4)}
    t0 = time.perf_counter()
    _, found = index.search(q, args.k)
    out["batch_qps"] = round(q.shape[0] / (time.perf_counter() - t0), 1)
    out["recall_at_10"] = round(recall_at(found, truth), 4)
    for level in ("commit", "Strong"):
        reader = MilvusIndex.load(name, uri=uri, consistency=level, ef_search=args.ef)
        samples = single if level == "commit" else single[: max(20, args.single // 5)]
        p50, p99 = timed_single(reader.search, samples, args.k)
        out[f"single_p50_ms_{level.lower()}"] = round(p50, 3)
        out[f"single_p99_ms_{level.lower()}"] = round(p99, 3)
        print(f"milvus     : {level:6s} reads | p50 {p50:7.3f} ms p99 {p99:7.3f} ms ({samples.shape[0]} queries)", flush=True)
    print(f"milvus     : index build {build:7.2f} s | recall@10 {out['recall_at_10']:.4f} (before index {growing_recall:.4f}) | batch {out['batch_qps']:.0f} q/s", flush=True)
    res["milvus"] = out
    if not args.keep:
        index.drop()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--milvus", action="store_true", help="start a local Milvus standalone server for the run (like the tests)")
    where.add_argument("--milvus-uri", help="use this Milvus server or cluster")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--data", choices=["structured", "isotropic"], default="structured")
    ap.add_argument("--queries", type=int, default=300, help="batch size and recall queries")
    ap.add_argument("--single", type=int, default=200, help="single queries timed one by one")
    ap.add_argument("--ef", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the benchmark collections")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "search_milvus.json")
    args = ap.parse_args(argv)
    server = None
    tmp = None
    if args.milvus:
        from milvus_server import MilvusServer

        tmp = tempfile.TemporaryDirectory(prefix="sonalign-milvus-bench-")
        t0 = time.perf_counter()
        server = MilvusServer(Path(tmp.name) / "data").start()
        print(f"started Milvus standalone at {server.uri} in {time.perf_counter() - t0:.1f} s", flush=True)
        uri = server.uri
    else:
        uri = args.milvus_uri
    try:
        import milvus as milvus_pkg  # noqa: F401 - version only
        from pymilvus import __version__ as pymilvus_version

        machine = {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pymilvus": pymilvus_version,
            "milvus_server": getattr(sys.modules.get("milvus"), "__version__", None) if args.milvus else "remote",
            "server": "local standalone on the same machine" if args.milvus else uri,
            "load_avg_at_start": list(os.getloadavg()),
        }
        results = [run_size(n, args, uri) for n in args.sizes]
        machine["load_avg_at_end"] = list(os.getloadavg())
    finally:
        if server is not None:
            server.stop(grace=3)
        if tmp is not None:
            tmp.cleanup()
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": "python " + " ".join(sys.argv), "machine": machine, "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print("\n| vectors | engine | insert s | index build s | recall@10 | single p50 ms | single p99 ms |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        f, h, m = r["faiss_flat"], r["faiss_hnsw"], r["milvus"]
        print(f"| {r['n']:,} | faiss flat (exact) | - | {f['build_s']:.2f} | 1.0000 | {f['single_p50_ms']:.3f} | {f['single_p99_ms']:.3f} |")
        print(f"| {r['n']:,} | faiss HNSW ef {h['ef_search']} | - | {h['build_s']:.1f} | {h['recall_at_10']:.4f} | {h['single_p50_ms']:.3f} | {h['single_p99_ms']:.3f} |")
        print(f"| {r['n']:,} | Milvus HNSW ef {m['ef_search']}, commit reads | {m['insert_s']:.1f} | {m['index_build_s']:.1f} | {m['recall_at_10']:.4f} | "
              f"{m['single_p50_ms_commit']:.3f} | {m['single_p99_ms_commit']:.3f} |")
        print(f"| {r['n']:,} | Milvus HNSW ef {m['ef_search']}, Strong reads | | | | {m['single_p50_ms_strong']:.3f} | {m['single_p99_ms_strong']:.3f} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
