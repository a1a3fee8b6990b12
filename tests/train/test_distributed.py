"""Data parallelism: a 2-process gloo step equals a 1-process step on the same global batch.

Two spawned processes (gloo on 127.0.0.1, a free port) run every case of one task: single
training steps of clap-baseline (equal and unequal shards) and HILBERT (dropout off), then a short
DDP training run that is killed after one epoch and resumed. The parent computes the same on one
process and compares losses and gradients to 1e-5; the training run is compared with the same
settings trained by one process.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sonalign import distributed

WORLD = 2
FEATURES = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
CLAP = {"audio_dim": 16, "text_dim": 16, "embed_dim": 32, "dropout": 0.0}
HILBERT = {"audio_dim": 16, "text_dim": 16, "embed_dim": 32, "dropout": 0.0, "segment_heads": 4, "pool_heads": 2, "pool_hidden": 16,
           "cross_heads": 4, "use_cka": False, "use_info_balance": False, "direct_weight": 0.5}


def _rows(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"audio_segments": rng.standard_normal((int(rng.integers(1, 6)), 16)).astype(np.float32),
             "text_embedding": rng.standard_normal(16).astype(np.float32),
             "text_segments": rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32)} for _ in range(n)]


STEPS = {
    "clap": {"config": "clap-baseline", "overrides": CLAP, "rows": _rows(8, 1)},
    "clap-unequal": {"config": "clap-baseline", "overrides": CLAP, "rows": _rows(7, 2)},  # shards of 4 and 3 rows
    "hilbert": {"config": "hilbert", "overrides": HILBERT, "rows": _rows(8, 3)},
}


def _tone_manifest(root: Path) -> Path:
    import soundfile as sf

    rows = []
    rng = np.random.default_rng(1)
    for i in range(24):
        k = i % 4
        t = np.arange(8000) / 8000
        wave = 0.3 * np.sin(2 * np.pi * (200 + 400 * k) * t) + 0.02 * rng.standard_normal(t.size)
        (root / "a").mkdir(parents=True, exist_ok=True)
        sf.write(root / "a" / f"{i}.wav", wave.astype(np.float32), 8000)
        rows.append({"id": f"c{i}", "audio": f"a/{i}.wav", "split": "val" if i >= 20 else "train", "captions": [f"a {WORDS[k]} tone"]})
    path = root / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train_settings(manifest: Path, out: Path) -> dict:
    return dict(config="clap-baseline", data=str(manifest), out=str(out), epochs=2, batch_size=4, lr=3e-3, seed=0, patience=10,
                features=FEATURES, model_overrides={"dropout": 0.0})


def _spawn(task: dict, tmp: Path, timeout: float = 120.0) -> list[dict]:
    import torch.multiprocessing as mp

    import ddp_worker

    task_file = tmp / "task.pkl"
    task_file.write_bytes(pickle.dumps(task))
    ctx = mp.start_processes(ddp_worker.run, args=(WORLD, distributed.free_port(), str(task_file), str(tmp)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"distributed workers did not finish in {timeout:.0f} s")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run every 2-process case once (process start-up dominates the time)."""
    here = Path(__file__).resolve().parent
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(here))
    tmp = tmp_path_factory.mktemp("ddp")
    manifest = _tone_manifest(tmp / "data")
    try:
        task = {"steps": STEPS, "train": _train_settings(manifest, tmp / "run-ddp"), "reference": _train_settings(manifest, tmp / "run-1")}
        results = _spawn(task, tmp)
    finally:
        mp.undo()
    return {"results": results, "manifest": manifest, "tmp": tmp}


def _one_process_step(case: dict) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import ddp_worker
    finally:
        sys.path.pop(0)
    return ddp_worker.step(case)


@pytest.mark.parametrize("name", list(STEPS))
def test_two_process_step_equals_one_process_step(two_ranks, name):
    ranks = [r["steps"][name] for r in two_ranks["results"]]
    assert all(r["world"] == WORLD for r in two_ranks["results"])
    # each rank took a disjoint, contiguous shard; together the whole global batch
    assert sorted(sum((r["rows"] for r in ranks), [])) == list(range(len(STEPS[name]["rows"])))
    assert set(ranks[0]["rows"]).isdisjoint(ranks[1]["rows"])
    single = _one_process_step(STEPS[name])
    for r in ranks:
        assert r["loss"] == pytest.approx(single["loss"], abs=1e-5, rel=1e-5)
        assert r["terms"].keys() == single["terms"].keys()
        for k, v in single["terms"].items():
            assert r["terms"][k] == pytest.approx(v, abs=1e-5, rel=1e-5), k
        assert r["grads"].keys() == single["grads"].keys()
        for k, g in single["grads"].items():
            torch.testing.assert_close(r["grads"][k], g, rtol=1e-5, atol=1e-5, msg=lambda m, k=k: f"{name} {k}: {m}")
    # the gradient is not trivially zero
    assert max(float(g.abs().max()) for g in single["grads"].values()) > 1e-3


def test_gathered_negatives_matter(two_ranks):
    """Sanity: without the gather (each rank alone on its shard) the gradients differ."""
    from sonalign.models.losses.infonce import info_nce

    rng = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 4, generator=rng), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(8, 4, generator=rng), dim=-1)
    whole = info_nce(a, b, 2.0)
    halves = 0.5 * (info_nce(a[:4], b[:4], 2.0) + info_nce(a[4:], b[4:], 2.0))
    assert float(whole) != pytest.approx(float(halves), abs=1e-3)


def test_ddp_training_with_resume_matches_one_process(two_ranks):
    ddp_run = two_ranks["tmp"] / "run-ddp"
    summaries = [r["train"][1] for r in two_ranks["results"]]
    assert summaries[0] == summaries[1]  # every rank returns the same summary
    assert [r["train"][0]["epochs_run"] for r in two_ranks["results"]] == [1, 1]
    for name in ("config.json", "model.safetensors", "state.pt", "metrics.jsonl", "curves.png", "summary.json"):
        assert (ddp_run / name).exists(), name
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["epoch-000.safetensors", "epoch-001.safetensors"]
    assert not list(ddp_run.rglob(".*.tmp"))
    state = torch.load(ddp_run / "state.pt", weights_only=False)
    assert state["world_size"] == WORLD and len(state["rank_rng"]) == WORLD

    # reference: the same settings trained by one process (rank 0 after the DDP run, collectives off)
    single = two_ranks["tmp"] / "run-1"
    assert two_ranks["results"][0]["reference"]["epochs_run"] == 2
    a = [json.loads(line) for line in (single / "metrics.jsonl").open()]
    b = [json.loads(line) for line in (ddp_run / "metrics.jsonl").open()]
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        # same global batches, same gradients: the same training up to float rounding
        assert rb["train/loss"] == pytest.approx(ra["train/loss"], rel=1e-4)
        assert rb["train/infonce"] == pytest.approx(ra["train/infonce"], rel=1e-4)
        assert rb["val/primary"] == pytest.approx(ra["val/primary"], abs=1e-6)
    # the feature views written by the sharded extraction equal the single-process ones
    for name in ("clips.jsonl", "segments.jsonl", "segment_embeddings.npy", "errors.jsonl"):
        (va,) = list((single / "features" / "views").glob(f"*/{name}"))
        (vb,) = list((ddp_run / "features" / "views").glob(f"*/{name}"))
        assert va.read_bytes() == vb.read_bytes(), name


def test_single_process_helpers_are_no_ops():
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.global_negatives(x, x) is None
    assert distributed.world_size() == 1 and distributed.is_main() and not distributed.is_dist()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_gather_object(3) == [3]
    idx = np.arange(5)
    assert distributed.shard(idx) is idx
    assert [distributed.shard(idx, r, 2).tolist() for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert distributed.owns("ff", 1, 2) and not distributed.owns("ff", 0, 2) and distributed.owns("ff", 0, 1)


def test_nproc_relaunches_the_train_command_under_torchrun(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from sonalign.cli import app

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed.subprocess, "call", lambda cmd, env=None: calls.append(cmd) or 0)
    result = CliRunner().invoke(app, ["train", "--config", "clap-baseline", "--data", "m.jsonl", "--out", str(tmp_path / "r"), "--nproc", "3",
                                      "--epochs", "2", "--template", "sound", "--resume"])
    assert result.exit_code == 0, result.output
    (cmd,) = calls
    run = cmd.index("torch.distributed.run")
    assert cmd[run + 1 :][:4] == ["--nnodes", "1", "--nproc-per-node", "3"]
    tail = cmd[cmd.index("-m", run) :]
    assert tail[:3] == ["-m", "sonalign", "train"]
    assert "--nproc" not in tail and "--resume" in tail and tail[tail.index("--template") + 1] == "sound"
    assert tail[tail.index("--epochs") + 1] == "2" and tail[tail.index("--out") + 1] == str(tmp_path / "r")


SITECUSTOMIZE = """
import sys
sys.path.insert(0, {tests!r})
from sonalign.encoders import base as _base
_original = _base._load_builtins

def _load_builtins():
    _original()
    sys.path.insert(0, {tests!r})
    from conftest import FakeAudioEncoder, FakeTextEncoder
    _base._AUDIO["aisfx-cnn"] = FakeAudioEncoder  # the CLI's default encoder names, faked
    _base._TEXT["minilm-l6"] = FakeTextEncoder

_base._load_builtins = _load_builtins
"""


@pytest.mark.slow
def test_cli_nproc_trains_under_torchrun(tmp_path):
    """`sonalign train --nproc 2` end to end: the CLI, torchrun, two gloo ranks (encoders faked via sitecustomize)."""
    import os
    import subprocess
    import sys

    manifest = _tone_manifest(tmp_path / "data")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "SONALIGN_NO_PROGRESS": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sonalign", "train", "--config", "clap-baseline", "--data", str(manifest), "--out", str(out),
           "--epochs", "2", "--batch-size", "4", "--nproc", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.count("best epoch") == 1  # rank 0 alone reports
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["world_size"] == 2 and state["epoch"] == 1
    assert len([json.loads(line) for line in (out / "metrics.jsonl").open()]) == 2
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["model"]["audio_dim"] == 16  # the fake encoder's width: the faked encoders were used
