"""Where an index keeps things: the files of its directory, the storage of its vector copies, the writer's lock.

Layout of a directory ``IDX``::

    meta.sqlite                 source of truth: recordings, segments, every vector (float32 BLOBs), meta
    vectors.faiss               derived: faiss index of the segments' vectors (ids = segments.row_id)
    vectors.<name>.faiss        derived: one per extra vector kind (e.g. vectors.transcript.faiss)
    manifest.json               informational: model, dim, index type, counts, generation
    .writer.lock                flock held by the one writer

With the Milvus backend the ``vectors*.faiss`` files are replaced by collections on a Milvus server
(:class:`~sonalign.index.milvus.MilvusCollections`); the index records which backend it uses in its
meta ``vector_backend`` (``{"name": "milvus", "uri": ...}``; absent for faiss).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import ConfigError, StorageError
from sonalign.index.backend import VectorBackend, VectorStorage
from sonalign.index.metadata import MetadataDB
from sonalign.index.milvus import MILVUS_OPTIONS, MilvusIndex, collection_tag
from sonalign.index.milvus_client import (
    URI_ENV,
    collection_name,
    connect,
    drop_collections,
    server_uri,
)
from sonalign.index.vector_file import file_tag
from sonalign.index.vectors import FaissIndex

DB_FILE = "meta.sqlite"
VECTOR_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".writer.lock"
BACKENDS = ("faiss", "milvus")
BACKEND_META = "vector_backend"


class FaissFiles:
    """The store's :class:`~sonalign.index.backend.VectorStorage` in faiss files: ``vectors.faiss``
    for the main vectors, ``vectors.<kind>.faiss`` for each extra kind."""

    name = "faiss"
    server_side = False

    def __init__(self, path: Path, options: Mapping[str, Any]):
        self.path = path
        self.options = dict(options)

    def file(self, kind: str) -> Path:
        return self.path / (VECTOR_FILE if kind == "" else f"vectors.{kind}.faiss")

    def load(self, kind: str, dim: int) -> FaissIndex | None:
        file = self.file(kind)
        return FaissIndex.load(file, require_footer=True, **self.options) if file.exists() else None

    def new(self, kind: str, dim: int) -> FaissIndex:
        return FaissIndex(dim, **self.options)

    def saved_tag(self, kind: str) -> dict[str, Any] | None:
        return file_tag(self.file(kind))

    def save(self, kind: str, index: VectorBackend, tag: dict[str, Any]) -> None:
        assert isinstance(index, FaissIndex), "faiss files hold faiss indexes"
        index.save(self.file(kind), tag=tag)


class MilvusCollections:
    """The store's :class:`~sonalign.index.backend.VectorStorage` on Milvus: one collection per vector
    kind, named after the index's uuid (:func:`~sonalign.index.milvus_client.collection_name`), so two
    index directories never share one. A read-only store never writes to the server: where a
    collection lags ``meta.sqlite`` it searches an in-memory faiss copy instead (:meth:`new`)."""

    name = "milvus"
    server_side = True

    def __init__(self, uri: str | None, index_uuid: str, *, readonly: bool = False, path_lookup: Callable[[np.ndarray], Mapping[int, str]] | None = None,
                 options: Mapping[str, Any] | None = None):
        self.uri = server_uri(uri)
        self.index_uuid = str(index_uuid)
        self.readonly = readonly
        self.path_lookup = path_lookup
        self.options = {k: v for k, v in (options or {}).items() if v is not None}
        connect(self.uri)

    def collection(self, kind: str) -> str:
        return collection_name(self.index_uuid, kind)

    def _open(self, kind: str, dim: int, **how: Any) -> MilvusIndex:
        milvus_options = {k: v for k, v in self.options.items() if k in MILVUS_OPTIONS}
        return MilvusIndex(dim, uri=self.uri, collection=self.collection(kind), readonly=self.readonly, path_lookup=self.path_lookup, **milvus_options, **how)

    def load(self, kind: str, dim: int) -> MilvusIndex | None:
        """The kind's collection, or None if the server has none."""
        if not MilvusIndex.exists(self.collection(kind), uri=self.uri):
            return None
        index = self._open(kind, dim)
        if index.tag is None:
            # No valid tag (never saved, or an apply killed half-way): the collection is still this
            # index's (its name holds the uuid), so the store repairs it by set difference rather
            # than dropping it: an unknown generation forces that.
            index.tag = {"index_uuid": self.index_uuid, "generation": -1}
        return index

    def new(self, kind: str, dim: int) -> VectorBackend:
        """An empty copy of the kind: a writer's drops whatever collection of that name was left; a
        reader's is a faiss index in memory (brought up to date from SQLite by the store)."""
        if self.readonly:
            return FaissIndex(dim, **{k: v for k, v in self.options.items() if k in ("hnsw_threshold", "ef_search")})
        return self._open(kind, dim, overwrite=True, attach=False)

    def saved_tag(self, kind: str) -> dict[str, Any] | None:
        """The tag the server holds now for the kind (None when absent or mid-write)."""
        return collection_tag(self.uri, self.collection(kind))

    def save(self, kind: str, index: VectorBackend, tag: dict[str, Any]) -> None:
        assert isinstance(index, MilvusIndex), "a writer's copies are collections"
        index.save(tag)


def choose_backend(db: MetadataDB, path: Path, *, readonly: bool, backend: str | None, uri: str | None,
                   previous: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The index's backend record (None: faiss files), recording a new index's choice in the open transaction.

    ``backend``/``uri`` given when the index is new record them (``previous``: what a ``--rebuild``
    deleted, kept unless ``backend`` says otherwise). On later opens ``backend`` must match.
    """
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"unknown vector backend {backend!r} (one of {', '.join(BACKENDS)})")
    record = db.get_meta(BACKEND_META)
    if record is None and (backend or (previous or {}).get("name") or "faiss") == "milvus":
        if db.counts()["segments"] or any(path.glob("vectors*.faiss")):
            raise ConfigError(f"{path}: index holds faiss vectors; rebuild it to move it to Milvus (--rebuild --backend milvus)")
        if readonly:
            raise ConfigError(f"{path}: a read-only open cannot switch the index to Milvus")
        record = {"name": "milvus", "uri": server_uri(uri or (previous or {}).get("uri"))}
        db.set_meta(BACKEND_META, record)
    name = (record or {}).get("name", "faiss")
    if backend is not None and backend != name:
        raise ConfigError(f"{path}: index uses the {name} backend, not {backend}; rebuild it to switch (--rebuild --backend {backend})")
    return record


def open_storage(record: Mapping[str, Any] | None, path: Path, db: MetadataDB, *, readonly: bool, uri: str | None,
                 options: Mapping[str, Any]) -> VectorStorage:
    """The storage the backend ``record`` names. For Milvus, ``uri`` (else ``SONALIGN_MILVUS_URI``)
    overrides the recorded address for this open only (a server that moved)."""
    if not record or record.get("name") != "milvus":
        return FaissFiles(path, options)
    return MilvusCollections(uri or os.environ.get(URI_ENV) or record.get("uri"), db.get_meta("index_uuid"), readonly=readonly,
                             path_lookup=_path_lookup(db), options=options)


def _path_lookup(db: MetadataDB) -> Callable[[np.ndarray], dict[int, str]]:
    def paths(ids: np.ndarray) -> dict[int, str]:
        return {int(r): seg.path for r, seg in db.segments_by_row_ids([int(i) for i in ids]).items()}

    return paths


def drop_for_rebuild(db_path: Path, uri: str | None) -> dict[str, Any] | None:
    """Before ``--rebuild`` deletes an index: drop its Milvus collections. Returns its backend record
    (None for faiss or an unreadable index). A server that cannot be reached leaves them (named after
    the old uuid, they cannot be mistaken for the new index's)."""
    try:
        db = MetadataDB(db_path, readonly=True)
        try:
            record, uid = db.get_meta(BACKEND_META), db.get_meta("index_uuid")
        finally:
            db.close()
    except Exception:
        return None
    if not isinstance(record, dict) or record.get("name") != "milvus":
        return None
    with contextlib.suppress(Exception):
        if uid:
            drop_collections(uri or os.environ.get(URI_ENV) or record.get("uri"), uid)
    return record


def acquire_lock(path: Path, timeout: float) -> Any:
    handle = open(path, "a+")  # noqa: SIM115 - kept open while the store is
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise StorageError(f"{path.parent}: another process is writing this index (lock {path.name} held for over {timeout:g} s); "
                                   "run again once it has finished, or stop it") from None
            time.sleep(0.05)


def release_lock(handle: Any) -> None:
    if handle is None:
        return
    with contextlib.suppress(Exception):
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    with contextlib.suppress(Exception):
        handle.close()


def delete_index_files(path: Path) -> None:
    # The WAL goes before its database: a new database must never meet an old WAL.
    for name in (DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal", DB_FILE, MANIFEST_FILE):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()
    for file in path.glob("vectors*.faiss"):
        file.unlink()
    for file in path.glob(".*.tmp"):
        file.unlink()


__all__ = ["DB_FILE", "LOCK_FILE", "MANIFEST_FILE", "VECTOR_FILE", "FaissFiles", "MilvusCollections", "choose_backend", "drop_for_rebuild", "open_storage"]
