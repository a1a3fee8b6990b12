"""Checks shared by every vector backend and the store: ids, vectors to add, search queries."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sonalign.utils.vectors import normalize  # noqa: F401 (the index's callers import it from here)

#: Ids must lie in ``0 .. ID_LIMIT - 1`` (faiss reserves negative ids; Milvus keys are int64).
ID_LIMIT = 2**62


def as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """``ids`` as a contiguous 1-d int64 array; ValueError for anything else."""
    arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be a 1-d integer array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_vectors(vectors: np.ndarray, what: str = "vectors", *, nonzero: bool = False) -> None:
    """ValueError if ``vectors`` hold NaN or infinite values (or, with ``nonzero``, an all-zero row)."""
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    if nonzero and (np.linalg.norm(vectors, axis=1) == 0).any():
        raise ValueError(f"{what} contain an all-zero vector (cannot be normalised)")


def check_additions(ids: Iterable[int] | np.ndarray, vectors: np.ndarray | None, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate ids and ``(n, dim)`` vectors to add; returns the ids and the normalised vectors."""
    ids = as_ids(ids)
    vectors = np.zeros((0, dim), np.float32) if vectors is None else np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vectors.shape}")
    if vectors.shape[0] != ids.shape[0]:
        raise ValueError(f"{ids.shape[0]} ids for {vectors.shape[0]} vectors")
    if ids.size == 0:
        return ids, vectors.astype(np.float32, copy=False)
    check_vectors(vectors)
    if ids.min() < 0 or ids.max() >= ID_LIMIT:
        raise ValueError("ids must be in 0 .. 2**62")
    if np.unique(ids).size != ids.size:
        raise ValueError("duplicate ids in one add()")
    return ids, normalize(vectors)


def check_queries(queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, int]:
    """Validate a search request: ``(nq, dim)`` (or ``(dim,)``) finite queries and ``k >= 1``.

    Returns the L2-normalised ``(nq, dim)`` queries and ``k`` as an int.
    """
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (nq, {dim}), got {np.asarray(queries).shape}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.isfinite(q).all():
        raise ValueError("queries contain NaN or infinite values")
    return normalize(q), k


__all__ = ["ID_LIMIT", "as_ids", "check_additions", "check_queries", "check_vectors", "normalize"]
