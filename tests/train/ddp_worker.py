"""Worker side of tests/train/test_distributed.py (spawned processes import this module, not pytest's).

Each worker sets the environment torchrun would set, registers the fake encoders, starts the gloo
process group through ``sonalign.distributed.init`` and runs the task's cases.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from fakes import as_torchrun_rank, register_fake_encoders  # noqa: E402




def _pad(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(s.shape[0] for s in seqs)
    out = np.zeros((len(seqs), length, seqs[0].shape[1]), np.float32)
    mask = np.zeros((len(seqs), length), bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def collate(rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Batch of synthetic items; sequences padded to this batch's (i.e. this shard's) longest."""
    from sonalign.batches import audio_batch

    batch = audio_batch([{"embedding": r["audio_segments"], "frames": r["audio_segments"]} for r in rows], {"audio_embedding", "audio_segments"})
    batch["text_embedding"] = torch.from_numpy(np.stack([r["text_embedding"] for r in rows]))
    batch["text_segments"], batch["text_segments_mask"] = _pad([r["text_segments"] for r in rows])
    return batch


def step(case: dict) -> dict:
    """Loss, terms and gradients of one training step on this rank's shard of ``case['rows']``."""
    from sonalign.models.factory import create_model
    from sonalign.train import trainer

    torch.manual_seed(0)
    model = create_model(case["config"], **case["overrides"])
    model.train()
    rows = case["rows"]
    part = trainer.local_rows(np.arange(len(rows)))
    ddp = trainer.wrap_model(model)
    loss, terms = trainer.training_step(ddp, collate([rows[i] for i in part]), len(part), len(rows))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"loss": float(loss), "terms": {k: float(v) for k, v in terms.items()}, "grads": grads, "rows": part.tolist()}


def run(rank: int, world: int, port: int, task_file: str, out_dir: str) -> None:
    as_torchrun_rank(rank, world, port)
    torch.set_num_threads(1)
    register_fake_encoders()
    from sonalign import distributed
    from sonalign.train.trainer import TrainSettings, train

    task = pickle.loads(Path(task_file).read_bytes())
    assert distributed.init("gloo")
    try:
        result: dict = {"steps": {name: step(case) for name, case in task.get("steps", {}).items()}}
        if "train" in task:  # a run killed after one epoch, then resumed (every rank calls train)
            first = train(TrainSettings(**task["train"]), show_progress=False, stop_after=1)
            second = train(TrainSettings(**task["train"]), resume=True, show_progress=False)
            result["train"] = [first, second]
        if "reference" in task and rank == 0:  # the same run in one process (no collective), for comparison
            with distributed.local_only():
                result["reference"] = train(TrainSettings(**task["reference"]), show_progress=False)
        result["world"] = distributed.world_size()
    finally:
        distributed.cleanup()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
