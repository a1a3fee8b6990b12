"""The contract between :class:`~sonalign.index.store.IndexStore` and the vector backends.

``meta.sqlite`` holds every vector. For each vector kind (``""`` the main vectors, ``"transcript"``...)
the store searches a copy of them, a :class:`VectorBackend`: a faiss index in memory
(:class:`~sonalign.index.vectors.FaissIndex`) or a Milvus collection
(:class:`~sonalign.index.milvus.MilvusIndex`). Between runs the copies are kept by a
:class:`VectorStorage`: files in the index folder (:mod:`sonalign.index.faiss_files`) or a Milvus
server (:mod:`sonalign.index.milvus_storage`). A saved copy carries a tag ``{index_uuid, generation}``
saying which committed state of ``meta.sqlite`` it holds.

The store gathers the rows a transaction adds and removes and hands them to each copy with
:meth:`VectorBackend.apply` once SQLite has committed them, then saves the copies whose turn it is
(:meth:`VectorStorage.save`). Searches return ``(scores, ids)`` of shape ``(nq, k)``, best first,
padded with ``-inf`` / ``-1`` when fewer than ``k`` rows qualify (:func:`padded`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorBackend(Protocol):
    """A searchable copy of one vector kind: L2-normalised float32 vectors under int64 row ids."""

    dim: int
    #: The tag of the saved state this copy was loaded from or last saved as; None if it has none.
    tag: dict[str, Any] | None

    @property
    def kind(self) -> str:
        """What it is, for stats: ``"flat"``, ``"hnsw"``, ``"milvus"``."""
        ...

    @property
    def ntotal(self) -> int:
        """How many vectors it holds."""
        ...

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product; ``allowed_ids`` restricts the candidates."""
        ...

    def ids(self) -> np.ndarray:
        """Sorted ids of the vectors it holds."""
        ...

    def describe(self) -> dict[str, Any]:
        ...

    def apply(self, remove: np.ndarray, add_ids: np.ndarray, add_vectors: np.ndarray) -> "VectorBackend":
        """Remove ``remove`` (unknown ids are ignored) and add the new rows, as one change. Returns
        the copy that holds the result: this one, or a new one built aside while searches go on here."""
        ...


class VectorStorage(Protocol):
    """Where a store keeps the copies of its vector kinds between runs."""

    #: The backend's name, as recorded in the index's meta ``vector_backend``.
    name: str
    #: True when the copies live on a server that read-only openers must not change.
    server_side: bool

    def load(self, kind: str, dim: int) -> VectorBackend | None:
        """The saved copy of ``kind``; None when there is none. IndexCorruptError when it is damaged."""
        ...

    def new(self, kind: str, dim: int) -> VectorBackend:
        """An empty copy of ``kind`` (a writer's replaces whatever was saved at the next save)."""
        ...

    def saved_tag(self, kind: str) -> dict[str, Any] | None:
        """The tag of the saved copy of ``kind``, without loading it; None when absent or being written."""
        ...

    def save(self, kind: str, index: VectorBackend, tag: dict[str, Any]) -> None:
        """Make ``index`` the saved copy of ``kind``, labelled ``tag``."""
        ...


def no_hits(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The answer to ``nq`` queries when nothing qualifies."""
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)


def padded(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` widened to ``k`` columns, every missing hit as ``-inf`` / ``-1``."""
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels, np.int64)
    scores = np.where(labels < 0, -np.inf, scores).astype(np.float32)
    if labels.shape[1] < k:
        extra = k - labels.shape[1]
        scores = np.concatenate([scores, np.full((labels.shape[0], extra), -np.inf, np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((labels.shape[0], extra), -1, np.int64)], axis=1)
    return scores, labels


__all__ = ["VectorBackend", "VectorStorage", "no_hits", "padded"]
