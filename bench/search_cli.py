"""How long one ``sonalign search`` call takes, start to finish, on a small index.

A user's search is a whole process: Python, imports, opening the index, loading the text side of
the model, embedding the query, searching, printing. The reference, measured in the same run and
alternating with it, is ``python -c "import torch"`` (the floor any torch-based command pays).
The index is the bundled sample with transcripts (speech segments fuse a second, transcript score).

    python bench/search_cli.py [--runs 7] [--query "goodbye"]

Writes bench/results/search_cli.json (median, min and max wall seconds of both, and their ratio).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_results  # noqa: E402


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--query", default="goodbye")
    args = parser.parse_args()
    exe = str(Path(sys.executable).with_name("sonalign"))
    with tempfile.TemporaryDirectory(prefix="sonalign-bench-") as tmp:
        idx = Path(tmp) / "idx"
        subprocess.run([exe, "index", str(ROOT / "src" / "sonalign" / "assets" / "sample"), "--out", str(idx)], check=True, stderr=subprocess.DEVNULL)
        search = [exe, "search", str(idx), args.query, "-k", "10"]
        floor = [sys.executable, "-c", "import torch"]
        wall(search), wall(floor)  # warm the page cache
        times: dict[str, list[float]] = {"search": [], "import_torch": []}
        for _ in range(args.runs):
            times["search"].append(wall(search))
            times["import_torch"].append(wall(floor))
    summary = {name: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3), "max_s": round(max(v), 3)} for name, v in times.items()}
    ratios = [s / f for s, f in zip(times["search"], times["import_torch"])]
    result = {"index": "bundled sample (2 recordings, with transcripts)", "query": args.query, "runs": args.runs, **summary,
              "ratio_search_to_import_torch": {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2), "max": round(max(ratios), 2)}}
    print(f"sonalign search: median {summary['search']['median_s']:.2f} s (min {summary['search']['min_s']:.2f}, max {summary['search']['max_s']:.2f})")
    print(f"import torch:    median {summary['import_torch']['median_s']:.2f} s; search / import torch = {result['ratio_search_to_import_torch']['median']:.2f}x")
    print(f"wrote {write_results('search_cli', result)}")


if __name__ == "__main__":
    main()
