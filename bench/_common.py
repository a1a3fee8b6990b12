"""Shared bits of the benchmarks: where the real data is, peak RSS, writing results."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SONALIGN_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


def require_shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        sys.exit(f"{path} not found: benchmarks need ../shared/data (set SONALIGN_SHARED_DATA)")
    return path


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "load_avg": list(os.getloadavg()), "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def write_results(name: str, payload: dict) -> Path:
    from sonalign.utils.atomic import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), **payload}
    path = RESULTS / f"{name}.json"
    atomic_write_text(path, json.dumps(payload, indent=2))
    return path
