"""Vector search on a Milvus server or cluster, behind the same protocol as :class:`~sonalign.index.vectors.FaissIndex`.

``MilvusIndex`` keeps one Milvus collection of L2-normalised float32 vectors keyed by int64 ids (the
store's ``segments.row_id``), with the recording's file path as a scalar field::

    row_id  INT64 primary key (ids given by the caller, never auto)
    path    VARCHAR           the file path, for boolean filters (``path like "/music/%"``)
    vec     FLOAT_VECTOR(dim) inner product on normalised vectors = cosine; HNSW (M=32, efConstruction=80)

The client code is the same for Milvus standalone (one machine) and Milvus distributed (a cluster):
only the URI differs.

Writes are staged, like a faiss index in memory
-----------------------------------------------
``add`` and ``remove`` change an in-memory *overlay* (staged adds, staged removes) and do not touch
the server; :meth:`MilvusIndex.search` answers from the server *and* the overlay (server hits of
staged-removed or staged-re-added ids are excluded in the Milvus expression; staged adds are scored
exactly in numpy), so a caller always reads its own writes. :meth:`MilvusIndex.save` is the moment
the server changes: it deletes the staged removes, upserts the staged adds (upsert is idempotent, so
a retried or half-done flush never duplicates an id) and then records the caller's tag in the
collection property ``sonalign.tag`` together with the timestamp of the last mutation. Before the
first mutation it writes a ``writing`` marker there, so a flush killed half-way leaves no valid tag.
That is the same contract as ``FaissIndex``: in memory until ``save``, and the tag says which
generation the saved state is. :class:`~sonalign.index.store.IndexStore` commits SQLite first and
saves after, so a reader never sees rows SQLite has not committed, and a kill between the two leaves
a tag older than SQLite, which the store repairs on open (set difference against SQLite's ids).

Consistency
-----------
Reads use ``consistency="commit"`` by default: Milvus' *Customized* level with the guarantee timestamp
set to the last mutation this handle knows of (its own writes, or the timestamp recorded in the tag
by the writer that saved last). That is read-your-writes and read-the-last-commit for every process,
without *Strong*'s wait for the next time tick on each query (~200 ms on a default server). With no
known timestamp it falls back to *Strong*. ``consistency="Strong"`` (or any Milvus level) can be
forced per index (``SONALIGN_MILVUS_CONSISTENCY``). Counting (``ntotal`` on open) and listing ids
(repair) always use *Strong*.

Filters: ``search(..., allowed_ids=ids)`` (what the searcher's path filter gives) becomes
``row_id in [...]`` (chunked, results merged, so any number of ids works); ``path_prefix="..."``
becomes ``path like "prefix%"``; ``expr=`` passes any Milvus boolean expression through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import ConfigError, IndexCorruptError
from sonalign.index.vectors import (
    _ID_LIMIT,
    check_queries,
    DEFAULT_EF_SEARCH,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    _as_ids,
    _empty,
    _pad,
    _RWLock,
    normalize,
)

#: Environment variables: server address (overrides the one recorded in an index), credentials
#: ("user:password" or an API key; never recorded), and a forced read consistency level.
URI_ENV = "SONALIGN_MILVUS_URI"
TOKEN_ENV = "SONALIGN_MILVUS_TOKEN"
CONSISTENCY_ENV = "SONALIGN_MILVUS_CONSISTENCY"
DEFAULT_URI = "http://127.0.0.1:19530"
TAG_PROPERTY = "sonalign.tag"
#: Milvus' limits: top-k (limit + offset) and nq per search.
MAX_TOPK = 16384
MAX_NQ = 1024
MAX_EF = 32768
#: Ids per ``row_id in [...]`` expression and rows per upsert / delete request.
IN_CHUNK = 8192
WRITE_BYTES = 16 << 20
PATH_MAX_LENGTH = 65535
CONNECT_TIMEOUT = 10.0
_LEVELS = {"strong": "Strong", "bounded": "Bounded", "session": "Session", "eventually": "Eventually", "commit": "commit"}
_connect_lock = threading.Lock()


def _pymilvus() -> Any:
    """Import pymilvus lazily (it is an optional dependency) and quietly (pkg_resources warnings)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pymilvus
    except ImportError as exc:
        raise ConfigError(f"the milvus backend needs pymilvus (pip install 'pymilvus>=2.3,<2.4'): {exc}") from None
    return pymilvus


def normalize_uri(uri: str | None) -> str:
    """``host:port`` / ``host`` / ``tcp://host:port`` -> ``http://host:port`` (19530 by default)."""
    uri = (uri or "").strip() or DEFAULT_URI
    if "://" not in uri:
        uri = "http://" + uri
    scheme, rest = uri.split("://", 1)
    if scheme in ("tcp", "grpc"):
        scheme = "http"
    hostport = rest.split("/", 1)[0]
    if ":" not in hostport.rsplit("]", 1)[-1]:
        rest = rest.replace(hostport, hostport + ":19530", 1)
    return f"{scheme}://{rest}"


def redact_uri(uri: str) -> str:
    """The URI without a password (``http://user:***@host:port``)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)


def connect(uri: str, token: str | None = None, timeout: float = CONNECT_TIMEOUT) -> str:
    """A pymilvus connection alias for ``uri`` (one per address and credentials, made once)."""
    pm = _pymilvus()
    uri = normalize_uri(uri)
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    alias = "sonalign-" + hashlib.sha1(f"{uri}\0{token or ''}".encode()).hexdigest()[:16]
    with _connect_lock:
        if pm.connections.has_connection(alias):
            return alias
        kwargs: dict[str, Any] = {"alias": alias, "uri": uri, "timeout": timeout}
        if token:
            kwargs["token"] = token
        try:
            pm.connections.connect(**kwargs)
        except Exception as exc:
            raise ConfigError(
                f"cannot reach Milvus at {redact_uri(uri)} ({_short(exc)}); start the server, or point sonalign at the right one "
                f"with --milvus-uri / {URI_ENV}"
            ) from None
    return alias


def disconnect_all() -> None:
    """Close every connection this module opened (tests, servers that restart)."""
    pm = _pymilvus()
    with _connect_lock:
        for alias, _ in list(pm.connections.list_connections()):
            if alias.startswith("sonalign-"):
                with contextlib.suppress(Exception):
                    pm.connections.disconnect(alias)
                with contextlib.suppress(Exception):
                    pm.connections.remove_connection(alias)


def collection_name(index_uuid: str, kind: str = "") -> str:
    """``sonalign_<uuid>_<kind>``: one collection per index directory and vector kind ("main", "transcript")."""
    kind = kind or "main"
    safe = re.sub(r"[^a-z0-9_]", lambda m: f"_x{ord(m.group()):02x}_", kind.lower())
    uid = re.sub(r"[^a-zA-Z0-9]", "", str(index_uuid))
    return f"sonalign_{uid}_{safe}"


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def _in_list(ids: np.ndarray) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def prefix_expr(prefix: str) -> str:
    """A Milvus expression for "path starts with ``prefix``" (Milvus matches only ``like "p%"``)."""
    if not prefix:
        raise ValueError("path prefix is empty")
    if "%" in prefix or "\\" in prefix:
        raise ValueError(f"a Milvus path filter cannot express a prefix containing '%' or '\\': {prefix!r}; filter by ids instead")
    return 'path like "' + prefix.replace('"', '\\"') + '%"'


class MilvusIndex:
    """One Milvus collection as a :class:`~sonalign.index.vectors.VectorIndex`; see the module docstring.

    ``MilvusIndex(dim, uri=..., collection=...)`` attaches to the collection if it exists (same dim) or
    starts an empty one that is created on the server at the first :meth:`save`. ``path_lookup`` maps
    ids to file paths for rows added without ``paths`` (the store passes its SQLite lookup).
    ``readonly=True`` never writes to the server (staged changes stay in memory); ``overwrite=True``
    drops an existing collection of that name; ``attach=False`` ignores it (memory only, read-only use).
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
        **_faiss_options: Any,  # hnsw_threshold, compact_ratio: meaningless here
    ):
        if int(dim) <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.uri = normalize_uri(uri or os.environ.get(URI_ENV))
        self.collection_name = str(collection)
        level = (consistency or os.environ.get(CONSISTENCY_ENV) or "commit").strip()
        if level.lower() not in _LEVELS:
            raise ValueError(f"consistency must be one of {sorted(set(_LEVELS.values()))}, got {consistency!r}")
        self.consistency = _LEVELS[level.lower()]
        self.index_type = str(index_type).upper()
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self._ef_search = int(ef_search)
        self.path_lookup = path_lookup
        self.readonly = bool(readonly)
        self.tag: dict[str, Any] | None = None
        self._lock = _RWLock()
        self._alias = connect(self.uri, token)
        self._coll: Any = None
        self._server_count = 0
        self._ts = 0
        self._adds: dict[int, tuple[np.ndarray, str | None]] = {}
        self._removes: set[int] = set()
        self._overlay: tuple[np.ndarray, np.ndarray] | None = None  # (ids, matrix) of staged adds
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
        uri = normalize_uri(options.get("uri") or os.environ.get(URI_ENV))
        alias = connect(uri, options.get("token"))
        pm = _pymilvus()
        if not _call(pm.utility.has_collection, name, using=alias):
            raise FileNotFoundError(f"no Milvus collection {name!r} at {redact_uri(uri)}")
        schema = _call(lambda: pm.Collection(name, using=alias).schema)
        dim = _vector_dim(schema, name)
        return cls(dim, collection=name, **options)

    @classmethod
    def exists(cls, collection: str, *, uri: str | None = None, token: str | None = None) -> bool:
        alias = connect(normalize_uri(uri or os.environ.get(URI_ENV)), token)
        return bool(_call(_pymilvus().utility.has_collection, collection, using=alias))

    def _attach(self) -> None:
        pm = _pymilvus()
        coll = self._call(pm.Collection, self.collection_name, using=self._alias)
        dim = _vector_dim(coll.schema, self.collection_name)
        if dim != self.dim:
            raise IndexCorruptError(f"Milvus collection {self.collection_name!r} holds {dim}-d vectors, not {self.dim}-d")
        if not self._ensure_index(coll):
            return  # read-only and not loadable yet: memory overlay only
        self._call(coll.load)
        self._coll = coll
        record = self._read_record(coll)
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

    @staticmethod
    def _read_record(coll: Any) -> dict[str, Any]:
        try:
            props = _call(coll.describe).get("properties") or {}
            record = json.loads(props.get(TAG_PROPERTY) or "{}")
        except (ValueError, TypeError):
            return {}
        return record if isinstance(record, dict) else {}

    def _write_record(self, record: dict[str, Any]) -> None:
        self._call(self._coll.set_properties, {TAG_PROPERTY: json.dumps(record, sort_keys=True)})

    def server_tag(self) -> dict[str, Any] | None:
        """The tag recorded on the server now (not the one this handle loaded); None if absent."""
        if self._coll is None:
            if not self._call(_pymilvus().utility.has_collection, self.collection_name, using=self._alias):
                return None
            coll = self._call(_pymilvus().Collection, self.collection_name, using=self._alias)
        else:
            coll = self._coll
        tag = self._read_record(coll).get("tag")
        return tag if isinstance(tag, dict) else None

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        return "milvus"

    @property
    def ntotal(self) -> int:
        """Live vectors: the server's (as of open / last save) plus staged adds less staged removes."""
        return self._server_count - len(self._removes) + len(self._adds)

    def __len__(self) -> int:
        return self.ntotal

    @property
    def pending(self) -> int:
        """Staged changes not yet on the server."""
        return len(self._removes) + len(self._adds)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = int(value)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": "milvus",
            "dim": self.dim,
            "ntotal": self.ntotal,
            "metric": "inner_product",
            "uri": redact_uri(self.uri),
            "collection": self.collection_name,
            "index_type": self.index_type,
            "consistency": self.consistency,
            "pending": self.pending,
        }
        if self.index_type == "HNSW":
            d.update(M=self.m, efConstruction=self.ef_construction, efSearch=self._ef_search)
        return d

    # ------------------------------------------------------------------ server calls
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return _call(fn, *args, where=f"{redact_uri(self.uri)} {self.collection_name}", **kwargs)

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

    def _server_has(self, ids: np.ndarray) -> np.ndarray:
        """Those of ``ids`` that are on the server (not counting the overlay)."""
        if self._coll is None or self._server_count == 0 or ids.size == 0:
            return np.zeros(0, np.int64)
        found = []
        for i in range(0, ids.size, IN_CHUNK):
            chunk = ids[i : i + IN_CHUNK]
            rows = self._call(self._coll.query, expr=f"row_id in {_in_list(chunk)}", output_fields=["row_id"], **self._read_kw())
            found.extend(int(r["row_id"]) for r in rows)
        return np.unique(np.asarray(found, np.int64))

    def server_ids(self) -> np.ndarray:
        """Sorted ids on the server (Strong read; staged changes not applied)."""
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

    # ------------------------------------------------------------------ mutation (staged)
    def add(self, ids: Iterable[int] | np.ndarray, vectors: np.ndarray, paths: Iterable[str | None] | None = None) -> None:
        """Stage ``vectors`` under ``ids`` (normalised here); ``paths``: one file path per row (optional)."""
        ids = _as_ids(ids)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}")
        if vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids for {vectors.shape[0]} vectors")
        path_list = None if paths is None else [None if p is None else str(p) for p in paths]
        if path_list is not None and len(path_list) != ids.size:
            raise ValueError(f"{len(path_list)} paths for {ids.size} vectors")
        if ids.size == 0:
            return
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        if ids.min() < 0 or ids.max() >= _ID_LIMIT:
            raise ValueError("ids must be in 0 .. 2**62")
        if np.unique(ids).size != ids.size:
            raise ValueError("duplicate ids in one add()")
        x = normalize(vectors)
        with self._lock.write():
            dup = [int(i) for i in ids if int(i) in self._adds]
            if not dup:
                candidates = np.array([i for i in ids.tolist() if i not in self._removes], np.int64)
                dup = self._server_has(candidates).tolist()
            if dup:
                raise ValueError(f"ids already in the index: {dup[:5]}")
            for j, i in enumerate(ids.tolist()):
                self._adds[i] = (x[j], None if path_list is None else path_list[j])
            self._overlay = None

    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Stage the removal of ``ids`` (unknown ids are ignored); returns how many were live."""
        ids = np.unique(_as_ids(ids))
        if ids.size == 0:
            return 0
        with self._lock.write():
            n = 0
            rest = []
            for i in ids.tolist():
                if i in self._adds:
                    del self._adds[i]
                    n += 1
                    self._overlay = None
                elif i not in self._removes:
                    rest.append(i)
            on_server = self._server_has(np.asarray(rest, np.int64))
            self._removes.update(on_server.tolist())
            return n + int(on_server.size)

    def discard(self) -> None:
        """Drop the staged changes (back to the server's state)."""
        with self._lock.write():
            self._adds, self._removes, self._overlay = {}, set(), None

    def ids(self) -> np.ndarray:
        """Sorted live ids: the server's (Strong read) with the staged changes applied."""
        with self._lock.read():
            server = self.server_ids()
            if self._removes:
                server = np.setdiff1d(server, np.fromiter(self._removes, np.int64, len(self._removes)), assume_unique=True)
            if self._adds:
                server = np.union1d(server, np.fromiter(self._adds, np.int64, len(self._adds)))
            return server

    def reconstruct(self, ids: Iterable[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found_ids, vectors)`` for those of ``ids`` that are live (normalised vectors, sorted by id)."""
        ids = np.unique(_as_ids(ids))
        out: dict[int, np.ndarray] = {}
        with self._lock.read():
            server = np.array([i for i in ids.tolist() if i not in self._adds and i not in self._removes], np.int64)
            if server.size and self._coll is not None:
                for i in range(0, server.size, IN_CHUNK):
                    rows = self._call(self._coll.query, expr=f"row_id in {_in_list(server[i : i + IN_CHUNK])}", output_fields=["row_id", "vec"], **self._read_kw())
                    out.update({int(r["row_id"]): np.asarray(r["vec"], np.float32) for r in rows})
            out.update({i: self._adds[i][0] for i in ids.tolist() if i in self._adds})
        found = np.array(sorted(out), np.int64)
        return found, (np.stack([out[int(i)] for i in found]) if found.size else np.zeros((0, self.dim), np.float32))

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path | None = None, tag: dict[str, Any] | None = None) -> None:
        """Apply the staged changes on the server, then record ``tag`` (``path`` is not used: the
        collection is the storage). Safe to repeat after a failure: deletes and upserts are idempotent."""
        if self.readonly:
            raise PermissionError(f"Milvus collection {self.collection_name!r} opened read-only")
        with self._lock.write():
            if self._coll is None:
                self._create()
            ts = self._ts
            if self._adds or self._removes:
                self._write_record({"state": "writing", "ts": ts})
                removes = np.fromiter(sorted(self._removes), np.int64, len(self._removes))
                for i in range(0, removes.size, IN_CHUNK):
                    self._call(self._coll.delete, f"row_id in {_in_list(removes[i : i + IN_CHUNK])}")
                ids = np.fromiter(sorted(self._adds), np.int64, len(self._adds))
                paths = self._paths(ids)
                step = max(1, min(IN_CHUNK, WRITE_BYTES // (4 * self.dim + 64)))
                last_upsert = 0
                for i in range(0, ids.size, step):
                    chunk = ids[i : i + step]
                    vecs = np.stack([self._adds[int(r)][0] for r in chunk])
                    res = self._call(self._coll.upsert, [chunk.tolist(), [paths[int(r)] for r in chunk], vecs])
                    last_upsert = int(res.timestamp)
                self._server_count += ids.size - removes.size
                self._adds, self._removes, self._overlay = {}, set(), None
                # A timestamp after every mutation above: reads guaranteed at it see them all. (Milvus
                # 2.3 returns no timestamp for deletes, so the last upsert's is not enough.)
                ts = self._alloc_ts() or (last_upsert if removes.size == 0 else 0)
                self._ts = ts
            self._write_record({"tag": dict(tag or {}), "ts": ts})
        self.tag = dict(tag or {})

    flush = save

    def _paths(self, ids: np.ndarray) -> dict[int, str]:
        out = {int(i): self._adds[int(i)][1] for i in ids}
        need = np.array([i for i, p in out.items() if p is None], np.int64)
        if need.size and self.path_lookup is not None:
            for i in range(0, need.size, 10_000):
                out.update({int(k): v for k, v in self.path_lookup(need[i : i + 10_000]).items()})
        return {i: _clip_path(p) for i, p in out.items()}

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
        """Delete the collection on the server (and forget staged changes)."""
        if self.readonly:
            raise PermissionError(f"Milvus collection {self.collection_name!r} opened read-only")
        with self._lock.write():
            pm = _pymilvus()
            if self._call(pm.utility.has_collection, self.collection_name, using=self._alias):
                self._call(pm.utility.drop_collection, self.collection_name, using=self._alias)
            self._coll, self._server_count, self._ts = None, 0, 0
            self._adds, self._removes, self._overlay = {}, set(), None
            self.tag = None

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: np.ndarray | None = None,
        *,
        expr: str | None = None,
        path_prefix: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` of shape ``(nq, k)`` by inner product of normalised vectors.

        ``allowed_ids`` restricts the candidates; ``path_prefix`` keeps rows whose path starts with it;
        ``expr`` is any Milvus boolean expression over ``row_id`` and ``path`` (not evaluated on staged
        adds: :meth:`save` first). Padded with ``-inf`` / ``-1`` when fewer than ``k`` qualify.
        """
        q, k = check_queries(queries, self.dim, k)
        nq = q.shape[0]
        filters = []
        if path_prefix is not None:
            filters.append(prefix_expr(path_prefix))
        if expr:
            filters.append(f"({expr})")
        with self._lock.read():
            if self.ntotal == 0:
                return _empty(nq, k)
            allowed = None
            if allowed_ids is not None:
                allowed = np.unique(_as_ids(allowed_ids))
                if allowed.size == 0:
                    return _empty(nq, k)
            parts = []
            o_ids, o_x = self._overlay_arrays()
            if o_ids.size:
                if expr:
                    raise ValueError("a raw Milvus expression cannot filter staged (unsaved) vectors: save() first")
                keep = np.ones(o_ids.size, bool)
                if allowed is not None:
                    keep &= np.isin(o_ids, allowed)
                if path_prefix is not None:
                    paths = self._paths(o_ids[keep]) if keep.any() else {}
                    keep[keep] = [paths.get(int(i), "").startswith(path_prefix) for i in o_ids[keep]]
                if keep.any():
                    parts.append(_exact(q, o_ids[keep], o_x[keep], k))
            if self._coll is not None and self._server_count > 0:
                excluded = set(self._removes) | set(self._adds)
                if allowed is not None:
                    server_allowed = allowed if not excluded else np.setdiff1d(allowed, np.fromiter(excluded, np.int64, len(excluded)), assume_unique=True)
                    for i in range(0, server_allowed.size, IN_CHUNK):
                        chunk = server_allowed[i : i + IN_CHUNK]
                        parts.append(self._server_search(q, min(k, chunk.size), [f"row_id in {_in_list(chunk)}", *filters]))
                else:
                    extra = list(filters)
                    if excluded:
                        extra.append(f"row_id not in {_in_list(np.array(sorted(excluded), np.int64))}")
                    parts.append(self._server_search(q, k, extra))
        if not parts:
            return _empty(nq, k)
        return _merge(parts, k)

    def _server_search(self, q: np.ndarray, k: int, filters: list[str]) -> tuple[np.ndarray, np.ndarray]:
        kk = min(int(k), MAX_TOPK)
        param: dict[str, Any] = {"metric_type": "IP", "params": {}}
        if self.index_type == "HNSW":
            param["params"] = {"ef": int(min(MAX_EF, max(self._ef_search, kk)))}
        elif self.index_type.startswith("IVF"):
            param["params"] = {"nprobe": 64}
        expr = " and ".join(filters) if filters else None
        scores = np.full((q.shape[0], kk), -np.inf, np.float32)
        labels = np.full((q.shape[0], kk), -1, np.int64)
        for start in range(0, q.shape[0], MAX_NQ):
            block = q[start : start + MAX_NQ]
            res = self._call(self._coll.search, block, "vec", param, limit=kk, expr=expr, output_fields=[], **self._read_kw())
            for j, hits in enumerate(res):
                n = len(hits.ids)
                labels[start + j, :n] = hits.ids
                scores[start + j, :n] = hits.distances
        return scores, labels

    def _overlay_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._overlay is None:
            if self._adds:
                ids = np.fromiter(self._adds, np.int64, len(self._adds))
                x = np.stack([v for v, _ in self._adds.values()])
            else:
                ids, x = np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
            self._overlay = (ids, x)
        return self._overlay


# ---------------------------------------------------------------------- the store's backend
class MilvusBackend:
    """What :class:`~sonalign.index.store.IndexStore` needs to keep its vector kinds in Milvus.

    One collection per vector kind, named after the index's uuid (:func:`collection_name`), so two
    index directories never share one. The store records ``{"name": "milvus", "uri": ...}`` in its
    meta; ``SONALIGN_MILVUS_URI`` (or the ``uri`` given to ``IndexStore.open``) overrides the recorded
    address for a server that moved.
    """

    name = "milvus"

    def __init__(self, uri: str | None, index_uuid: str, *, readonly: bool = False, path_lookup: Callable[[np.ndarray], Mapping[int, str]] | None = None,
                 options: Mapping[str, Any] | None = None):
        self.uri = normalize_uri(uri or os.environ.get(URI_ENV))
        self.index_uuid = str(index_uuid)
        self.readonly = readonly
        self.path_lookup = path_lookup
        self.options = {k: v for k, v in (options or {}).items() if k in ("ef_search", "consistency", "index_type", "m", "ef_construction") and v is not None}
        connect(self.uri)

    def collection(self, name: str) -> str:
        return collection_name(self.index_uuid, name)

    def load(self, name: str, dim: int) -> MilvusIndex | None:
        """The kind's collection, or None if the server has none."""
        coll = self.collection(name)
        if not MilvusIndex.exists(coll, uri=self.uri):
            return None
        index = MilvusIndex(dim, uri=self.uri, collection=coll, readonly=self.readonly, path_lookup=self.path_lookup, **self.options)
        if index.tag is None:
            # No valid tag (never saved, or a save killed half-way): the collection is still this
            # index's (its name holds the uuid), so the store repairs it by set difference rather
            # than dropping it: an unknown generation forces that.
            index.tag = {"index_uuid": self.index_uuid, "generation": -1}
        return index

    def new(self, name: str, dim: int) -> MilvusIndex:
        """An empty index for the kind: a writer drops whatever collection of that name was left; a
        reader never touches the server (memory only, brought up to date from SQLite by the store)."""
        return MilvusIndex(dim, uri=self.uri, collection=self.collection(name), readonly=self.readonly, overwrite=not self.readonly,
                           attach=False, path_lookup=self.path_lookup, **self.options)

    def tag(self, name: str) -> dict[str, Any] | None:
        """The tag the server holds now for the kind (None when absent or mid-write)."""
        pm = _pymilvus()
        coll = self.collection(name)
        alias = connect(self.uri)
        if not _call(pm.utility.has_collection, coll, using=alias):
            return None
        tag = MilvusIndex._read_record(_call(pm.Collection, coll, using=alias)).get("tag")
        return tag if isinstance(tag, dict) else None

    def drop_all(self) -> int:
        """Drop every collection of this index (``--rebuild``); returns how many."""
        pm = _pymilvus()
        alias = connect(self.uri)
        prefix = collection_name(self.index_uuid, "x")[: -len("x")]
        names = [n for n in _call(pm.utility.list_collections, using=alias) if n.startswith(prefix)]
        for n in names:
            _call(pm.utility.drop_collection, n, using=alias)
        return len(names)


BACKENDS = ("faiss", "milvus")
META_KEY = "vector_backend"


def open_backend(store: Any, backend: str | None = None, uri: str | None = None, previous: Mapping[str, Any] | None = None) -> MilvusBackend | None:
    """The store's vector backend: None for faiss files (the default), a :class:`MilvusBackend` when
    the index records ``{"name": "milvus", "uri": ...}`` in its meta ``vector_backend``.

    ``backend``/``uri`` given when the index is new record them (``previous``: what a ``--rebuild``
    deleted, kept unless ``backend`` says otherwise). On later opens ``backend`` must match; ``uri``
    (else ``SONALIGN_MILVUS_URI``) overrides the recorded address for this open only.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown vector backend {backend!r} (one of {', '.join(BACKENDS)})")
    db = store.db
    record = db.get_meta(META_KEY)
    if record is None:
        fresh = db.counts()["segments"] == 0 and not any(Path(store.path).glob("vectors*.faiss"))
        wanted = backend or (previous or {}).get("name") or "faiss"
        if wanted == "milvus":
            if not fresh:
                raise ConfigError(f"{store.path}: index holds faiss vectors; rebuild it to move it to Milvus (--rebuild --backend milvus)")
            if store.readonly:
                raise ConfigError(f"{store.path}: a read-only open cannot switch the index to Milvus")
            record = {"name": "milvus", "uri": normalize_uri(uri or (previous or {}).get("uri") or os.environ.get(URI_ENV))}
            db.set_meta(META_KEY, record)
            store._bump_and_commit()
    name = (record or {}).get("name", "faiss")
    if backend is not None and backend != name:
        raise ConfigError(f"{store.path}: index uses the {name} backend, not {backend}; rebuild it to switch (--rebuild --backend {backend})")
    if name != "milvus":
        return None

    def paths(ids: np.ndarray) -> dict[int, str]:
        return {int(r): seg.path for r, seg in db.segments_by_row_ids([int(i) for i in ids]).items()}

    return MilvusBackend(uri or os.environ.get(URI_ENV) or record.get("uri"), db.get_meta("index_uuid"), readonly=store.readonly, path_lookup=paths,
                         options=store._options)


def drop_for_rebuild(db_path: str | Path, uri: str | None = None) -> dict[str, Any] | None:
    """Before ``--rebuild`` deletes an index: drop its Milvus collections. Returns its backend record
    (None for faiss or an unreadable index). A server that cannot be reached leaves them (named after
    the old uuid, they cannot be mistaken for the new index's)."""
    from sonalign.index.metadata import MetadataDB

    try:
        db = MetadataDB(db_path, readonly=True)
        try:
            record, uid = db.get_meta(META_KEY), db.get_meta("index_uuid")
        finally:
            db.close()
    except Exception:
        return None
    if not isinstance(record, dict) or record.get("name") != "milvus":
        return None
    with contextlib.suppress(Exception):
        if uid:
            MilvusBackend(uri or os.environ.get(URI_ENV) or record.get("uri"), uid).drop_all()
    return record


def _vector_dim(schema: Any, name: str) -> int:
    fields = {f.name: f for f in schema.fields}
    vec, rid, path = fields.get("vec"), fields.get("row_id"), fields.get("path")
    if vec is None or rid is None or path is None or not getattr(rid, "is_primary", False):
        raise IndexCorruptError(f"Milvus collection {name!r} is not a sonalign collection (fields {sorted(fields)})")
    return int(vec.params.get("dim"))


def _call(fn: Callable[..., Any], *args: Any, where: str = "", **kwargs: Any) -> Any:
    """Call pymilvus; its exceptions become one-line ConfigErrors naming the server."""
    pm = _pymilvus()
    try:
        return fn(*args, **kwargs)
    except pm.exceptions.MilvusException as exc:
        raise ConfigError(f"Milvus{(' ' + where) if where else ''}: {_short(exc)}") from None


def _clip_path(path: str | None) -> str:
    text = path or ""
    data = text.encode("utf-8")
    if len(data) <= PATH_MAX_LENGTH:
        return text
    return data[:PATH_MAX_LENGTH].decode("utf-8", "ignore")


def _exact(q: np.ndarray, ids: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ x.T
    kk = min(k, ids.size)
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    return np.take_along_axis(sims, top, axis=1), ids[top]


def _merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([np.asarray(s, np.float32) for s, _ in parts], axis=1)
    labels = np.concatenate([np.asarray(i, np.int64) for _, i in parts], axis=1)
    scores = np.where(labels < 0, -np.inf, scores)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return _pad(np.take_along_axis(scores, order, axis=1), np.take_along_axis(labels, order, axis=1), k)


__all__ = ["MilvusBackend", "MilvusIndex", "collection_name", "connect", "drop_for_rebuild", "normalize_uri", "open_backend", "prefix_expr"]
