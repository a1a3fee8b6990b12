"""``IndexStore``: an index directory that survives ``kill -9`` at any moment.

Layout of a directory ``IDX``::

    meta.sqlite                 source of truth: recordings, segments, every vector (float32 BLOBs), meta
    vectors.faiss               derived: faiss index of the segments' vectors (ids = segments.row_id)
    vectors.<name>.faiss        derived: one per extra vector kind (e.g. vectors.transcript.faiss)
    manifest.json               informational: model, dim, index type, counts, generation
    .writer.lock                flock held by the one writer

Crash-consistency design
------------------------
* Every change (``upsert_recording``, ``remove_recording``) goes into one SQLite transaction (WAL,
  ``synchronous=FULL``); each upsert is a savepoint inside it, so a failing upsert undoes only itself.
  ``commit()`` bumps the ``generation`` number, records for each changed vector kind the generation it
  was last changed in (meta ``vector_generations``) and commits: that is the only moment the index
  changes. A kill before it leaves the previous state, a kill after it the new one.
* A vector file is a snapshot: after the SQLite commit, a changed faiss index is written atomically
  (temp file, fsync, ``os.replace``) with a footer holding ``{index_uuid, generation}`` and a CRC-32,
  then the manifest. Not at every commit: only once the rows changed since the file was written exceed
  ``SNAPSHOT_RATIO`` of the rows it holds (so the bytes written over a build stay proportional to its
  size, not its square), and when a writer closes. Between snapshots, and after a kill between the
  steps, a vector file's tag is older than SQLite says: that is normal, not damage.
* On open, each vector file is checked against SQLite: missing, of another index (uuid), or of an
  older generation → it is brought up to date from SQLite. Row ids are ``AUTOINCREMENT`` (never
  reused), so a row id names one immutable vector and the repair is a set difference: remove the ids
  SQLite no longer has, add the ones the file lacks (reading their BLOBs). The result is written back
  (writer) or kept in memory (read-only opener). So no segment is lost or duplicated, and no file is
  ever torn.
* A damaged file (garbage, truncated, bad checksum) is not silently replaced: ``IndexCorruptError``
  names it and says how to rebuild (``sonalign index DIR --out IDX --rebuild``). A damaged vector file
  can also be regenerated from ``meta.sqlite`` with ``IndexStore.open(IDX, repair=True)``.

Readers (the web server) open with ``readonly=True``; SQLite's WAL lets them read while a writer works,
and :meth:`IndexStore.refresh` applies the writer's commits to the in-memory indexes from SQLite: the
rows above the largest row id an index has seen are the new ones (ids only grow), and a removal shows
as a count that no longer adds up, found by a set difference. The vector files are not re-read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import ConfigError, IndexCorruptError, StorageError
from sonalign.index.metadata import REBUILD_HINT, MetadataDB, RecordingRow, SegmentRow
from sonalign.index.vectors import DEFAULT_HNSW_THRESHOLD, FaissIndex, file_tag, normalize
from sonalign.segments import Segment
from sonalign.utils.atomic import atomic_write_text

FORMAT_VERSION = 1
DB_FILE = "meta.sqlite"
VECTOR_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".writer.lock"
#: A commit rewrites a vector file only once the rows changed since it was written exceed this share of
#: the rows it holds. Files are then rewritten at sizes growing geometrically, so the bytes written over
#: a whole build stay proportional to the index (at most about ``1 + 1/SNAPSHOT_RATIO`` times its final
#: size), and an opener of a lagging file replays at most this share of it from SQLite. 0: at every commit.
SNAPSHOT_RATIO = 0.25
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass
class RecordingInfo:
    """What the store keeps about one audio file. ``id`` defaults to the segments' ``recording_id``."""

    path: str
    content_hash: str
    duration: float | None = None
    sample_rate: int | None = None
    id: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, obj: Any) -> "RecordingInfo":
        """Accept a RecordingInfo, a mapping or any object with the same attribute names."""
        if isinstance(obj, RecordingInfo):
            return obj
        get = obj.get if isinstance(obj, Mapping) else (lambda key, default=None: getattr(obj, key, default))
        path = get("path")
        content_hash = get("content_hash")
        if path is None or content_hash is None:
            raise ValueError("recording info needs 'path' and 'content_hash'")
        rid = get("id") or get("recording_id")
        duration = get("duration")
        sample_rate = get("sample_rate")
        return cls(
            path=os.fspath(path),
            content_hash=str(content_hash),
            duration=None if duration is None else float(duration),
            sample_rate=None if sample_rate is None else int(sample_rate),
            id=None if rid is None else str(rid),
            custom=dict(get("custom") or {}),
        )


class IndexStore:
    """An index directory: SQLite metadata + vectors, faiss indexes derived from them. Use :meth:`open`."""

    def __init__(self, path: Path, db: MetadataDB, *, readonly: bool, lock: Any, options: dict[str, Any], snapshot_ratio: float = SNAPSHOT_RATIO):
        self.path = path
        self.db = db
        self.readonly = readonly
        self._lock_handle = lock
        self._options = options
        self._snapshot_ratio = float(snapshot_ratio)
        self._indexes: dict[str, FaissIndex] = {}
        self._dirty: set[str] = set()  # vector kinds changed in the open transaction
        self._file_rows: dict[str, int | None] = {}  # rows in each kind's saved vectors (None: no valid file)
        self._lag: dict[str, int] = {}  # rows added or removed since each kind's vectors were saved
        self._loaded_generation = -1
        self._stale_since: float | None = None
        self._last_refresh = 0.0
        self._closed = False
        self._refresh_lock = threading.Lock()
        self._backend: Any = None  # None: faiss files; else a server-side backend (sonalign.index.milvus)

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
            lock = _acquire_lock(path / LOCK_FILE, lock_timeout)
        try:
            previous = None
            if rebuild:
                if db_path.exists():
                    from sonalign.index.milvus import drop_for_rebuild

                    previous = drop_for_rebuild(db_path, uri)
                _delete_index_files(path)
                create = True
            db = MetadataDB(db_path, create=create, readonly=readonly)
            try:
                options = {"hnsw_threshold": hnsw_threshold, "ef_search": ef_search}
                store = cls(path, db, readonly=readonly, lock=lock, options=options, snapshot_ratio=snapshot_ratio)
                store._init_meta(model=model, dim=dim, settings=settings)
                if backend not in (None, "faiss") or db.get_meta("vector_backend") is not None or previous is not None:
                    from sonalign.index.milvus import open_backend

                    store._backend = open_backend(store, backend, uri, previous)
                store._load_vectors(repair=repair)
                if not readonly:
                    store._write_back_repairs()
            except BaseException:
                db.close()
                raise
        except BaseException:
            _release_lock(lock)
            raise
        return store

    def _init_meta(self, *, model: str | None, dim: int | None, settings: dict[str, Any] | None) -> None:
        db = self.db
        if db.get_meta("index_uuid") is None:
            if self.readonly:
                raise IndexCorruptError(f"{db.path}: index metadata lacks its uuid; {REBUILD_HINT}")
            db.set_meta("index_uuid", uuid.uuid4().hex)
            db.set_meta("format_version", FORMAT_VERSION)
            db.set_meta("generation", 0)
            db.set_meta("vector_generations", {})
            db.set_meta("extra_dims", {})
            db.set_meta("created_at", time.time())
            db.set_meta("model", model)
            db.set_meta("dim", None if dim is None else int(dim))
            db.set_meta("settings", settings or {})
            db.commit()
            return
        version = db.get_meta("format_version")
        if version != FORMAT_VERSION:
            raise IndexCorruptError(f"{db.path}: index format version {version} is not {FORMAT_VERSION}; {REBUILD_HINT}")
        have_model, have_dim = db.get_meta("model"), db.get_meta("dim")
        if model is not None and have_model is not None and model != have_model:
            raise ConfigError(f"{self.path}: index was built with model {have_model!r}, not {model!r}; {REBUILD_HINT}")
        if dim is not None and have_dim is not None and int(dim) != int(have_dim):
            raise ConfigError(f"{self.path}: index holds {have_dim}-d vectors, not {dim}-d; {REBUILD_HINT}")
        merged = {**(db.get_meta("settings") or {}), **json.loads(json.dumps(settings or {}))}
        new_settings = bool(settings) and merged != (db.get_meta("settings") or {})
        if not self.readonly and ((model is not None and have_model is None) or (dim is not None and have_dim is None) or new_settings):
            if model is not None and have_model is None:
                db.set_meta("model", model)
            if dim is not None and have_dim is None:
                db.set_meta("dim", int(dim))
            if new_settings:
                db.set_meta("settings", merged)
            self._bump_and_commit()

    # ------------------------------------------------------------------ vector files
    def _vector_path(self, name: str) -> Path:
        return self.path / (VECTOR_FILE if name == "" else f"vectors.{name}.faiss")

    def _dims(self) -> dict[str, int]:
        dims = {str(k): int(v) for k, v in (self.db.get_meta("extra_dims") or {}).items()}
        main = self.db.get_meta("dim")
        if main is not None:
            dims[""] = int(main)
        return dims

    def _load_vectors(self, *, repair: bool = False, reuse: dict[str, FaissIndex] | None = None) -> None:
        """Load every kind's saved vectors and bring them in line with SQLite (see the module docstring).

        ``reuse``: in-memory indexes whose tag already matches SQLite are kept instead of re-read.
        Nothing is written here: the caller decides what to save (a writer's open: every repaired file).
        """
        # The generation is read first: a writer committing while this runs makes what is loaded
        # newer than the label (caught up at the next refresh), never older.
        generation = int(self.db.get_meta("generation") or 0)
        uid = self.db.get_meta("index_uuid")
        vgens = self.db.get_meta("vector_generations") or {}
        indexes: dict[str, FaissIndex] = {}
        changed: set[str] = set()
        for name, dim in self._dims().items():
            want = self.db.count_vectors(name or None)
            current = (reuse or {}).get(name)
            if current is not None and current.tag == {"index_uuid": uid, "generation": vgens.get(name, 0)} and current.ntotal == want:
                indexes[name] = current
                continue
            index = self._read_saved(name, dim, uid, repair)
            self._file_rows[name] = None if index is None else index.ntotal
            self._lag[name] = 0
            if index is None:
                index = self._new_index(name, dim)
            if self._file_rows[name] is None or (index.tag or {}).get("generation") != vgens.get(name, 0) or index.ntotal != want:
                # At least 1: even holding the same rows, the saved copy is labelled with an older state.
                self._lag[name] = max(1, self._sync(index, name))
                index.tag = None  # its content no longer matches the file it came from
                changed.add(name)
            indexes[name] = index
        self._indexes = indexes
        self._dirty = changed if self.db.in_transaction else set()  # then saved with the next commit's generation
        self._loaded_generation = generation

    def _read_saved(self, name: str, dim: int, uid: str, repair: bool) -> FaissIndex | None:
        """The saved vectors of kind ``name`` as they are; None if missing, of another index, or (with ``repair``) damaged."""
        file = self._vector_path(name)
        if self._backend is None and not file.exists():
            return None
        try:
            index = self._backend.load(name, dim) if self._backend is not None else FaissIndex.load(file, require_footer=True, **self._options)
        except IndexCorruptError as exc:
            if not repair:
                raise IndexCorruptError(
                    f"{exc}. {REBUILD_HINT[0].upper()}{REBUILD_HINT[1:]}; or, since {self.db.path} holds every vector, "
                    f"regenerate the file with IndexStore.open({str(self.path)!r}, repair=True)"
                ) from None
            return None
        if index is not None and ((index.tag or {}).get("index_uuid") != uid or index.dim != dim):
            return None  # a file left from another index: not ours to trust
        return index

    def _sync(self, index: FaissIndex, name: str) -> int:
        """Make ``index`` hold exactly SQLite's ids for vector kind ``name``; returns how many it changed."""
        key = name or None
        stale, missing = self._difference(index, key)
        if stale.size:
            index.remove(stale)
        for ids, vecs in self._read_vectors(index.dim, key, missing):
            index.add(ids, vecs)
        return int(stale.size + missing.size)

    def _difference(self, index: FaissIndex, key: str | None) -> tuple[np.ndarray, np.ndarray]:
        """``(stale, missing)``: the ids ``index`` holds that SQLite does not, and the other way round."""
        want = self.db.row_ids(key)
        have = index.ids()
        return np.setdiff1d(have, want, assume_unique=True), np.setdiff1d(want, have, assume_unique=True)

    def _read_vectors(self, dim: int, key: str | None, row_ids: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """SQLite's vectors of ``row_ids`` in batches: by id, or by one scan when they are most of them."""
        if not row_ids.size:
            return
        if row_ids.size <= 0.5 * self.db.count_vectors(key):
            yield from self.db.iter_vectors(dim, key, row_ids=row_ids)
            return
        for ids, vecs in self.db.iter_vectors(dim, key):
            keep = np.isin(ids, row_ids, assume_unique=True)
            if keep.any():
                yield ids[keep], vecs[keep]

    def _save_due(self, name: str) -> bool:
        """Whether the next commit should save kind ``name`` (see :data:`SNAPSHOT_RATIO`). A server-side
        backend saves only what changed, so it saves at every commit."""
        rows = self._file_rows.get(name)
        return self._backend is not None or rows is None or self._lag.get(name, 0) > self._snapshot_ratio * rows

    def _behind(self) -> set[str]:
        """Kinds whose saved vectors lag their committed state (uncommitted ones are left out)."""
        return {name for name in self._indexes if name not in self._dirty and (self._lag.get(name) or self._file_rows.get(name) is None)}

    def _write_back_repairs(self) -> None:
        """A writer's open: save every kind found behind SQLite (and the manifest, if any changed or it is missing)."""
        behind = self._behind()
        self._save_vectors(behind)
        if behind or not (self.path / MANIFEST_FILE).exists():
            self._write_manifest()

    def _save_vectors(self, names: set[str], vgens: dict[str, int] | None = None) -> None:
        uid = self.db.get_meta("index_uuid")
        vgens = self.db.get_meta("vector_generations") or {} if vgens is None else vgens
        for name in sorted(names):
            index = self._indexes.get(name)
            if index is not None:
                index.save(self._vector_path(name), tag={"index_uuid": uid, "generation": vgens.get(name, 0)})
                self._file_rows[name], self._lag[name] = index.ntotal, 0

    def _write_manifest(self) -> None:
        atomic_write_text(self.path / MANIFEST_FILE, json.dumps(self.stats(), indent=2, sort_keys=True) + "\n")

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
        info = RecordingInfo.coerce(rec_info)
        segments = list(segments)
        n = len(segments)
        vectors = np.asarray(vectors, dtype=np.float32)
        if n == 0 and vectors.size == 0:
            vectors = vectors.reshape(0, self.dim or 0)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise ValueError(f"{info.path}: vectors must have shape ({n}, dim) for {n} segments, got {vectors.shape}")
        if n and self.dim is not None and vectors.shape[1] != self.dim:
            raise ValueError(f"{info.path}: vectors are {vectors.shape[1]}-d but the index holds {self.dim}-d vectors")
        if n:
            _check_vectors(vectors, f"{info.path}: vectors")
        if transcripts is not None and len(transcripts) != n:
            raise ValueError(f"{info.path}: {len(transcripts)} transcripts for {n} segments")
        extras = self._check_extras(info.path, extra_vectors or {}, n)
        rid = info.id or (segments[0].recording_id if segments else "rec-" + hashlib.sha1(info.path.encode("utf-8")).hexdigest()[:12])
        rows = []
        for i, seg in enumerate(segments):
            if seg.recording_id != rid:
                raise ValueError(f"{info.path}: segment {seg.id!r} belongs to recording {seg.recording_id!r}, not {rid!r}")
            custom = dict(seg.custom or {})
            if seg.channel:
                custom.setdefault("channel", seg.channel)
            kind = str(custom.get("kind") or "audio")
            text = transcripts[i] if transcripts is not None else seg.text
            rows.append((seg.id, rid, float(seg.start), float(seg.duration), kind, text, custom))
        normed = normalize(vectors) if n else vectors
        with self.db.savepoint():
            clash = self.db.recording(rid)
            if clash is not None and clash.path != info.path:
                raise ValueError(f"{info.path}: recording id {rid!r} already names {clash.path!r}; give each file a distinct recording id")
            old = self.db.recording_by_path(info.path)
            removed, removed_extra = (np.zeros(0, np.int64), {}) if old is None else self.db.delete_recording(old.id)
            self.db.insert_recording(rid, info.path, info.content_hash, info.duration, info.sample_rate, time.time(), info.custom)
            try:
                row_ids = self.db.insert_segments(rows, normed)
            except Exception as exc:  # sqlite3.IntegrityError: a segment id used by another recording
                if "UNIQUE" in str(exc):
                    raise ValueError(f"{info.path}: a segment id is already used by another recording ({exc})") from None
                raise
            if n and self.dim is None:
                self.db.set_meta("dim", int(vectors.shape[1]))
            dims = self.db.get_meta("extra_dims") or {}
            for name, (mask, arr) in extras.items():
                if name not in dims:
                    dims[name] = int(arr.shape[1])
                    self.db.set_meta("extra_dims", dims)
                if mask.any():
                    self.db.insert_extra_vectors(name, row_ids[mask], normalize(arr[mask]))
        try:
            if n or removed.size:
                main = self._index_for("")
                main.remove(removed)
                main.add(row_ids, normed)
                self._changed("", removed.size + n)
            for name in set(removed_extra) | set(extras):
                index = self._index_for(name)
                gone = removed_extra.get(name, np.zeros(0, np.int64))
                index.remove(gone)
                added = 0
                if name in extras and extras[name][0].any():
                    mask, arr = extras[name]
                    index.add(row_ids[mask], arr[mask])
                    added = int(mask.sum())
                self._changed(name, gone.size + added)
        except BaseException:
            self._resync_memory()
            raise
        return row_ids

    def _check_extras(self, where: str, extra_vectors: Mapping[str, np.ndarray], n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        dims = self.db.get_meta("extra_dims") or {}
        for name, arr in extra_vectors.items():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise ValueError(f"{where}: extra vector name {name!r} must match {_NAME_RE.pattern}")
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"{where}: extra vectors {name!r} must have shape ({n}, d), got {arr.shape}")
            if name in dims and arr.shape[1] != int(dims[name]):
                raise ValueError(f"{where}: extra vectors {name!r} are {arr.shape[1]}-d, the index holds {dims[name]}-d")
            absent = np.isnan(arr).all(axis=1) | (arr == 0).all(axis=1) if n else np.zeros(0, bool)
            mask = ~absent
            if mask.any():
                _check_vectors(arr[mask], f"{where}: extra vectors {name!r}")
            out[name] = (mask, arr)
        return out

    def _new_index(self, name: str, dim: int) -> FaissIndex:
        return self._backend.new(name, dim) if self._backend is not None else FaissIndex(dim, **self._options)

    def _saved_tag(self, name: str) -> dict[str, Any] | None:
        """The tag of the saved vectors of kind ``name`` (vector file footer, or the backend's record)."""
        return self._backend.tag(name) if self._backend is not None else file_tag(self._vector_path(name))

    def _index_for(self, name: str) -> FaissIndex:
        index = self._indexes.get(name)
        if index is None:
            dim = self._dims().get(name)
            if dim is None:
                raise RuntimeError(f"no dimension known for vector kind {name or 'main'!r}")
            index = self._new_index(name, dim)
            self._indexes = {**self._indexes, name: index}
        return index

    def _changed(self, name: str, rows: int) -> None:
        self._dirty.add(name)
        self._lag[name] = self._lag.get(name, 0) + int(rows)

    def remove_recording(self, path: str | os.PathLike[str]) -> bool:
        """Remove the recording stored for ``path`` (and its segments and vectors); False if none."""
        self._check_writable()
        with self.db.savepoint():
            old = self.db.recording_by_path(os.fspath(path))
            if old is None:
                return False
            removed, removed_extra = self.db.delete_recording(old.id)
        try:
            if removed.size:
                self._index_for("").remove(removed)
                self._changed("", removed.size)
            for name, ids in removed_extra.items():
                self._index_for(name).remove(ids)
                self._changed(name, ids.size)
        except BaseException:
            self._resync_memory()
            raise
        return True

    def set_meta(self, key: str, value: Any) -> None:
        """Record a setting (JSON-serialisable) in the open transaction, e.g. segmenter parameters."""
        self._check_writable()
        if key in {"index_uuid", "generation", "vector_generations", "extra_dims", "format_version", "schema_version", "dim", "vector_backend"}:
            raise ValueError(f"meta key {key!r} is managed by the store")
        self.db.set_meta(key, value)

    def commit(self) -> None:
        """Make every change since the last commit durable.

        A changed vector file is rewritten only once enough has changed since it was last written
        (:data:`SNAPSHOT_RATIO`): until then it keeps its older generation's tag, and whoever opens it
        brings it up to date from SQLite. So the bytes a commit writes do not grow with the index.
        """
        self._check_writable()
        if not self.db.in_transaction:
            return
        dirty = set(self._dirty)
        vgens = self._bump_and_commit(dirty)
        self._dirty = set()
        due = {name for name in dirty if self._save_due(name)}
        if due:
            self._save_vectors(due, vgens)
            self._write_manifest()

    def _bump_and_commit(self, dirty: set[str] | None = None) -> dict[str, int]:
        gen = int(self.db.get_meta("generation") or 0) + 1
        vgens = dict(self.db.get_meta("vector_generations") or {})
        for name in dirty or ():
            vgens[name] = gen
        self.db.set_meta("generation", gen)
        self.db.set_meta("vector_generations", vgens)
        self.db.commit()
        self._loaded_generation = gen
        return vgens

    def rollback(self) -> None:
        """Drop every change since the last commit."""
        self._check_writable()
        self.db.rollback()
        self._load_vectors()

    def _resync_memory(self) -> None:
        """Rebuild the in-memory indexes from SQLite's current (possibly uncommitted) state."""
        dirty = set(self._dirty)
        self._load_vectors()
        self._dirty |= dirty

    def close(self) -> None:
        """Close without committing (an open transaction is rolled back). A writer first saves the
        vector files its commits left behind, so that readers open them without catching up (one
        snapshot per writing session: cheaper than every later open replaying, say, HNSW inserts)."""
        if self._closed:
            return
        try:
            if not self.readonly:
                self._close_writer()
        finally:
            self._closed = True
            self.db.close()
            _release_lock(self._lock_handle)
            self._lock_handle = None

    def _close_writer(self) -> None:
        if self._dirty:
            self.rollback()  # the in-memory indexes hold uncommitted changes: back to the committed state
        else:
            with contextlib.suppress(Exception):
                self.db.rollback()
        self._save_vectors(self._behind())
        self._write_manifest()

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None and not self.readonly and not self._closed:
                self.commit()
        finally:
            self.close()

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

    def index(self, name: str | None = None) -> FaissIndex | None:
        """The faiss index of the main vectors (``name=None``) or of an extra vector kind."""
        return self._indexes.get(name or "")

    def extra_names(self) -> list[str]:
        return sorted(k for k in self._indexes if k)

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
        dim = self._dims().get(name or "")
        if dim is None:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return self.db.vectors(np.asarray(row_ids, dtype=np.int64), dim, name)

    def row_ids_for_path(self, pattern: str) -> np.ndarray:
        return self.db.row_ids_for_path(pattern)

    def stats(self) -> dict[str, Any]:
        counts = self.db.counts()
        main = self._indexes.get("")
        dims = self._dims()
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
                for name, idx in sorted(self._indexes.items())
                if name
            },
            "settings": self.settings,
        }

    def refresh(self, min_interval: float = 1.0, stale_grace: float = 10.0) -> bool:
        """Read-only stores: pick up a writer's committed changes. Returns True if the vectors changed.

        With faiss files, the rows added and removed since the last refresh are read from SQLite and
        applied to the in-memory indexes; the vector files are not read (a writer rewrites them only now
        and then). With a server-side backend (Milvus), its new state is picked up once the writer has
        saved it there; if that stays behind SQLite for ``stale_grace`` seconds (a writer that died
        mid-way), the vectors are brought up to date in memory from SQLite instead.
        """
        if not self.readonly or self._closed:
            return False
        if not self._refresh_lock.acquire(blocking=False):
            return False  # another thread is refreshing; keep searching the current vectors
        try:
            return self._refresh(min_interval, stale_grace)
        finally:
            self._refresh_lock.release()

    def _refresh(self, min_interval: float, stale_grace: float) -> bool:
        now = time.monotonic()
        if now - self._last_refresh < min_interval:
            return False
        self._last_refresh = now
        gen = int(self.db.get_meta("generation") or 0)
        if gen == self._loaded_generation:
            self._stale_since = None
            return False
        if self._backend is not None:
            return self._reload_from_backend(now, stale_grace)
        self._catch_up()
        return True

    def _catch_up(self) -> None:
        """Apply what changed in SQLite since the last refresh to the in-memory indexes. Each index
        changes in one step (a search sees all of it or none); a change that would rebuild one
        (switch to HNSW, compaction) is made on a copy, swapped in when done, so searches go on."""
        with self.db.snapshot():
            generation = int(self.db.get_meta("generation") or 0)
            changes = {name: self._changes(name, dim) for name, dim in self._dims().items()}
        for name, (index, stale, ids, vecs) in changes.items():
            if stale.size or ids.size:
                if index.would_rebuild(stale.size, ids.size):
                    index = index.updated_copy(stale, ids, vecs)
                else:
                    index.update(stale, ids, vecs)
            if self._indexes.get(name) is not index:
                self._indexes = {**self._indexes, name: index}  # a new dict: readers of the old one are unaffected
        self._loaded_generation = generation

    def _changes(self, name: str, dim: int) -> tuple[FaissIndex, np.ndarray, np.ndarray, np.ndarray]:
        """``(index, ids to remove, ids to add, their vectors)`` that bring this reader's index of kind
        ``name`` to SQLite's state.

        Row ids are never reused and a new row's id is above every earlier one, so the rows above the
        largest id the index has seen are the new ones; if SQLite's count then agrees, nothing was
        removed and nothing more is read. Otherwise the removed ids are found by a set difference.
        """
        index = self._indexes.get(name)
        if index is None:
            index = self._new_index(name, dim)
        key = name or None
        ids, vecs = _concat(self.db.iter_vectors(dim, key, after=index.max_id), dim)
        if index.ntotal + ids.size == self.db.count_vectors(key):
            return index, np.zeros(0, np.int64), ids, vecs
        stale, missing = self._difference(index, key)
        ids, vecs = _concat(self._read_vectors(dim, key, missing), dim)
        return index, stale, ids, vecs

    def _reload_from_backend(self, now: float, stale_grace: float) -> bool:
        """Reload a server-side backend's indexes once the writer has saved the committed generation there."""
        vgens = self.db.get_meta("vector_generations") or {}
        ready = all((self._saved_tag(n) or {}).get("generation") == vgens.get(n, 0) for n in self._dims() if n in vgens)
        if not ready:
            if self._stale_since is None:
                self._stale_since = now
                return False
            if now - self._stale_since < stale_grace:
                return False
        self._stale_since = None
        # New indexes are built aside and swapped in whole: searches in flight keep the old ones.
        self._load_vectors(reuse=self._indexes)
        return True


# ---------------------------------------------------------------------- helpers
def _check_vectors(vectors: np.ndarray, what: str) -> None:
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    if (np.linalg.norm(vectors, axis=1) == 0).any():
        raise ValueError(f"{what} contain an all-zero vector (cannot be normalised)")


def _concat(batches: Iterator[tuple[np.ndarray, np.ndarray]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(ids, vectors)`` pair from batches of them."""
    parts = list(batches)
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate([ids for ids, _ in parts]), np.concatenate([vecs for _, vecs in parts])


def _acquire_lock(path: Path, timeout: float) -> Any:
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


def _release_lock(handle: Any) -> None:
    if handle is None:
        return
    with contextlib.suppress(Exception):
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    with contextlib.suppress(Exception):
        handle.close()


def _delete_index_files(path: Path) -> None:
    # The WAL goes before its database: a new database must never meet an old WAL.
    for name in (DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal", DB_FILE, MANIFEST_FILE):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()
    for file in path.glob("vectors*.faiss"):
        file.unlink()
    for file in path.glob(".*.tmp"):
        file.unlink()


__all__ = ["IndexStore", "RecordingInfo"]
