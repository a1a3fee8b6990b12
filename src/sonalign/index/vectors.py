"""Vector search over L2-normalised float32 vectors with int64 ids (faiss, inner product = cosine).

``FaissIndex`` is exact (``IndexIDMap2`` over ``IndexFlatIP``) while small and switches to HNSW
(``IndexHNSWFlat``, inner product, M=32, efConstruction=80) once it holds ``hnsw_threshold`` vectors
(50k by default). Both keep the full float32 vectors (HNSW's flat storage), so the index can always
be rebuilt from itself: no separate raw-vector file is needed.

Deletions: the flat index removes ids for real. faiss' HNSW cannot remove, so a removed vector becomes
a *tombstone*: its slot in the id map is set to -1, searches skip it through an id selector, and when
tombstones exceed ``compact_ratio`` of the slots the graph is rebuilt from the live vectors
(:meth:`FaissIndex.compact`). Tombstones live in the id map, so they are saved in the same file.

Concurrency: searches share a read lock, changes take the write lock. :meth:`FaissIndex.update`
removes and adds in one step, so a search sees all of a change or none of it; :meth:`FaissIndex.apply`
(the store's entry point) makes a change that would rebuild the index (switch to HNSW, compaction) on
a copy instead (:meth:`FaissIndex.updated_copy`), while searches go on in the original.

Files: :meth:`FaissIndex.save` / :meth:`FaissIndex.load` write and read atomically written files with
a checksummed footer carrying a caller's tag (see :mod:`sonalign.index.vector_file`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from sonalign.errors import IndexCorruptError
from sonalign.index.backend import no_hits, padded
from sonalign.index.validation import (
    ID_LIMIT,
    as_ids,
    check_additions,
    check_queries,
    normalize,
)
from sonalign.index.vector_file import read_index_file, write_index_file

#: Switch from exact search to HNSW at this many vectors.
DEFAULT_HNSW_THRESHOLD = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: efSearch of the HNSW graph, chosen with ``bench/search.py`` (recall@10 against exact search on
#: random vectors, the hard case: real embeddings cluster).
DEFAULT_EF_SEARCH = 128
#: Above this many vectors the automatic efSearch doubles: a larger graph needs a wider search for
#: the same recall (``bench/search.py``, docs/performance.md).
LARGE_INDEX = 200_000
LARGE_EF_SEARCH = 256
#: Rebuild the HNSW graph once this share of its slots are tombstones.
DEFAULT_COMPACT_RATIO = 0.2
#: A filtered search (``allowed_ids``) over at most this many ids on an HNSW index is done exactly,
#: by brute force over the stored vectors: filtered graph search loses recall when the filter is tight.
BRUTE_FORCE_MAX = 50_000
#: Searches of at most this many queries run on one OpenMP thread (of the calling thread only: the
#: thread count is a per-thread OpenMP setting). Waking a team of threads for one query costs more
#: than the query, and far more on a busy machine.
SMALL_BATCH = 4


class _RWLock:
    """Many concurrent searches, one mutation at a time (faiss searches are thread-safe, adds are not)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False

    def read(self) -> "_Guard":
        return _Guard(self, False)

    def write(self) -> "_Guard":
        return _Guard(self, True)


class _Guard:
    def __init__(self, lock: _RWLock, write: bool):
        self.lock, self.write = lock, write

    def __enter__(self) -> None:
        c = self.lock._cond
        with c:
            if self.write:
                while self.lock._writer or self.lock._readers:
                    c.wait()
                self.lock._writer = True
            else:
                while self.lock._writer:
                    c.wait()
                self.lock._readers += 1

    def __exit__(self, *exc: object) -> None:
        c = self.lock._cond
        with c:
            if self.write:
                self.lock._writer = False
            else:
                self.lock._readers -= 1
            c.notify_all()


class FaissIndex:
    """Inner-product index over normalised vectors; flat below ``hnsw_threshold`` vectors, HNSW above.

    ``add`` normalises its input; ``search`` normalises queries and returns ``(scores, ids)`` of shape
    ``(nq, k)``, best first, padded with ``-inf`` / ``-1`` when fewer than ``k`` vectors qualify.
    """

    def __init__(
        self,
        dim: int,
        *,
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        ef_search: int | None = None,
        m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        compact_ratio: float = DEFAULT_COMPACT_RATIO,
    ):
        """``ef_search=None``: automatic, :data:`DEFAULT_EF_SEARCH` up to :data:`LARGE_INDEX` vectors,
        :data:`LARGE_EF_SEARCH` above."""
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.hnsw_threshold = int(hnsw_threshold)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self._ef_search = None if ef_search is None else int(ef_search)
        self.compact_ratio = float(compact_ratio)
        self.tag: dict[str, Any] | None = None
        # Readers' refresh changes an index in place while server threads search it (see IndexStore.refresh).
        self._lock = _RWLock()
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._kind = "flat"
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # id map, sort order, sorted ids
        self._tombstones = 0
        self._max_id = -1

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"hnsw"``."""
        return self._kind

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones not counted)."""
        return int(self._index.ntotal) - self._tombstones

    @property
    def tombstones(self) -> int:
        return self._tombstones

    @property
    def max_id(self) -> int:
        """The largest id added since this index was made or loaded (-1 if none), removed or not."""
        return self._max_id

    @property
    def ef_search(self) -> int:
        """The efSearch in use: the one set, or the automatic one for the current size."""
        if self._ef_search is not None:
            return self._ef_search
        return LARGE_EF_SEARCH if self.ntotal > LARGE_INDEX else DEFAULT_EF_SEARCH

    @ef_search.setter
    def ef_search(self, value: int | None) -> None:
        self._ef_search = None if value is None else int(value)
        if self._kind == "hnsw":
            self._inner().hnsw.efSearch = self.ef_search

    def __len__(self) -> int:
        return self.ntotal

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self._kind, "dim": self.dim, "ntotal": self.ntotal, "metric": "inner_product"}
        if self._kind == "hnsw":
            d.update(M=self.m, efConstruction=self.ef_construction, efSearch=self.ef_search, tombstones=self._tombstones)
        return d

    # ------------------------------------------------------------------ mutation
    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray) -> None:
        self.update((), ids, vectors)

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Remove ``ids`` (unknown ids are ignored); returns how many were removed."""
        return self.update(ids)

    def update(self, remove: Iterable[int] | np.ndarray, add_ids: Iterable[int] | np.ndarray = (), add_vectors: np.ndarray | None = None) -> int:
        """Remove ``remove`` (unknown ids are ignored), then add ``add_vectors`` under ``add_ids``, as one
        change: a concurrent search sees all of it or none of it. Returns how many ids were removed."""
        removed = as_ids(remove)
        ids, x = check_additions(add_ids, add_vectors, self.dim)
        if ids.size == 0 and (removed.size == 0 or self.ntotal == 0):
            return 0
        with self._lock.write():
            if ids.size and ids.min() <= self._max_id:
                dup = ids[self._contains(ids) & ~np.isin(ids, removed)]
                if dup.size:
                    raise ValueError(f"ids already in the index: {dup[:5].tolist()}")
            n = self._remove_locked(removed) if removed.size and self.ntotal else 0
            if ids.size:
                self._add_locked(ids, x)
            return n

    def would_rebuild(self, n_remove: int, n_add: int) -> bool:
        """Whether an :meth:`update` of this size may rebuild the index (switch to HNSW, or compact its
        tombstones): a long change that holds searches back, better made on a copy (:meth:`updated_copy`)."""
        if self._kind == "flat":
            return self._switches_to_hnsw(self.ntotal - n_remove + n_add)
        return self._needs_compaction(self._tombstones + n_remove)

    def updated_copy(self, remove: Iterable[int] | np.ndarray, add_ids: Iterable[int] | np.ndarray = (), add_vectors: np.ndarray | None = None) -> "FaissIndex":
        """A new index holding this one's vectors less ``remove`` plus the added ones, built while
        searches go on in this one (which is left as it is)."""
        ids, x = check_additions(add_ids, add_vectors, self.dim)
        with self._lock.read():
            live_ids, live_x = self._live()
        keep = ~np.isin(live_ids, as_ids(remove))
        copy = FaissIndex(self.dim, hnsw_threshold=self.hnsw_threshold, ef_search=self._ef_search, m=self.m, ef_construction=self.ef_construction,
                          compact_ratio=self.compact_ratio)
        copy.add(np.concatenate([live_ids[keep], ids]), np.concatenate([live_x[keep], x]))
        copy._max_id = max(copy._max_id, self._max_id)
        return copy

    def apply(self, remove: Iterable[int] | np.ndarray, add_ids: Iterable[int] | np.ndarray = (), add_vectors: np.ndarray | None = None) -> "FaissIndex":
        """:meth:`update`, or, when that would rebuild the index, :meth:`updated_copy`: returns the index
        that holds the change (this one, or the copy)."""
        remove, n_add = as_ids(remove), len(as_ids(add_ids))
        if (remove.size or n_add) and self.would_rebuild(remove.size, n_add):
            return self.updated_copy(remove, add_ids, add_vectors)
        self.update(remove, add_ids, add_vectors)
        return self

    def _add_locked(self, ids: np.ndarray, x: np.ndarray) -> None:
        if self._switches_to_hnsw(self.ntotal + ids.size):
            old_ids, old_x = self._live()
            self._build("hnsw", np.concatenate([old_ids, ids]), np.concatenate([old_x, x]))
        else:
            self._index.add_with_ids(x, ids)
            self._cache = None
        self._max_id = max(self._max_id, int(ids.max()))

    def _remove_locked(self, ids: np.ndarray) -> int:
        if self._kind == "flat":
            n = int(self._index.remove_ids(faiss.IDSelectorBatch(np.unique(ids))))
            self._cache = None
            return n
        id_map, _, _ = self._ids_cache()
        hit = np.isin(id_map, ids) & (id_map >= 0)
        n = int(hit.sum())
        if n == 0:
            return 0
        id_map = id_map.copy()
        id_map[hit] = -1
        faiss.copy_array_to_vector(id_map, self._index.id_map)
        self._index.construct_rev_map()
        self._tombstones += n
        self._cache = None
        if self._needs_compaction(self._tombstones):
            self._compact_locked()
        return n

    def _switches_to_hnsw(self, n_live: int) -> bool:
        return self._kind == "flat" and n_live >= self.hnsw_threshold

    def _needs_compaction(self, tombstones: int) -> bool:
        return self._kind == "hnsw" and tombstones > self.compact_ratio * self._index.ntotal

    def compact(self) -> None:
        """Rebuild the HNSW graph without tombstones (back to flat if it shrank below half the threshold)."""
        with self._lock.write():
            self._compact_locked()

    def _compact_locked(self) -> None:
        if self._kind != "hnsw":
            return
        ids, x = self._live()
        self._build("flat" if ids.size < self.hnsw_threshold // 2 else "hnsw", ids, x)

    def _build(self, kind: str, ids: np.ndarray, x: np.ndarray) -> None:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        else:
            inner = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIDMap2(inner)
        if ids.size:
            index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        self._index, self._kind, self._tombstones, self._cache = index, kind, 0, None

    # ------------------------------------------------------------------ reading
    def _inner(self) -> Any:
        return faiss.downcast_index(self._index.index)

    def _storage_view(self) -> np.ndarray:
        """Zero-copy view of all slots' vectors (valid until the next mutation; copy what you keep)."""
        inner = self._inner()
        flat = faiss.downcast_index(inner.storage) if self._kind == "hnsw" else inner
        n = int(self._index.ntotal)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * self.dim).reshape(n, self.dim)

    def _ids_cache(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cache is None:
            id_map = faiss.vector_to_array(self._index.id_map).astype(np.int64, copy=False)
            order = np.argsort(id_map, kind="stable")
            self._cache = (id_map, order, id_map[order])
        return self._cache

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        _, _, sorted_ids = self._ids_cache()
        if sorted_ids.size == 0:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
        return sorted_ids[pos] == ids

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        id_map, _, _ = self._ids_cache()
        keep = id_map >= 0
        return id_map[keep].copy(), self._storage_view()[keep].copy()

    def ids(self) -> np.ndarray:
        """Sorted array of the live ids."""
        with self._lock.read():
            _, _, sorted_ids = self._ids_cache()
            return sorted_ids[sorted_ids >= 0].copy()

    def reconstruct(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found_ids, vectors)`` for those of ``ids`` that are in the index (normalised vectors)."""
        ids = as_ids(ids)
        with self._lock.read():
            return self._reconstruct_locked(ids)

    def _reconstruct_locked(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, order, sorted_ids = self._ids_cache()
        if ids.size == 0 or sorted_ids.size == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        ids = ids[ids >= 0]
        pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
        found = sorted_ids[pos] == ids
        slots = order[pos[found]]
        return ids[found].copy(), self._storage_view()[slots].copy()

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product of normalised vectors; ``allowed_ids`` restricts the candidates."""
        q, k = check_queries(queries, self.dim, k)
        nq = q.shape[0]
        if nq > SMALL_BATCH:
            return self._search(q, k, allowed_ids)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._search(q, k, allowed_ids)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(self, q: np.ndarray, k: int, allowed_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        nq = q.shape[0]
        with self._lock.read():
            n_live = self.ntotal
            if n_live == 0:
                return no_hits(nq, k)
            if allowed_ids is not None:
                allowed = np.unique(as_ids(allowed_ids))
                allowed = allowed[self._contains(allowed)] if allowed.size else allowed
                if allowed.size == 0:
                    return no_hits(nq, k)
                if self._kind == "hnsw" and allowed.size <= BRUTE_FORCE_MAX:
                    return self._brute_force(q, k, allowed)
                kk = min(k, int(allowed.size))
                sel = faiss.IDSelectorBatch(allowed)
                ef = self.ef_search
                if self._kind == "hnsw":
                    ef = int(min(4096, max(ef, kk) * max(1.0, n_live / allowed.size)))
                scores, labels = self._index.search(q, kk, params=self._params(sel, ef))
            else:
                kk = min(k, n_live)
                sel = faiss.IDSelectorRange(0, ID_LIMIT) if self._tombstones else None
                scores, labels = self._index.search(q, kk, params=self._params(sel, max(self.ef_search, kk)))
        return padded(scores, labels, k)

    def _params(self, sel: Any, ef: int) -> Any:
        if self._kind == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = int(ef)
        elif sel is None:
            return None
        else:
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
        return p

    def _brute_force(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids, x = self._reconstruct_locked(allowed)
        sims = q @ x.T
        kk = min(k, ids.size)
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return padded(np.take_along_axis(top_scores, order, axis=1), ids[np.take_along_axis(top, order, axis=1)], k)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, tag: dict[str, Any] | None = None) -> None:
        """Write atomically (temp file + fsync + os.replace) with a checksummed footer holding ``tag``."""
        with self._lock.read():
            write_index_file(self._index, path, {"tag": tag or {}, "kind": self._kind, "dim": self.dim})
        self.tag = dict(tag or {})

    @classmethod
    def load(cls, path: str | Path, *, require_footer: bool = False, **options: Any) -> "FaissIndex":
        """Read a file written by :meth:`save` (or a plain faiss IDMap2 file when ``require_footer`` is false).

        Raises :class:`IndexCorruptError` naming the file when it is truncated, damaged or of another kind.
        """
        path = Path(path)
        index, footer = read_index_file(path, require_footer=require_footer)
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexCorruptError(f"{path}: not an IndexIDMap2 vector index ({type(index).__name__})")
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            kind = "hnsw"
        elif isinstance(inner, faiss.IndexFlat):
            kind = "flat"
        else:
            raise IndexCorruptError(f"{path}: unsupported inner index type {type(inner).__name__}")
        if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexCorruptError(f"{path}: index metric is not inner product")
        self = cls(int(index.d), **options)
        self._index, self._kind = index, kind
        if kind == "hnsw":
            self.m = int(inner.hnsw.nb_neighbors(1))
            self.ef_construction = int(inner.hnsw.efConstruction)
            inner.hnsw.efSearch = self.ef_search
        id_map, _, _ = self._ids_cache()
        if id_map.size != index.ntotal:
            raise IndexCorruptError(f"{path}: id map holds {id_map.size} ids for {index.ntotal} vectors")
        self._tombstones = int((id_map < 0).sum())
        self._max_id = int(id_map.max()) if id_map.size else -1
        self.tag = footer.get("tag", {}) if footer else None
        return self


__all__ = ["BRUTE_FORCE_MAX", "DEFAULT_EF_SEARCH", "DEFAULT_HNSW_THRESHOLD", "SMALL_BATCH", "FaissIndex", "normalize"]
