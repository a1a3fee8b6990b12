"""``IndexStore``: an index directory that survives ``kill -9`` at any moment.

``meta.sqlite`` is the source of truth: recordings, segments and every vector. Each vector kind is
searched through a copy of its vectors (faiss files, or Milvus collections): see
:mod:`sonalign.index.layout` for the files and :mod:`sonalign.index.backend` for the contract.

Crash-consistency design:
* Every change (``upsert_recording``, ``remove_recording``) goes into one SQLite transaction (WAL,
  ``synchronous=FULL``); each upsert is a savepoint inside it, so a failing upsert undoes only itself.
  ``commit()`` bumps the ``generation`` number, records for each changed vector kind the generation it
  was last changed in (meta ``vector_generations``) and commits: that is the only moment the index
  changes. A kill before it leaves the previous state, a kill after it the new one.
* The vector copies change only after that commit: the rows a transaction added and removed are
  gathered and then applied to each kind's copy (so every search of the store, its own writer's
  included, sees committed states only; a rollback just forgets them).
* A faiss vector file is a snapshot: after the SQLite commit, a changed copy is written atomically
  (temp file, fsync, ``os.replace``) with a footer holding ``{index_uuid, generation}`` and a CRC-32,
  then the manifest. Not at every commit: only once the rows changed since the file was written exceed
  ``SNAPSHOT_RATIO`` of the rows it holds (so the bytes written over a build stay proportional to its
  size, not its square), and when a writer closes. Between snapshots, and after a kill between the
  steps, a vector file's tag is older than SQLite says: that is normal, not damage. A Milvus collection
  gets each commit's rows at once, then its tag.
* On open, each copy is checked against SQLite: missing, of another index (uuid), or of an older
  generation → it is brought up to date from SQLite. Row ids are ``AUTOINCREMENT`` (never reused), so
  a row id names one immutable vector and the repair is a set difference: remove the ids SQLite no
  longer has, add the ones the copy lacks (reading their BLOBs). The result is saved back (writer) or
  kept in memory (read-only opener): no segment is lost or duplicated, no file ever torn.
* A damaged file (garbage, truncated, bad checksum) is not silently replaced: ``IndexCorruptError``
  names it and says how to rebuild (``sonalign index DIR --out IDX --rebuild``). A damaged vector file
  can also be regenerated from ``meta.sqlite`` with ``IndexStore.open(IDX, repair=True)``.

Readers (the web server) open with ``readonly=True``: SQLite's WAL lets them read while a writer works, and
:meth:`IndexStore.refresh` brings their copies up to the writer's commits.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import ConfigError, IndexCorruptError
from sonalign.index.backend import VectorBackend
from sonalign.index.copies import SNAPSHOT_RATIO, VectorCopies
from sonalign.index.layout import (
    DB_FILE,
    LOCK_FILE,
    MANIFEST_FILE,
    acquire_lock,
    choose_backend,
    delete_index_files,
    drop_for_rebuild,
    open_storage,
    release_lock,
)
from sonalign.index.metadata import REBUILD_HINT, MetadataDB, RecordingRow, SegmentRow
from sonalign.index.records import RecordingInfo, prepare_upsert
from sonalign.index.vectors import DEFAULT_HNSW_THRESHOLD
from sonalign.segments import Segment
from sonalign.utils.atomic import atomic_write_text

FORMAT_VERSION = 1
_MANAGED_META = {"index_uuid", "generation", "vector_generations", "extra_dims", "format_version", "schema_version", "dim", "vector_backend"}
_NO_IDS = np.zeros(0, np.int64)


class IndexStore:
    """An index directory: SQLite metadata + vectors, searchable copies derived from them. Use :meth:`open`."""

    def __init__(self, path: Path, db: MetadataDB, copies: VectorCopies, *, readonly: bool, lock: Any):
        self.path = path
        self.db = db
        self.readonly = readonly
        self._copies = copies
        self._lock_handle = lock
        self._closed = False

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | Path,
        create: bool = False,
        *,
        readonly: bool = False,
        rebuild: bool = False,
        repair: bool = False,
        model: str | None = None,
        dim: int | None = None,
        settings: dict[str, Any] | None = None,
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        ef_search: int | None = None,
        lock_timeout: float = 10.0,
        backend: str | None = None,
        uri: str | None = None,
        snapshot_ratio: float = SNAPSHOT_RATIO,
    ) -> "IndexStore":
        """Open (or with ``create=True`` make) the index directory ``path``.

        ``rebuild=True`` deletes an existing index there first (also a damaged one). ``repair=True``
        regenerates damaged vector files from ``meta.sqlite``. ``model``/``dim`` are recorded on creation
        and checked on later opens (a mismatch raises ``ConfigError``). ``readonly=True`` never writes.
        ``backend="milvus"`` with ``uri`` keeps the vectors in a Milvus server instead of faiss files
        (recorded when the index is new; ``uri`` or ``SONALIGN_MILVUS_URI`` overrides the recorded
        address later): see :mod:`sonalign.index.milvus`. ``snapshot_ratio``: how much may change before a
        commit rewrites a vector file (:data:`SNAPSHOT_RATIO`; 0 rewrites the changed files at every commit).
        """
        path = Path(path)
        if readonly and (create or rebuild or repair):
            raise ValueError("a read-only open cannot create, rebuild or repair")
        db_path = path / DB_FILE
        if path.exists() and not path.is_dir():
            raise IndexCorruptError(f"{path}: is a file, not an index directory; {REBUILD_HINT}")
        if not db_path.exists() and not (create or rebuild):
            if path.is_dir() and any(path.glob("vectors*.faiss")):
                raise IndexCorruptError(f"{db_path}: missing (the vector files alone cannot be used); {REBUILD_HINT}")
            raise FileNotFoundError(f"{path}: no sonalign index here (make one with `sonalign index DIR --out {path}`)")
        lock = None
        if not readonly:
            path.mkdir(parents=True, exist_ok=True)
            lock = acquire_lock(path / LOCK_FILE, lock_timeout)
        try:
            previous = None
            if rebuild:
                if db_path.exists():
                    previous = drop_for_rebuild(db_path, uri)
                delete_index_files(path)
                create = True
            db = MetadataDB(db_path, create=create, readonly=readonly)
            try:
                _init_meta(db, path, readonly=readonly, model=model, dim=dim, settings=settings)
                record = choose_backend(db, path, readonly=readonly, backend=backend, uri=uri, previous=previous)
                if db.in_transaction:
                    _bump_and_commit(db)
                storage = open_storage(record, path, db, readonly=readonly, uri=uri, options={"hnsw_threshold": hnsw_threshold, "ef_search": ef_search})
                copies = VectorCopies(db, storage, readonly=readonly, snapshot_ratio=snapshot_ratio)
                copies.load(repair=repair)
                store = cls(path, db, copies, readonly=readonly, lock=lock)
                if not readonly and (copies.save_behind() or not (path / MANIFEST_FILE).exists()):
                    store._write_manifest()
            except BaseException:
                db.close()
                raise
        except BaseException:
            release_lock(lock)
            raise
        return store

    # ------------------------------------------------------------------ writing
    def _check_writable(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path}: index store is closed")
        if self.readonly:
            raise PermissionError(f"{self.path}: index opened read-only")

    def upsert_recording(
        self,
        rec_info: RecordingInfo | Mapping[str, Any] | Any,
        segments: Sequence[Segment],
        vectors: np.ndarray,
        transcripts: Sequence[str | None] | None = None,
        extra_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Add a recording, replacing whatever the index held for the same path. Returns the row ids.

        ``vectors``: ``(len(segments), dim)`` float32 (normalised here). ``transcripts``: one text or None
        per segment (defaults to ``segment.text``). ``extra_vectors``: ``{name: (len(segments), d_name)}``;
        a row that is all-NaN or all-zero means "this segment has none" (e.g. no transcript vector for a
        non-speech segment). A segment's ``custom["kind"]`` (default ``"audio"``) is stored as its kind.
        Takes effect in the open transaction: call :meth:`commit` to make it durable.
        """
        self._check_writable()
        up = prepare_upsert(rec_info, segments, vectors, transcripts, extra_vectors, dim=self.dim, extra_dims=self.db.get_meta("extra_dims") or {})
        info, n = up.info, len(up.rows)
        with self.db.savepoint():
            clash = self.db.recording(up.recording_id)
            if clash is not None and clash.path != info.path:
                raise ValueError(f"{info.path}: recording id {up.recording_id!r} already names {clash.path!r}; give each file a distinct recording id")
            old = self.db.recording_by_path(info.path)
            removed, removed_extra = (_NO_IDS, {}) if old is None else self.db.delete_recording(old.id)
            self.db.insert_recording(up.recording_id, info.path, info.content_hash, info.duration, info.sample_rate, time.time(), info.custom)
            try:
                row_ids = self.db.insert_segments(up.rows, up.vectors)
            except Exception as exc:  # sqlite3.IntegrityError: a segment id used by another recording
                if "UNIQUE" in str(exc):
                    raise ValueError(f"{info.path}: a segment id is already used by another recording ({exc})") from None
                raise
            if n and self.dim is None:
                self.db.set_meta("dim", int(up.vectors.shape[1]))
            dims = self.db.get_meta("extra_dims") or {}
            for name, (mask, extra) in up.extras.items():
                if name not in dims:
                    dims[name] = int(extra.shape[1])
                    self.db.set_meta("extra_dims", dims)
                if mask.any():
                    self.db.insert_extra_vectors(name, row_ids[mask], extra)
        if n or removed.size:
            self._copies.stage("", removed, row_ids, up.vectors)
        for name in set(removed_extra) | set(up.extras):
            mask, extra = up.extras.get(name, (np.zeros(n, bool), None))
            self._copies.stage(name, removed_extra.get(name, _NO_IDS), row_ids[mask], extra)
        return row_ids

    def remove_recording(self, path: str | os.PathLike[str]) -> bool:
        """Remove the recording stored for ``path`` (and its segments and vectors); False if none."""
        self._check_writable()
        with self.db.savepoint():
            old = self.db.recording_by_path(os.fspath(path))
            if old is None:
                return False
            removed, removed_extra = self.db.delete_recording(old.id)
        if removed.size:
            self._copies.stage("", removed)
        for name, ids in removed_extra.items():
            self._copies.stage(name, ids)
        return True

    def set_meta(self, key: str, value: Any) -> None:
        """Record a setting (JSON-serialisable) in the open transaction, e.g. segmenter parameters."""
        self._check_writable()
        if key in _MANAGED_META:
            raise ValueError(f"meta key {key!r} is managed by the store")
        self.db.set_meta(key, value)

    def commit(self) -> None:
        """Make every change since the last commit durable, then apply it to the vector copies.

        A changed vector file is rewritten only once enough has changed since it was last written
        (:data:`SNAPSHOT_RATIO`): until then it keeps its older generation's tag, and whoever opens it
        brings it up to date from SQLite. So the bytes a commit writes do not grow with the index.
        """
        self._check_writable()
        if not self.db.in_transaction:
            return
        vgens = _bump_and_commit(self.db, self._copies.changed_kinds())
        if self._copies.committed(vgens):
            self._write_manifest()

    def rollback(self) -> None:
        """Drop every change since the last commit."""
        self._check_writable()
        self.db.rollback()
        self._copies.discard()

    def close(self) -> None:
        """Close without committing (an open transaction is rolled back). A writer first saves the
        vector copies its commits left behind, so that readers open them without catching up (one
        snapshot per writing session: cheaper than every later open replaying, say, HNSW inserts)."""
        if self._closed:
            return
        try:
            if not self.readonly:
                with contextlib.suppress(Exception):
                    self.db.rollback()
                self._copies.discard()
                self._copies.save_behind()
                self._write_manifest()
        finally:
            self._closed = True
            self.db.close()
            release_lock(self._lock_handle)
            self._lock_handle = None

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and not self.readonly and not self._closed:
                self.commit()
        finally:
            self.close()

    def _write_manifest(self) -> None:
        atomic_write_text(self.path / MANIFEST_FILE, json.dumps(self.stats(), indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ reading
    @property
    def dim(self) -> int | None:
        value = self.db.get_meta("dim")
        return None if value is None else int(value)

    @property
    def model(self) -> str | None:
        return self.db.get_meta("model")

    @property
    def settings(self) -> dict[str, Any]:
        return self.db.get_meta("settings") or {}

    @property
    def generation(self) -> int:
        return int(self.db.get_meta("generation") or 0)

    def meta(self) -> dict[str, Any]:
        return self.db.all_meta()

    def index(self, name: str | None = None) -> VectorBackend | None:
        """The searchable copy of the main vectors (``name=None``) or of an extra vector kind."""
        return self._copies.indexes.get(name or "")

    def extra_names(self) -> list[str]:
        return sorted(k for k in self._copies.indexes if k)

    def unsaved(self, name: str | None = None) -> int:
        """Rows of the main (``None``) or an extra vector kind this store changed (committed or not)
        that its saved copy (vector file, Milvus collection) lacks; 0 when that holds all this store searches."""
        return self._copies.unsaved(name or "")

    def recordings(self) -> dict[str, str]:
        """``{path: content_hash}`` of every indexed recording (for incremental updates)."""
        return self.db.recordings()

    def recording(self, recording_id: str) -> RecordingRow | None:
        return self.db.recording(recording_id)

    def recording_segments(self, recording_id: str) -> list[SegmentRow]:
        return self.db.segments_of_recording(recording_id)

    def segment(self, segment_id: str) -> SegmentRow | None:
        return self.db.segment_by_id(segment_id)

    def segments(self, row_ids: Sequence[int] | np.ndarray) -> dict[int, SegmentRow]:
        return self.db.segments_by_row_ids(list(np.asarray(row_ids, dtype=np.int64).tolist()))

    def vectors(self, row_ids: Sequence[int] | np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(found_row_ids, normalised vectors)`` from SQLite for main (``None``) or extra ``name``."""
        dim = self._copies.dims().get(name or "")
        if dim is None:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return self.db.vectors(np.asarray(row_ids, dtype=np.int64), dim, name)

    def row_ids_for_path(self, pattern: str) -> np.ndarray:
        return self.db.row_ids_for_path(pattern)

    def stats(self) -> dict[str, Any]:
        counts = self.db.counts()
        indexes = self._copies.indexes
        main = indexes.get("")
        dims = self._copies.dims()
        return {
            "format": "sonalign-index",
            "version": FORMAT_VERSION,
            "model": self.model,
            "dim": self.dim,
            "index_type": main.kind if main is not None else None,
            "index": main.describe() if main is not None else None,
            "generation": self.generation,
            "counts": {"recordings": counts["recordings"], "segments": counts["segments"], "kinds": counts["kinds"]},
            "extra": {
                name: {"dim": dims.get(name), "count": counts["extra"].get(name, 0), "index_type": idx.kind}
                for name, idx in sorted(indexes.items())
                if name
            },
            "settings": self.settings,
        }

    def refresh(self, min_interval: float = 1.0, stale_grace: float = 10.0) -> bool:
        """Read-only stores: pick up a writer's committed changes. Returns True if the vectors changed.

        With faiss files, the rows added and removed since the last refresh are read from SQLite and
        applied to the copies in memory; the vector files are not re-read (a writer rewrites them only
        now and then). With Milvus, the collections are picked up once the writer has saved them there;
        if that stays behind SQLite for ``stale_grace`` seconds (a writer that died mid-way), the lagging
        kinds are searched in memory, brought up to date from SQLite, instead.
        """
        if not self.readonly or self._closed:
            return False
        return self._copies.refresh(min_interval, stale_grace)

    # ------------------------------------------------------------------ what searches need
    def vector_dim(self, name: str | None = None) -> int | None:
        """The dimension of the searchable vectors of a kind; None while it has none."""
        index = self.index(name)
        return None if index is None else index.dim

    def vector_count(self, name: str | None = None) -> int:
        index = self.index(name)
        return 0 if index is None else index.ntotal

    def nearest(self, name: str | None, query: np.ndarray, k: int, allowed_ids: np.ndarray | None = None) -> dict[int, float]:
        """``{row_id: similarity}`` of the ``k`` rows of a vector kind nearest to one normalised ``query``
        (``allowed_ids``: only among those)."""
        index = self.index(name)
        if index is None or index.ntotal == 0:
            return {}
        scores, ids = index.search(query[None, :], min(int(k), index.ntotal), allowed_ids=allowed_ids)
        return {int(i): float(s) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0}

    def similarities(self, name: str | None, row_ids: Sequence[int] | np.ndarray, query: np.ndarray) -> dict[int, float]:
        """``{row_id: similarity}`` to ``query`` of those ``row_ids`` that have a vector of the kind,
        computed exactly from the vectors in SQLite."""
        if len(row_ids) == 0:
            return {}
        got, vecs = self.vectors(row_ids, name)
        return dict(zip(got.tolist(), (vecs @ query).tolist(), strict=True)) if got.size else {}


def _init_meta(db: MetadataDB, path: Path, *, readonly: bool, model: str | None, dim: int | None, settings: dict[str, Any] | None) -> None:
    """Record a new index's identity, or check an existing one's against ``model``/``dim`` (recording
    what it lacks and new ``settings`` in the open transaction)."""
    if db.get_meta("index_uuid") is None:
        if readonly:
            raise IndexCorruptError(f"{db.path}: index metadata lacks its uuid; {REBUILD_HINT}")
        for key, value in {"index_uuid": uuid.uuid4().hex, "format_version": FORMAT_VERSION, "generation": 0, "vector_generations": {},
                           "extra_dims": {}, "created_at": time.time(), "model": model, "dim": None if dim is None else int(dim),
                           "settings": settings or {}}.items():
            db.set_meta(key, value)
        db.commit()
        return
    version = db.get_meta("format_version")
    if version != FORMAT_VERSION:
        raise IndexCorruptError(f"{db.path}: index format version {version} is not {FORMAT_VERSION}; {REBUILD_HINT}")
    have_model, have_dim = db.get_meta("model"), db.get_meta("dim")
    if model is not None and have_model is not None and model != have_model:
        raise ConfigError(f"{path}: index was built with model {have_model!r}, not {model!r}; {REBUILD_HINT}")
    if dim is not None and have_dim is not None and int(dim) != int(have_dim):
        raise ConfigError(f"{path}: index holds {have_dim}-d vectors, not {dim}-d; {REBUILD_HINT}")
    merged = {**(db.get_meta("settings") or {}), **json.loads(json.dumps(settings or {}))}
    if readonly:
        return
    if model is not None and have_model is None:
        db.set_meta("model", model)
    if dim is not None and have_dim is None:
        db.set_meta("dim", int(dim))
    if settings and merged != (db.get_meta("settings") or {}):
        db.set_meta("settings", merged)


def _bump_and_commit(db: MetadataDB, changed: set[str] = frozenset()) -> dict[str, int]:
    """Commit the open transaction as a new generation; ``changed``: the vector kinds it changed. Returns
    every kind's generation (meta ``vector_generations``)."""
    gen = int(db.get_meta("generation") or 0) + 1
    vgens = dict(db.get_meta("vector_generations") or {})
    for name in changed:
        vgens[name] = gen
    db.set_meta("generation", gen)
    db.set_meta("vector_generations", vgens)
    db.commit()
    return vgens


__all__ = ["SNAPSHOT_RATIO", "IndexStore", "RecordingInfo"]
