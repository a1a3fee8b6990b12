"""Vector search on a Milvus server or cluster: the Milvus :class:`~sonalign.index.backend.VectorBackend`.

``MilvusIndex`` keeps one Milvus collection of L2-normalised float32 vectors keyed by int64 ids (the
store's ``segments.row_id``), with the recording's file path as a scalar field::

    row_id  INT64 primary key (ids given by the caller, never auto)
    path    VARCHAR           the file path, for boolean filters (``path like "/music/%"``)
    vec     FLOAT_VECTOR(dim) inner product on normalised vectors = cosine; HNSW (M=32, efConstruction=80)

Writes
------
The store hands each commit's removed and added rows to :meth:`MilvusIndex.apply`, which marks the
collection property ``sonalign.tag`` as being written, deletes and upserts (upsert is idempotent, so a
retried or half-done apply never duplicates an id), and :meth:`MilvusIndex.save` then records the
caller's tag there with the timestamp of the last mutation. A process killed in between leaves no
valid tag, and the store repairs the collection on open (set difference against SQLite's ids).
:class:`~sonalign.index.store.IndexStore` commits SQLite first and applies after, so a reader never
sees rows SQLite has not committed (its storage of them: :class:`~sonalign.index.layout.MilvusCollections`).

Consistency
-----------
Reads use ``consistency="commit"`` by default: Milvus' *Customized* level with the guarantee timestamp
set to the last mutation this handle knows of (its own writes, or the timestamp recorded in the tag
by the writer that saved last). That is read-your-writes and read-the-last-commit for every process,
without *Strong*'s wait for the next time tick on each query. With no known timestamp it falls back to
*Strong*. ``consistency="Strong"`` (or any Milvus level) can be forced per index
(``SONALIGN_MILVUS_CONSISTENCY``). Counting (``ntotal`` on open) and listing ids (repair) always use *Strong*.

Filters: ``search(..., allowed_ids=ids)`` (what the searcher's path filter gives) becomes
``row_id in [...]`` (chunked, results merged, so any number of ids works); ``path_prefix="..."``
becomes ``path like "prefix%"``; ``expr=`` passes any Milvus boolean expression through.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import IndexCorruptError
from sonalign.index.backend import no_hits, padded
from sonalign.index.milvus_client import (
    CONNECT_TIMEOUT,
    CONSISTENCY_ENV,
    _pymilvus,
    call,
    connect,
    in_list,
    prefix_expr,
    redact_uri,
    server_uri,
)
from sonalign.index.validation import as_ids, check_additions, check_queries
from sonalign.index.vectors import DEFAULT_EF_SEARCH, HNSW_EF_CONSTRUCTION, HNSW_M

TAG_PROPERTY = "sonalign.tag"
#: Milvus' limits: top-k (limit + offset) and nq per search.
MAX_TOPK = 16384
MAX_NQ = 1024
MAX_EF = 32768
#: Ids per ``row_id in [...]`` expression and rows per upsert / delete request.
IN_CHUNK = 8192
WRITE_BYTES = 16 << 20
PATH_MAX_LENGTH = 65535
_LEVELS = {"strong": "Strong", "bounded": "Bounded", "session": "Session", "eventually": "Eventually", "commit": "commit"}
#: The store's options a MilvusIndex takes (the others, e.g. ``hnsw_threshold``, are faiss's).
MILVUS_OPTIONS = ("ef_search", "consistency", "index_type", "m", "ef_construction")


class MilvusIndex:
    """One Milvus collection as a :class:`~sonalign.index.backend.VectorBackend`; see the module docstring.

    ``MilvusIndex(dim, uri=..., collection=...)`` attaches to the collection if it exists (same dim) or
    starts an empty one that is created on the server at the first :meth:`apply` or :meth:`save`.
    ``path_lookup`` maps ids to file paths for rows added without ``paths`` (the store passes its
    SQLite lookup). ``readonly=True`` never writes to the server; ``overwrite=True`` drops an existing
    collection of that name; ``attach=False`` ignores it.
    """

    def __init__(
        self,
        dim: int,
        *,
        uri: str | None = None,
        collection: str,
        token: str | None = None,
        consistency: str | None = None,
        index_type: str = "HNSW",
        m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        path_lookup: Callable[[np.ndarray], Mapping[int, str]] | None = None,
        readonly: bool = False,
        overwrite: bool = False,
        attach: bool = True,
    ):
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.uri = server_uri(uri)
        self.collection_name = str(collection)
        level = (consistency or os.environ.get(CONSISTENCY_ENV) or "commit").strip()
        if level.lower() not in _LEVELS:
            raise ValueError(f"consistency must be one of {sorted(set(_LEVELS.values()))}, got {consistency!r}")
        self.consistency = _LEVELS[level.lower()]
        self.index_type = str(index_type).upper()
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.path_lookup = path_lookup
        self.readonly = bool(readonly)
        self.tag: dict[str, Any] | None = None
        self._alias = connect(self.uri, token)
        self._coll: Any = None
        self._server_count = 0
        self._ts = 0
        pm = _pymilvus()
        exists = self._call(pm.utility.has_collection, self.collection_name, using=self._alias)
        if exists and overwrite:
            if self.readonly:
                raise PermissionError(f"{self.collection_name}: cannot overwrite a collection read-only")
            self._call(pm.utility.drop_collection, self.collection_name, using=self._alias)
        elif exists and attach:
            self._attach()

    # ------------------------------------------------------------------ opening
    @classmethod
    def load(cls, path: str | Path | None = None, **options: Any) -> "MilvusIndex":
        """Connect to an existing collection: ``load(collection_name, uri=...)`` (``path`` names the
        collection; ``collection=`` works too). Raises FileNotFoundError when there is none."""
        name = options.pop("collection", None) or (None if path is None else Path(str(path)).name)
        if not name:
            raise ValueError("MilvusIndex.load needs a collection name")
        uri = server_uri(options.get("uri"))
        alias = connect(uri, options.get("token"))
        pm = _pymilvus()
        if not call(pm.utility.has_collection, name, using=alias):
            raise FileNotFoundError(f"no Milvus collection {name!r} at {redact_uri(uri)}")
        schema = call(lambda: pm.Collection(name, using=alias).schema)
        return cls(_vector_dim(schema, name), collection=name, **options)

    @classmethod
    def exists(cls, collection: str, *, uri: str | None = None, token: str | None = None) -> bool:
        alias = connect(server_uri(uri), token)
        return bool(call(_pymilvus().utility.has_collection, collection, using=alias))

    def _attach(self) -> None:
        pm = _pymilvus()
        coll = self._call(pm.Collection, self.collection_name, using=self._alias)
        dim = _vector_dim(coll.schema, self.collection_name)
        if dim != self.dim:
            raise IndexCorruptError(f"Milvus collection {self.collection_name!r} holds {dim}-d vectors, not {self.dim}-d")
        if not self._ensure_index(coll):
            return  # read-only and not loadable yet: as if there were no collection
        self._call(coll.load)
        self._coll = coll
        record = _read_record(coll)
        self.tag = record.get("tag") if isinstance(record.get("tag"), dict) else None
        self._ts = int(record.get("ts") or 0)
        self._server_count = self._count()

    def _ensure_index(self, coll: Any) -> bool:
        """Create the vector index if missing (a writer killed right after creating the collection)."""
        if not self._call(coll.has_index):
            if self.readonly:
                return False
            self._call(coll.create_index, "vec", self._index_params())
        return True

    def _index_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.index_type == "HNSW":
            params = {"M": self.m, "efConstruction": self.ef_construction}
        elif self.index_type.startswith("IVF"):
            params = {"nlist": 1024}
        return {"index_type": self.index_type, "metric_type": "IP", "params": params}

    def _create(self) -> None:
        pm = _pymilvus()
        fields = [
            pm.FieldSchema("row_id", pm.DataType.INT64, is_primary=True, auto_id=False),
            pm.FieldSchema("path", pm.DataType.VARCHAR, max_length=PATH_MAX_LENGTH),
            pm.FieldSchema("vec", pm.DataType.FLOAT_VECTOR, dim=self.dim),
        ]
        schema = pm.CollectionSchema(fields, description="sonalign vectors (row_id = segments.row_id)")
        coll = self._call(pm.Collection, self.collection_name, schema, using=self._alias, consistency_level="Strong")
        self._ensure_index(coll)
        self._call(coll.load)
        self._coll = coll
        self._server_count = 0

    def _write_record(self, record: dict[str, Any]) -> None:
        self._call(self._coll.set_properties, {TAG_PROPERTY: json.dumps(record, sort_keys=True)})

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        return "milvus"

    @property
    def ntotal(self) -> int:
        """Vectors in the collection (counted on open, kept up to date by :meth:`apply`)."""
        return self._server_count

    def __len__(self) -> int:
        return self.ntotal

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "milvus", "dim": self.dim, "ntotal": self.ntotal, "metric": "inner_product", "uri": redact_uri(self.uri),
                             "collection": self.collection_name, "index_type": self.index_type, "consistency": self.consistency}
        if self.index_type == "HNSW":
            d.update(M=self.m, efConstruction=self.ef_construction, efSearch=self.ef_search)
        return d

    # ------------------------------------------------------------------ server calls
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call(fn, *args, where=f"{redact_uri(self.uri)} {self.collection_name}", **kwargs)

    def _read_kw(self, strong: bool = False) -> dict[str, Any]:
        if strong or (self.consistency == "commit" and self._ts <= 0):
            return {"consistency_level": "Strong"}
        if self.consistency == "commit":
            return {"consistency_level": "Customized", "guarantee_timestamp": int(self._ts)}
        return {"consistency_level": self.consistency}

    def _alloc_ts(self) -> int:
        """A fresh timestamp from the server's timestamp oracle (0 if the server cannot give one)."""
        try:
            from pymilvus.grpc_gen import milvus_pb2

            handler = _pymilvus().connections._fetch_handler(self._alias)
            resp = handler._stub.AllocTimestamp(milvus_pb2.AllocTimestampRequest(), timeout=CONNECT_TIMEOUT)
            return int(resp.timestamp) if resp.status.error_code == 0 else 0
        except Exception:  # an older server, or a client without the call: fall back to Strong reads
            return 0

    def _count(self) -> int:
        rows = self._call(self._coll.query, expr="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    def _existing(self, ids: np.ndarray) -> np.ndarray:
        """Those of ``ids`` that are in the collection."""
        if self._coll is None or self._server_count == 0 or ids.size == 0:
            return np.zeros(0, np.int64)
        found = []
        for i in range(0, ids.size, IN_CHUNK):
            rows = self._call(self._coll.query, expr=f"row_id in {in_list(ids[i : i + IN_CHUNK])}", output_fields=["row_id"], **self._read_kw())
            found.extend(int(r["row_id"]) for r in rows)
        return np.unique(np.asarray(found, np.int64))

    def ids(self) -> np.ndarray:
        """Sorted ids in the collection (Strong read)."""
        if self._coll is None:
            return np.zeros(0, np.int64)
        out: list[int] = []
        it = self._call(self._coll.query_iterator, batch_size=IN_CHUNK * 2, expr="row_id >= 0", output_fields=["row_id"], consistency_level="Strong")
        try:
            while True:
                batch = self._call(it.next)
                if not batch:
                    break
                out.extend(int(r["row_id"]) for r in batch)
        finally:
            with contextlib.suppress(Exception):
                it.close()
        return np.unique(np.asarray(out, np.int64))

    def reconstruct(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found_ids, vectors)`` for those of ``ids`` in the collection (normalised vectors, sorted by id)."""
        ids = np.unique(as_ids(ids))
        out: dict[int, np.ndarray] = {}
        if ids.size and self._coll is not None:
            for i in range(0, ids.size, IN_CHUNK):
                rows = self._call(self._coll.query, expr=f"row_id in {in_list(ids[i : i + IN_CHUNK])}", output_fields=["row_id", "vec"], **self._read_kw())
                out.update({int(r["row_id"]): np.asarray(r["vec"], np.float32) for r in rows})
        found = np.array(sorted(out), np.int64)
        return found, (np.stack([out[int(i)] for i in found]) if found.size else np.zeros((0, self.dim), np.float32))

    # ------------------------------------------------------------------ writing
    def apply(self, remove: Iterable[int] | np.ndarray, add_ids: Iterable[int] | np.ndarray = (), add_vectors: np.ndarray | None = None,
              paths: Iterable[str | None] | None = None) -> "MilvusIndex":
        """Delete ``remove`` and upsert the new rows (``paths``: one file path per row, else
        ``path_lookup``'s) on the server, marking the collection as being written until :meth:`save`.
        Safe to repeat after a failure: deletes and upserts are idempotent. Returns this index."""
        if self.readonly:
            raise PermissionError(f"Milvus collection {self.collection_name!r} opened read-only")
        remove = np.unique(as_ids(remove))
        ids, x = check_additions(add_ids, add_vectors, self.dim)
        given = None if paths is None else [None if p is None else str(p) for p in paths]
        if given is not None and len(given) != ids.size:
            raise ValueError(f"{len(given)} paths for {ids.size} vectors")
        if remove.size == 0 and ids.size == 0:
            return self
        if self._coll is None:
            self._create()
        self._write_record({"state": "writing", "ts": self._ts})  # a kill from here on leaves no valid tag
        present = self._existing(np.union1d(remove, ids))
        gone = np.intersect1d(remove, present, assume_unique=True)
        for i in range(0, gone.size, IN_CHUNK):
            self._call(self._coll.delete, f"row_id in {in_list(gone[i : i + IN_CHUNK])}")
        row_paths = self._paths(ids, given)
        step = max(1, min(IN_CHUNK, WRITE_BYTES // (4 * self.dim + 64)))
        last_upsert = 0
        for i in range(0, ids.size, step):
            res = self._call(self._coll.upsert, [ids[i : i + step].tolist(), row_paths[i : i + step], x[i : i + step]])
            last_upsert = int(res.timestamp)
        overwritten = np.setdiff1d(present, remove, assume_unique=True)
        self._server_count += ids.size - gone.size - int(np.isin(ids, overwritten).sum())
        # A timestamp after every mutation above: reads guaranteed at it see them all. (Milvus 2.3
        # returns no timestamp for deletes, so the last upsert's is not enough.)
        self._ts = self._alloc_ts() or (last_upsert if gone.size == 0 else 0)
        return self

    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray, paths: Iterable[str | None] | None = None) -> None:
        """:meth:`apply` with nothing to remove."""
        self.apply((), ids, vectors, paths)

    def save(self, tag: dict[str, Any] | None = None) -> None:
        """Record ``tag`` as the collection's (creating it if it does not exist yet)."""
        if self.readonly:
            raise PermissionError(f"Milvus collection {self.collection_name!r} opened read-only")
        if self._coll is None:
            self._create()
        self._write_record({"tag": dict(tag or {}), "ts": self._ts})
        self.tag = dict(tag or {})

    def _paths(self, ids: np.ndarray, given: list[str | None] | None) -> list[str]:
        out = {int(i): None if given is None else given[j] for j, i in enumerate(ids)}
        need = np.array([i for i, p in out.items() if p is None], np.int64)
        if need.size and self.path_lookup is not None:
            for i in range(0, need.size, 10_000):
                out.update({int(k): v for k, v in self.path_lookup(need[i : i + 10_000]).items()})
        return [_clip_path(out[int(i)]) for i in ids]

    def seal(self, wait: bool = True, timeout: float | None = None) -> None:
        """Seal growing segments (Milvus ``flush``) so the HNSW index gets built for them; optionally wait."""
        if self._coll is None:
            return
        self._call(self._coll.flush)
        if wait:
            pm = _pymilvus()
            self._call(pm.utility.wait_for_index_building_complete, self.collection_name, using=self._alias, timeout=timeout)
            # then until the query nodes serve the indexed segments (not the growing ones' interim index)
            deadline = time.monotonic() + (timeout or 600)
            while time.monotonic() < deadline:
                segments = self._call(pm.utility.get_query_segment_info, self.collection_name, using=self._alias)
                if segments and all(getattr(seg, "index_name", "") and int(getattr(seg, "state", 0)) != 2 for seg in segments):
                    return  # none Growing (SegmentState 2), every one indexed
                time.sleep(0.5)

    def drop(self) -> None:
        """Delete the collection on the server."""
        if self.readonly:
            raise PermissionError(f"Milvus collection {self.collection_name!r} opened read-only")
        pm = _pymilvus()
        if self._call(pm.utility.has_collection, self.collection_name, using=self._alias):
            self._call(pm.utility.drop_collection, self.collection_name, using=self._alias)
        self._coll, self._server_count, self._ts, self.tag = None, 0, 0, None

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None, *, expr: str | None = None,
               path_prefix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` of shape ``(nq, k)`` by inner product of normalised vectors.

        ``allowed_ids`` restricts the candidates; ``path_prefix`` keeps rows whose path starts with it;
        ``expr`` is any Milvus boolean expression over ``row_id`` and ``path``. Padded with ``-inf`` /
        ``-1`` when fewer than ``k`` qualify.
        """
        q, k = check_queries(queries, self.dim, k)
        filters = [prefix_expr(path_prefix)] if path_prefix is not None else []
        if expr:
            filters.append(f"({expr})")
        if self._coll is None or self._server_count == 0:
            return no_hits(q.shape[0], k)
        if allowed_ids is None:
            return padded(*self._server_search(q, k, filters), k)
        allowed = np.unique(as_ids(allowed_ids))
        parts = [self._server_search(q, min(k, chunk.size), [f"row_id in {in_list(chunk)}", *filters])
                 for chunk in (allowed[i : i + IN_CHUNK] for i in range(0, allowed.size, IN_CHUNK))]
        return _best_of(parts, k) if parts else no_hits(q.shape[0], k)

    def _server_search(self, q: np.ndarray, k: int, filters: list[str]) -> tuple[np.ndarray, np.ndarray]:
        kk = min(int(k), MAX_TOPK)
        param: dict[str, Any] = {"metric_type": "IP", "params": {}}
        if self.index_type == "HNSW":
            param["params"] = {"ef": int(min(MAX_EF, max(self.ef_search, kk)))}
        elif self.index_type.startswith("IVF"):
            param["params"] = {"nprobe": 64}
        expr = " and ".join(filters) if filters else None
        scores, labels = no_hits(q.shape[0], kk)
        for start in range(0, q.shape[0], MAX_NQ):
            res = self._call(self._coll.search, q[start : start + MAX_NQ], "vec", param, limit=kk, expr=expr, output_fields=[], **self._read_kw())
            for j, hits in enumerate(res):
                n = len(hits.ids)
                labels[start + j, :n] = hits.ids
                scores[start + j, :n] = hits.distances
        return scores, labels


def collection_tag(uri: str, collection: str) -> dict[str, Any] | None:
    """The tag a collection holds now (None when it is absent or being written)."""
    pm = _pymilvus()
    alias = connect(uri)
    if not call(pm.utility.has_collection, collection, using=alias):
        return None
    tag = _read_record(call(pm.Collection, collection, using=alias)).get("tag")
    return tag if isinstance(tag, dict) else None


def _read_record(coll: Any) -> dict[str, Any]:
    try:
        props = call(coll.describe).get("properties") or {}
        record = json.loads(props.get(TAG_PROPERTY) or "{}")
    except (ValueError, TypeError):
        return {}
    return record if isinstance(record, dict) else {}


def _vector_dim(schema: Any, name: str) -> int:
    fields = {f.name: f for f in schema.fields}
    vec, rid, path = fields.get("vec"), fields.get("row_id"), fields.get("path")
    if vec is None or rid is None or path is None or not getattr(rid, "is_primary", False):
        raise IndexCorruptError(f"Milvus collection {name!r} is not a sonalign collection (fields {sorted(fields)})")
    return int(vec.params.get("dim"))


def _clip_path(path: str | None) -> str:
    text = path or ""
    data = text.encode("utf-8")
    if len(data) <= PATH_MAX_LENGTH:
        return text
    return data[:PATH_MAX_LENGTH].decode("utf-8", "ignore")


def _best_of(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of several searches' results (one per chunk of allowed ids)."""
    scores = np.concatenate([s for s, _ in parts], axis=1)
    labels = np.concatenate([i for _, i in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return padded(np.take_along_axis(scores, order, axis=1), np.take_along_axis(labels, order, axis=1), k)


__all__ = ["MILVUS_OPTIONS", "MilvusIndex", "collection_tag"]
