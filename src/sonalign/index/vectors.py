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
removes and adds in one step, so a search sees all of a change or none of it; a change that would
rebuild the index (switch to HNSW, compaction) can instead be made on a copy
(:meth:`FaissIndex.updated_copy`) while searches go on in the original.

Files: :meth:`FaissIndex.save` writes the faiss index to a temporary file, appends a small footer
(magic, JSON tag, payload size and CRC-32), fsyncs and ``os.replace`` s it over the target, so a reader
sees the old file or the new one, never a torn one. The footer carries a caller's tag (the store puts
its generation number there) and lets :meth:`FaissIndex.load` reject a damaged file with
:class:`~sonalign.errors.IndexCorruptError` before faiss ever parses it. faiss ignores trailing bytes,
so the file stays readable by ``faiss.read_index``.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import faiss
import numpy as np

from sonalign.errors import IndexCorruptError, StorageError
from sonalign.utils.atomic import atomic_path

#: Switch from exact search to HNSW at this many vectors.
DEFAULT_HNSW_THRESHOLD = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: efSearch of the HNSW graph; chosen by ``bench/search.py`` for recall@10 >= 0.98 against exact search
#: on 100k random 256-d vectors (random vectors are the hard case: real embeddings cluster).
DEFAULT_EF_SEARCH = 128
#: Above this many vectors the automatic efSearch doubles: on 1M structured vectors efSearch 128
#: gave recall@10 0.964 and 256 gave 0.995 (bench/search.py), so a larger graph needs a wider search.
LARGE_INDEX = 200_000
LARGE_EF_SEARCH = 256
#: Rebuild the HNSW graph once this share of its slots are tombstones.
DEFAULT_COMPACT_RATIO = 0.2
#: A filtered search (``allowed_ids``) over at most this many ids on an HNSW index is done exactly,
#: by brute force over the stored vectors: filtered graph search loses recall when the filter is tight.
BRUTE_FORCE_MAX = 50_000
#: Searches of at most this many queries run on one OpenMP thread (of the calling thread only: the
#: thread count is a per-thread OpenMP setting). Waking a team of threads for one query costs more
#: than the query, and far more on a busy machine (measured: 0.7 ms -> 20 ms p50 on 2 loaded cores).
SMALL_BATCH = 4

_FOOTER_MAGIC = b"SONALIGNVEC1"
_FOOTER_TAIL = struct.Struct("<QQ12s")  # payload size, json length, magic
_ID_LIMIT = 2**62


@runtime_checkable
class VectorIndex(Protocol):
    """What the store and the searcher need from a vector index."""

    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    @property
    def ntotal(self) -> int: ...

    def save(self, path: str | Path, tag: dict[str, Any] | None = None) -> None: ...

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> "VectorIndex": ...


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new C-contiguous float32 array; zero rows stay zero."""
    out = np.array(vectors, dtype=np.float32, copy=True, order="C")
    if out.ndim == 1:
        out = out[None, :]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


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


def check_queries(queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, int]:
    """Validate a search request: ``(nq, dim)`` (or ``(dim,)``) finite queries and ``k >= 1``.

    Returns the L2-normalised ``(nq, dim)`` queries and ``k`` as an int; shared by every backend.
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
        removed = _as_ids(remove)
        ids, x = self._check_new(add_ids, add_vectors)
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
        ids, x = self._check_new(add_ids, add_vectors)
        with self._lock.read():
            live_ids, live_x = self._live()
        keep = ~np.isin(live_ids, _as_ids(remove))
        copy = FaissIndex(self.dim, hnsw_threshold=self.hnsw_threshold, ef_search=self._ef_search, m=self.m, ef_construction=self.ef_construction,
                          compact_ratio=self.compact_ratio)
        copy.add(np.concatenate([live_ids[keep], ids]), np.concatenate([live_x[keep], x]))
        copy._max_id = max(copy._max_id, self._max_id)
        return copy

    def _check_new(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Validate ids and vectors to add; returns the ids and the normalised vectors."""
        ids = _as_ids(ids)
        vectors = np.zeros((0, self.dim), np.float32) if vectors is None else np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}")
        if vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids for {vectors.shape[0]} vectors")
        if ids.size == 0:
            return ids, vectors.astype(np.float32, copy=False)
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        if ids.min() < 0 or ids.max() >= _ID_LIMIT:
            raise ValueError("ids must be in 0 .. 2**62")
        if np.unique(ids).size != ids.size:
            raise ValueError("duplicate ids in one add()")
        return ids, normalize(vectors)

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
        ids = _as_ids(ids)
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
                return _empty(nq, k)
            if allowed_ids is not None:
                allowed = np.unique(_as_ids(allowed_ids))
                allowed = allowed[self._contains(allowed)] if allowed.size else allowed
                if allowed.size == 0:
                    return _empty(nq, k)
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
                sel = faiss.IDSelectorRange(0, _ID_LIMIT) if self._tombstones else None
                scores, labels = self._index.search(q, kk, params=self._params(sel, max(self.ef_search, kk)))
        return _pad(scores, labels, k)

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
        return _pad(np.take_along_axis(top_scores, order, axis=1), ids[np.take_along_axis(top, order, axis=1)], k)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, tag: dict[str, Any] | None = None) -> None:
        """Write atomically (temp file + fsync + os.replace) with a checksummed footer holding ``tag``."""
        path = Path(path)
        with self._lock.read():
            with atomic_path(path) as tmp:
                try:
                    faiss.write_index(self._index, str(tmp))
                except RuntimeError as exc:  # faiss reports a failed write (disk full, I/O error) as a C++ RuntimeError
                    detail = str(exc).strip().splitlines()[-1][-200:] if str(exc).strip() else type(exc).__name__
                    raise StorageError(f"{path}: could not write the vector index ({detail}); check the free disk space and run again "
                                       "(what was committed is kept)") from None
                size = tmp.stat().st_size
                with open(tmp, "rb") as handle:
                    crc = _crc32(handle, size)
                header = json.dumps({"tag": tag or {}, "crc32": crc, "kind": self._kind, "dim": self.dim}).encode("utf-8")
                with open(tmp, "ab") as handle:
                    handle.write(header)
                    handle.write(_FOOTER_TAIL.pack(size, len(header), _FOOTER_MAGIC))
        self.tag = dict(tag or {})

    @classmethod
    def load(cls, path: str | Path, *, require_footer: bool = False, **options: Any) -> "FaissIndex":
        """Read a file written by :meth:`save` (or a plain faiss IDMap2 file when ``require_footer`` is false).

        Raises :class:`IndexCorruptError` naming the file when it is truncated, damaged or of another kind.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such vector index file")
        # One open file for footer, checksum and faiss: a writer's os.replace() in between cannot mix
        # two versions (faiss reads the same inode through /proc/self/fd).
        with open(path, "rb") as handle:
            footer = _read_footer(handle)
            if footer is None and require_footer:
                raise IndexCorruptError(f"{path}: truncated or not a sonalign vector index (no footer)")
            if footer is not None:
                size, meta = footer
                if _crc32(handle, size) != meta.get("crc32"):
                    raise IndexCorruptError(f"{path}: vector index is damaged (checksum mismatch)")
            same_file = f"/proc/self/fd/{handle.fileno()}"
            try:
                index = faiss.read_index(same_file if os.path.exists(same_file) else str(path))
            except Exception as exc:  # faiss raises RuntimeError with a C++ trace
                raise IndexCorruptError(f"{path}: unreadable vector index ({str(exc).splitlines()[-1][-160:]})") from None
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
        self.tag = footer[1].get("tag", {}) if footer else None
        return self


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be a 1-d integer array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)


def _pad(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels, np.int64)
    scores = np.where(labels < 0, -np.inf, scores).astype(np.float32)
    if labels.shape[1] < k:
        extra = k - labels.shape[1]
        scores = np.concatenate([scores, np.full((labels.shape[0], extra), -np.inf, np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((labels.shape[0], extra), -1, np.int64)], axis=1)
    return scores, labels


def _crc32(handle: BinaryIO, size: int, chunk: int = 16 << 20) -> int:
    handle.seek(0)
    crc, left = 0, size
    while left > 0:
        block = handle.read(min(chunk, left))
        if not block:
            break
        crc = zlib.crc32(block, crc)
        left -= len(block)
    return crc


def _read_footer(handle: BinaryIO) -> tuple[int, dict[str, Any]] | None:
    total = os.fstat(handle.fileno()).st_size
    if total < _FOOTER_TAIL.size:
        return None
    handle.seek(total - _FOOTER_TAIL.size)
    size, json_len, magic = _FOOTER_TAIL.unpack(handle.read(_FOOTER_TAIL.size))
    if magic != _FOOTER_MAGIC or size + json_len + _FOOTER_TAIL.size != total:
        return None
    handle.seek(size)
    try:
        meta = json.loads(handle.read(json_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return (int(size), meta) if isinstance(meta, dict) else None


def file_tag(path: str | Path) -> dict[str, Any] | None:
    """The tag saved in a vector file's footer, without loading the index (None if absent/damaged)."""
    try:
        with open(path, "rb") as handle:
            footer = _read_footer(handle)
    except FileNotFoundError:
        return None
    return footer[1].get("tag") if footer else None


__all__ = [
    "BRUTE_FORCE_MAX",
    "SMALL_BATCH",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_HNSW_THRESHOLD",
    "FaissIndex",
    "VectorIndex",
    "file_tag",
    "normalize",
]
