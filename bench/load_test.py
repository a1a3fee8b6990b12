"""Load test of the HTTP server: N concurrent clients for a bounded time; fails on any failed request.

    python bench/load_test.py                    # 20 clients, 30 s
    python bench/load_test.py --clients 50 --seconds 10

It builds a small index in a temporary folder (tiny generated WAV files, deterministic fake vectors,
a hashing "text encoder" so the numbers measure the server, the store and faiss, not a model), starts
``sonalign.serve.app.run_server`` on a free loopback port in a subprocess, and runs the clients
(threads, one ``httpx.Client`` each) against a mix of requests:

* 70 % ``GET /search?q=...`` (random query from a list, k=10; every 5th one grouped by file)
* 15 % ``GET /recordings/{id}/timeline?q=...``
* 15 % ``GET /segments/{id}/audio`` (a WAV span read from disk)

Reports requests/s and p50/p99 latency overall and per endpoint, writes ``bench/results/load.json``
(``--out``) and exits 1 if any request failed (an exception or a status other than 200).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MAX_SECONDS = 600
MAX_CLIENTS = 200
DIM = 64
SR = 8000
QUERIES = [
    "dog barking", "rain on a tin roof", "a man speaking", "church bells", "traffic at night", "birdsong in the morning",
    "door slams", "applause", "engine idling", "children playing", "wind through trees", "a phone ringing",
    "footsteps on gravel", "thunder", "a crowd cheering", "water dripping",
]  # fmt: skip


def fake_text(texts: list[str]) -> np.ndarray:
    out = []
    for t in texts:
        seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
        out.append(np.random.default_rng(seed).standard_normal(DIM).astype(np.float32))
    return np.stack(out)


def fake_searcher(store):
    from sonalign.index.query import Searcher

    return Searcher(store, fake_text)


def build_index(root: Path, recordings: int, seconds: int) -> Path:
    import soundfile as sf

    from sonalign.index.store import IndexStore, RecordingInfo
    from sonalign.segments import Segment

    rng = np.random.default_rng(0)
    idx = root / "idx"
    with IndexStore.open(idx, create=True, model="load-test-fake") as store:
        for r in range(recordings):
            path = root / "audio" / f"rec{r:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            t = np.arange(seconds * SR) / SR
            sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 37 * r) * t)).astype(np.float32), SR)
            rid = f"rec{r:03d}"
            n = seconds - 1  # 2 s windows every second
            segs = [Segment(f"{rid}-{i:05d}", rid, float(i), 2.0) for i in range(n)]
            store.upsert_recording(RecordingInfo(str(path), f"h{r}", float(seconds), SR, id=rid), segs, rng.standard_normal((n, DIM)).astype(np.float32))
    return idx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_child(idx: str, port: int) -> None:
    from sonalign.serve.app import run_server

    run_server(idx, host="127.0.0.1", port=port, searcher=fake_searcher, log_level="warning")


def client_loop(base: str, deadline: float, seed: int, recordings: int, seconds: int, out: list, lock: threading.Lock) -> None:
    import httpx

    rng = random.Random(seed)
    local = []
    with httpx.Client(base_url=base, timeout=30.0) as client:
        while time.perf_counter() < deadline:
            roll = rng.random()
            rec = f"rec{rng.randrange(recordings):03d}"
            q = rng.choice(QUERIES)
            if roll < 0.70:
                kind = "search"
                params = {"q": q, "k": 10}
                if rng.random() < 0.2:
                    params["group"] = "file"
                req = ("/search", params)
            elif roll < 0.85:
                kind = "timeline"
                req = (f"/recordings/{rec}/timeline", {"q": q})
            else:
                kind = "audio"
                req = (f"/segments/{rec}-{rng.randrange(seconds - 1):05d}/audio", None)
            t0 = time.perf_counter()
            try:
                r = client.get(req[0], params=req[1])
                ok = r.status_code == 200 and len(r.content) > 0
                err = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
            except Exception as exc:  # noqa: BLE001 - every failure counts
                ok, err = False, f"{type(exc).__name__}: {exc}"
            local.append((kind, time.perf_counter() - t0, ok, err))
    with lock:
        out.extend(local)


def summarize(samples: list) -> dict:
    lat = np.array([s[1] for s in samples]) * 1000 if samples else np.zeros(1)
    return {
        "requests": len(samples),
        "failed": sum(1 for s in samples if not s[2]),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0, help=f"test duration (at most {MAX_SECONDS})")
    ap.add_argument("--recordings", type=int, default=20)
    ap.add_argument("--recording-seconds", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    ap.add_argument("--serve", nargs=2, metavar=("IDX", "PORT"), help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.serve:
        serve_child(args.serve[0], int(args.serve[1]))
        return 0
    if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.clients <= MAX_CLIENTS:
        ap.error(f"--seconds must be in (0, {MAX_SECONDS}] and --clients in (0, {MAX_CLIENTS}]")

    import httpx

    with tempfile.TemporaryDirectory(prefix="sonalign-load-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        idx = build_index(root, args.recordings, args.recording_seconds)
        print(f"index: {args.recordings} recordings, {args.recordings * (args.recording_seconds - 1)} segments ({time.perf_counter() - t0:.1f} s)")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(root / "server.log", "w+")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(idx), str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    print("server did not start:\n" + log.read()[-3000:], file=sys.stderr)
                    return 2
                time.sleep(0.1)
            httpx.get(base + "/search", params={"q": "warm up"}, timeout=30)  # builds the searcher
            print(f"server up on {base}; {args.clients} clients for {args.seconds:g} s ...", flush=True)
            samples: list = []
            lock = threading.Lock()
            start = time.perf_counter()
            end = start + args.seconds
            threads = [
                threading.Thread(target=client_loop, args=(base, end, i, args.recordings, args.recording_seconds, samples, lock)) for i in range(args.clients)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    overall = summarize(samples)
    overall["requests_per_s"] = round(len(samples) / elapsed, 1)
    per = {kind: summarize([s for s in samples if s[0] == kind]) for kind in ("search", "timeline", "audio")}
    errors = sorted({s[3] for s in samples if not s[2]})[:10]
    report = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load_avg": list(os.getloadavg())},
        "config": {"clients": args.clients, "seconds": args.seconds, "recordings": args.recordings, "recording_seconds": args.recording_seconds, "dim": DIM},
        "elapsed_s": round(elapsed, 2),
        "overall": overall,
        "per_endpoint": per,
        "errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'endpoint':<10} {'requests':>9} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for kind, s in [("all", overall), *per.items()]:
        print(f"{kind:<10} {s['requests']:>9} {s['failed']:>7} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f}")
    print(f"\n{overall['requests_per_s']} requests/s over {elapsed:.1f} s; wrote {args.out}")
    if overall["failed"]:
        print("FAILED requests, e.g.:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
