"""Data-parallel helpers: process-group setup, rank helpers, gathers with gradients, sharding, launch.

Launch with ``torchrun --nproc-per-node N -m sonalign train ...`` (or ``sonalign train --nproc N``,
which runs exactly that). torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init` reads them and starts the process group: NCCL with device
``cuda:LOCAL_RANK`` when CUDA is available, gloo on CPU otherwise. Everything here is a no-op in a
single process (no process group, or a world of one), so library code can call it freely.

Contrastive losses draw their negatives from the *global* batch: :func:`gather_with_grad` is an
all-gather whose backward sums every rank's gradient for a row back to the rank that owns the row
(an all-reduce of the gathered gradient, then the owner's slice), and the local rows are put back
in their slot so the local autograd path stays direct. With each rank's loss weighted by its
share of the global batch (``n_local * world / n_global``, 1 for equal shards) and DDP's gradient
averaging, one N-process step has the loss and gradients of one 1-process step on the same global
batch (checked in ``tests/train/test_distributed.py``).

:func:`local_only` switches every sonalign collective off in its block (the trainer validates on
rank 0 alone inside it), so code that only some ranks run never waits for the others.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

_state: dict[str, Any] = {"cpu_group": None, "local_only": 0}


# ---------------------------------------------------------------------------------- environment
def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_dist() -> bool:
    """True when a process group of more than one rank is up and collectives are not switched off."""
    return not _state["local_only"] and is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: from the process group, else torchrun's ``RANK`` (0 when not launched)."""
    if is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0) if launched_world_size() > 1 else 0


def world_size() -> int:
    """Ranks in the process group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def _active_rank_world(rank_: int | None, world: int | None) -> tuple[int, int]:
    """Explicit values, else this process's place among the ranks taking part (``(0, 1)`` when local)."""
    here = (rank(), world_size()) if is_dist() else (0, 1)
    return (here[0] if rank_ is None else rank_), (here[1] if world is None else world)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes run files and validates."""
    return rank() == 0


def device() -> torch.device:
    """``cuda:LOCAL_RANK`` when training under an NCCL process group, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


def init(backend: str | None = None, timeout_minutes: float = 30.0) -> bool:
    """Start the process group from torchrun's environment; returns True if this call started it.

    Does nothing (returns False) when not launched with ``WORLD_SIZE > 1`` or when a group is
    already up. ``backend`` defaults to NCCL when the device (``$SONALIGN_DEVICE``, else auto) is
    CUDA, gloo otherwise.
    """
    if is_initialized() or launched_world_size() <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    from sonalign.utils.device import resolve_device

    cuda = resolve_device().type == "cuda"  # --device cpu keeps a GPU machine on gloo
    if cuda:
        torch.cuda.set_device(local_rank())
    backend = backend or ("nccl" if cuda and dist.is_nccl_available() else "gloo")
    kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=timeout_minutes)}
    if backend == "nccl":
        kwargs["device_id"] = torch.device("cuda", local_rank())
    dist.init_process_group(**kwargs)
    _state["cpu_group"] = dist.new_group(backend="gloo") if backend != "gloo" else None
    return True


def cleanup() -> None:
    """Destroy the process group (if any)."""
    if is_initialized():
        dist.destroy_process_group()
    _state["cpu_group"] = None


@contextlib.contextmanager
def session(backend: str | None = None) -> Iterator[None]:
    """``init`` for the block and ``cleanup`` after it, if the block's process group was started here."""
    started = init(backend)
    try:
        yield
    finally:
        if started:
            cleanup()


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """No sonalign collective inside the block: losses use local negatives, extraction does not shard."""
    _state["local_only"] += 1
    try:
        yield
    finally:
        _state["local_only"] -= 1


def _cpu_group():
    """A gloo group for CPU-side collectives (objects, barriers); the default group when it is gloo."""
    if dist.get_backend() == "gloo":
        return None
    if _state["cpu_group"] is None:  # group started outside init(): every rank reaches this in the same order
        _state["cpu_group"] = dist.new_group(backend="gloo")
    return _state["cpu_group"]


# ---------------------------------------------------------------------------------- collectives
def barrier() -> None:
    if is_dist():
        dist.barrier(group=_cpu_group())


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects)."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_cpu_group())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj, group=_cpu_group())
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (no gradient), returned as a new tensor on ``tensor``'s device."""
    if not is_dist():
        return tensor
    out = tensor.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


class _GatherRows(torch.autograd.Function):
    """All-gather of row blocks of possibly different lengths; backward sums gradients to the owner."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:  # type: ignore[override]
        me = dist.get_rank()
        ctx.sizes, ctx.rank = sizes, me
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's gradient for every row
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(global rows, offset of this rank's rows)``: every rank's ``x`` concatenated in rank order.

    Gradients flow: this rank's rows are ``x`` itself (put back in their slot), and the backward of
    the other slots sends each rank's gradient for a row to the rank that owns it, summed.
    Single process: ``(x, 0)``.
    """
    if not is_dist():
        return x, 0
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes_t = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes_t, size)
    sizes = tuple(int(s.item()) for s in sizes_t)
    gathered = _GatherRows.apply(x, sizes)
    start = sum(sizes[: dist.get_rank()])
    end = start + x.shape[0]
    return torch.cat([gathered[:start], x, gathered[end:]]), start


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` (rows concatenated in rank order) with gradients back to every owner."""
    return gather_rows(x)[0]


def global_negatives(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """For row-aligned pair embeddings: ``(all a, all b, this rank's row offset)``, or None when local.

    One all-gather carries both (they are concatenated along the feature axis).
    """
    if not is_dist() or a.shape[0] != b.shape[0]:
        return None
    width = a.shape[1]
    both, offset = gather_rows(torch.cat([a, b.to(a.dtype)], dim=1))
    return both[:, :width], both[:, width:].to(b.dtype), offset


# ---------------------------------------------------------------------------------- sharding
def shard(indices: np.ndarray, rank_: int | None = None, world: int | None = None) -> np.ndarray:
    """This rank's contiguous slice of a global batch (lengths differ by at most one, larger first)."""
    rank_, world = _active_rank_world(rank_, world)
    if world <= 1:
        return indices
    return np.array_split(np.asarray(indices), world)[rank_]


def owns(content_hash: str, rank_: int | None = None, world: int | None = None) -> bool:
    """Whether this rank processes the item with this hex content hash (``int(hash, 16) % world``)."""
    rank_, world = _active_rank_world(rank_, world)
    return world <= 1 or int(content_hash, 16) % world == rank_


# ---------------------------------------------------------------------------------- launching
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def launch_command(nproc: int, args: list[str], *, module: str = "sonalign", port: int | None = None) -> list[str]:
    """The torchrun command line that runs ``python -m MODULE ARGS`` in ``nproc`` local processes."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(port or free_port()),
        "-m", module, *args,
    ]  # fmt: skip


def launch(nproc: int, args: list[str], *, module: str = "sonalign", env: dict[str, str] | None = None) -> int:
    """Run ``python -m MODULE ARGS`` under torchrun on this machine; returns torchrun's exit code."""
    return subprocess.call(launch_command(nproc, args, module=module), env=env)
