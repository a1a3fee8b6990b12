"""Small helpers shared by the built-in encoders (private: not part of the encoder API)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Length of the hex digest prefix used in ``settings()`` (48 bits: plenty to tell weights apart).
SHORT_HASH = 12

def sha256_file(path: str | Path, short: int = SHORT_HASH) -> str:
    """Short sha256 of a file's bytes (the memoised :func:`sonalign.utils.hashing.file_sha256`)."""
    from sonalign.utils.hashing import file_sha256

    return file_sha256(path, across_processes=True)[:short]


def sha256_files(paths: Sequence[str | Path], root: str | Path | None = None, short: int = SHORT_HASH) -> str:
    """Short sha256 over several files (names relative to ``root`` and their own hashes), order-free."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        name = str(p.relative_to(root)) if root is not None else p.name
        h.update(name.encode() + b"\0" + sha256_file(p, short=64).encode() + b"\n")
    return h.hexdigest()[:short]


def weight_files(directory: str | Path) -> list[Path]:
    """The files in a model folder that determine its outputs: weights, configs, tokenizer files."""
    d = Path(directory)
    keep = (".safetensors", ".bin", ".pt", ".pth", ".json", ".txt", ".model", ".h5", ".msgpack")
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix in keep and not p.name.startswith("."))


def batch_slices(n: int, batch_size: int, show_progress_bar: bool = False, desc: str = "") -> Iterator[slice]:
    """Consecutive ``slice``s of ``batch_size`` over ``range(n)``, with an optional tqdm bar."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc or "Batches", total=(n + batch_size - 1) // batch_size)
    for s in starts:
        yield slice(s, min(n, s + batch_size))


def as_mono_float32(wave: Any, index: int) -> np.ndarray:
    """Validate one input wave: 1-D, finite, float32 (a copy only when needed)."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    arr = np.asarray(wave)
    if arr.ndim != 1:
        raise ValueError(f"wave {index}: expected a mono 1-D array, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"wave {index}: contains NaN or infinite samples")
    return arr


def check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"text {i}: expected str, got {type(t).__name__}")
    return out


def pad_sequences(seqs: Sequence[torch.Tensor], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(T_i, D)`` tensors to ``(B, T_max, D)`` zero-padded, with a ``(B, T_max)`` bool mask."""
    t_max = max((s.shape[0] for s in seqs), default=0)
    out = torch.zeros(len(seqs), t_max, dim, dtype=torch.float32)
    mask = torch.zeros(len(seqs), t_max, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return out, mask


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, T, D)`` over the True positions of ``(B, T)`` (all-False rows give zeros)."""
    m = mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(1) / m.sum(1).clamp(min=1e-9)


def finish(out: dict[str, Any], convert_to_numpy: bool) -> dict[str, Any]:
    """Tensors -> float32/bool numpy arrays (or contiguous CPU tensors); other values untouched."""
    res: dict[str, Any] = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().contiguous()
            res[k] = v.numpy() if convert_to_numpy else v
        else:
            res[k] = v
    return res


def offline_env() -> None:
    """Make sure nothing from Hugging Face ever tries the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
