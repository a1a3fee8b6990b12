"""The index's source of truth: one SQLite file (WAL mode) with recordings, segments and vectors.

Tables::

    meta(key TEXT PRIMARY KEY, value TEXT)            -- model, dim, settings, generation, index_uuid ...
    recordings(id TEXT PRIMARY KEY, path TEXT UNIQUE, content_hash, duration, sample_rate, indexed_at, custom)
    segments(row_id INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, recording_id, start, duration,
             kind, transcript, custom JSON)
    vectors(row_id INTEGER PRIMARY KEY, vector BLOB)  -- the segment's float32 vector (normalised)
    extra_vectors(row_id, name, vector BLOB)          -- optional secondary vectors ("transcript", ...)

``segments.row_id`` is the id of the segment's vector in every faiss index. ``AUTOINCREMENT`` means a
row id is never reused, even after deletes, so a row id always names the same immutable vector: an
out-of-date vector file can be brought up to date by adding and removing ids (see ``store.py``).

WAL mode lets readers (the server) keep reading the last committed state while a writer updates;
``synchronous=FULL`` makes each commit durable. Any SQLite error other than a busy lock is reported as
:class:`~sonalign.errors.IndexCorruptError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import IndexCorruptError

SCHEMA_VERSION = 1
REBUILD_HINT = "rebuild it with `sonalign index DIR --out IDX --rebuild`"
#: Full integrity check on open for files up to this size (it reads every page).
QUICK_CHECK_MAX_BYTES = 512 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recordings(
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    duration REAL,
    sample_rate INTEGER,
    indexed_at REAL NOT NULL,
    custom TEXT
);
CREATE TABLE IF NOT EXISTS segments(
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    recording_id TEXT NOT NULL REFERENCES recordings(id) ON DELETE CASCADE,
    start REAL NOT NULL,
    duration REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'audio',
    transcript TEXT,
    custom TEXT
);
CREATE INDEX IF NOT EXISTS segments_by_recording ON segments(recording_id, start);
CREATE TABLE IF NOT EXISTS vectors(
    row_id INTEGER PRIMARY KEY REFERENCES segments(row_id) ON DELETE CASCADE,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS extra_vectors(
    row_id INTEGER NOT NULL REFERENCES segments(row_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY(name, row_id)
);
"""

_TABLES = {"meta", "recordings", "segments", "vectors", "extra_vectors"}


@dataclass(frozen=True)
class SegmentRow:
    row_id: int
    id: str
    recording_id: str
    start: float
    duration: float
    kind: str
    transcript: str | None
    custom: dict[str, Any]
    path: str

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class RecordingRow:
    id: str
    path: str
    content_hash: str
    duration: float | None
    sample_rate: int | None
    indexed_at: float
    custom: dict[str, Any]


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class MetadataDB:
    """Thread-safe wrapper of one SQLite connection (a lock serialises statements)."""

    def __init__(self, path: str | Path, *, create: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.RLock()
        if not self.path.exists() and not create:
            raise FileNotFoundError(f"{self.path}: no index metadata here")
        if self.path.exists() and self.path.stat().st_size == 0 and not create:
            raise IndexCorruptError(f"{self.path}: index metadata is empty (0 bytes); {REBUILD_HINT}")
        with self._guard():
            if readonly:
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            else:
                self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            try:
                self._setup(create)
            except BaseException:
                self.conn.close()
                raise

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialise and translate SQLite errors: damaged file -> IndexCorruptError naming it."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                if _is_busy(exc) or isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
                    raise
                raise IndexCorruptError(f"{self.path}: unreadable index metadata ({exc}); {REBUILD_HINT}") from None

    def _setup(self, create: bool) -> None:
        c = self.conn
        size = self.path.stat().st_size if self.path.exists() else 0
        if not self.readonly:
            mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise IndexCorruptError(f"{self.path}: cannot switch to WAL journal mode (got {mode})")
            c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA foreign_keys=ON")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables & _TABLES:
            if not create or self.readonly:
                raise IndexCorruptError(f"{self.path}: not a sonalign index (no index tables); {REBUILD_HINT}")
            c.executescript(_SCHEMA)
            c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            return
        missing = _TABLES - tables
        if missing:
            raise IndexCorruptError(f"{self.path}: index metadata lacks tables {sorted(missing)}; {REBUILD_HINT}")
        version = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise IndexCorruptError(f"{self.path}: index schema version {version[0] if version else '?'} is not {SCHEMA_VERSION}; {REBUILD_HINT}")
        if size <= QUICK_CHECK_MAX_BYTES:
            result = c.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise IndexCorruptError(f"{self.path}: index metadata is damaged ({result}); {REBUILD_HINT}")

    def close(self) -> None:
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------------ transactions
    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def begin(self) -> None:
        """Open the write transaction if none is open (BEGIN IMMEDIATE takes the write lock now)."""
        with self._guard():
            if not self.conn.in_transaction:
                self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        with self._guard():
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def rollback(self) -> None:
        with self._guard():
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads (only) inside see one committed state: a read transaction; other threads' statements
        wait meanwhile. Inside an open write transaction they see that transaction's state, as any read does."""
        with self._guard():
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested, all-or-nothing unit inside the open transaction."""
        with self._guard():
            self.begin()
            self.conn.execute("SAVEPOINT upsert")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK TO upsert")
                self.conn.execute("RELEASE upsert")
                raise
            self.conn.execute("RELEASE upsert")

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._guard():
            row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        with self._guard():
            self.begin()
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def all_meta(self) -> dict[str, Any]:
        with self._guard():
            rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) if k != "schema_version" else int(v) for k, v in rows}

    # ------------------------------------------------------------------ writes (inside a transaction)
    def recording_by_path(self, path: str) -> RecordingRow | None:
        with self._guard():
            row = self.conn.execute(_REC_SELECT + " WHERE path=?", (path,)).fetchone()
        return _rec(row)

    def recording(self, recording_id: str) -> RecordingRow | None:
        with self._guard():
            row = self.conn.execute(_REC_SELECT + " WHERE id=?", (recording_id,)).fetchone()
        return _rec(row)

    def delete_recording(self, recording_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Delete a recording with its segments and vectors; returns the removed row ids (main, per extra name)."""
        with self._guard():
            self.begin()
            c = self.conn
            rows = np.array([r[0] for r in c.execute("SELECT row_id FROM segments WHERE recording_id=?", (recording_id,))], np.int64)
            extras: dict[str, list[int]] = {}
            for name, rid in c.execute(
                "SELECT e.name, e.row_id FROM extra_vectors e JOIN segments s ON s.row_id=e.row_id WHERE s.recording_id=?", (recording_id,)
            ):
                extras.setdefault(name, []).append(rid)
            c.execute("DELETE FROM extra_vectors WHERE row_id IN (SELECT row_id FROM segments WHERE recording_id=?)", (recording_id,))
            c.execute("DELETE FROM vectors WHERE row_id IN (SELECT row_id FROM segments WHERE recording_id=?)", (recording_id,))
            c.execute("DELETE FROM segments WHERE recording_id=?", (recording_id,))
            c.execute("DELETE FROM recordings WHERE id=?", (recording_id,))
        return rows, {k: np.array(v, np.int64) for k, v in extras.items()}

    def insert_recording(
        self,
        recording_id: str,
        path: str,
        content_hash: str,
        duration: float | None,
        sample_rate: int | None,
        indexed_at: float,
        custom: dict[str, Any] | None = None,
    ) -> None:
        with self._guard():
            self.begin()
            self.conn.execute(
                "INSERT INTO recordings(id, path, content_hash, duration, sample_rate, indexed_at, custom) VALUES (?,?,?,?,?,?,?)",
                (recording_id, path, content_hash, duration, sample_rate, indexed_at, json.dumps(custom or {})),
            )

    def insert_segments(self, rows: Sequence[tuple[str, str, float, float, str, str | None, dict[str, Any]]], vectors: np.ndarray) -> np.ndarray:
        """Insert segments ``(id, recording_id, start, duration, kind, transcript, custom)`` with their vectors.

        Returns the new row ids (the faiss ids), in input order.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        out = np.empty(len(rows), np.int64)
        with self._guard():
            self.begin()
            c = self.conn
            for i, (sid, rec, start, dur, kind, transcript, custom) in enumerate(rows):
                cur = c.execute(
                    "INSERT INTO segments(id, recording_id, start, duration, kind, transcript, custom) VALUES (?,?,?,?,?,?,?)",
                    (sid, rec, float(start), float(dur), kind, transcript, json.dumps(custom or {}, ensure_ascii=False)),
                )
                out[i] = cur.lastrowid
            c.executemany("INSERT INTO vectors(row_id, vector) VALUES (?, ?)", ((int(r), vectors[i].tobytes()) for i, r in enumerate(out)))
        return out

    def insert_extra_vectors(self, name: str, row_ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._guard():
            self.begin()
            self.conn.executemany(
                "INSERT INTO extra_vectors(row_id, name, vector) VALUES (?, ?, ?)",
                ((int(r), name, vectors[i].tobytes()) for i, r in enumerate(row_ids)),
            )

    # ------------------------------------------------------------------ reads
    def recordings(self) -> dict[str, str]:
        with self._guard():
            return dict(self.conn.execute("SELECT path, content_hash FROM recordings ORDER BY path").fetchall())

    def counts(self) -> dict[str, Any]:
        with self._guard():
            c = self.conn
            n_rec = c.execute("SELECT count(*) FROM recordings").fetchone()[0]
            n_seg = c.execute("SELECT count(*) FROM segments").fetchone()[0]
            extra = dict(c.execute("SELECT name, count(*) FROM extra_vectors GROUP BY name").fetchall())
            kinds = dict(c.execute("SELECT kind, count(*) FROM segments GROUP BY kind").fetchall())
        return {"recordings": int(n_rec), "segments": int(n_seg), "extra": {k: int(v) for k, v in extra.items()}, "kinds": kinds}

    def count_vectors(self, name: str | None = None) -> int:
        """How many main vectors (``name=None``) or extra vectors ``name`` there are. Main vectors are
        counted by their segments (each segment has exactly one, inserted and deleted with it): that
        count reads a small index, not the pages holding the vectors."""
        with self._guard():
            if name is None:
                return int(self.conn.execute("SELECT count(*) FROM segments").fetchone()[0])
            return int(self.conn.execute("SELECT count(*) FROM extra_vectors WHERE name=?", (name,)).fetchone()[0])

    def row_ids(self, name: str | None = None) -> np.ndarray:
        """Sorted row ids holding a main vector (``name=None``) or an extra vector ``name``."""
        with self._guard():
            if name is None:
                cur = self.conn.execute("SELECT row_id FROM vectors ORDER BY row_id")
            else:
                cur = self.conn.execute("SELECT row_id FROM extra_vectors WHERE name=? ORDER BY row_id", (name,))
            return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def iter_vectors(
        self, dim: int, name: str | None = None, row_ids: Iterable[int] | None = None, batch: int = 20_000, after: int = -1
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_ids, vectors)`` batches: those of ``row_ids`` that exist, or else every one whose
        row id is above ``after`` (all of them by default), in row id order."""
        if row_ids is not None:
            ids = np.asarray(list(row_ids) if not isinstance(row_ids, np.ndarray) else row_ids, dtype=np.int64)
            for i in range(0, ids.size, 500):
                got_ids, got = self.vectors(ids[i : i + 500], dim, name)
                if got_ids.size:
                    yield got_ids, got
            return
        last = int(after)
        while True:
            with self._guard():
                if name is None:
                    rows = self.conn.execute("SELECT row_id, vector FROM vectors WHERE row_id>? ORDER BY row_id LIMIT ?", (last, batch)).fetchall()
                else:
                    rows = self.conn.execute(
                        "SELECT row_id, vector FROM extra_vectors WHERE name=? AND row_id>? ORDER BY row_id LIMIT ?", (name, last, batch)
                    ).fetchall()
            if not rows:
                return
            yield _unpack(rows, dim, self.path)
            last = rows[-1][0]

    def vectors(self, row_ids: Sequence[int] | np.ndarray, dim: int, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(found_row_ids, vectors)`` for the given row ids (missing ones are left out)."""
        ids = [int(r) for r in row_ids]
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        found: list[tuple[int, bytes]] = []
        with self._guard():
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                if name is None:
                    found += self.conn.execute(f"SELECT row_id, vector FROM vectors WHERE row_id IN ({marks})", chunk).fetchall()
                else:
                    found += self.conn.execute(f"SELECT row_id, vector FROM extra_vectors WHERE name=? AND row_id IN ({marks})", [name, *chunk]).fetchall()
        return _unpack(found, dim, self.path)

    def segments_by_row_ids(self, row_ids: Sequence[int]) -> dict[int, SegmentRow]:
        ids = [int(r) for r in row_ids]
        out: dict[int, SegmentRow] = {}
        with self._guard():
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for row in self.conn.execute(_SEG_SELECT + f" WHERE s.row_id IN ({marks})", chunk):
                    seg = _seg(row)
                    out[seg.row_id] = seg
        return out

    def segment_by_id(self, segment_id: str) -> SegmentRow | None:
        with self._guard():
            row = self.conn.execute(_SEG_SELECT + " WHERE s.id=?", (segment_id,)).fetchone()
        return _seg(row) if row else None

    def segments_of_recording(self, recording_id: str) -> list[SegmentRow]:
        with self._guard():
            rows = self.conn.execute(_SEG_SELECT + " WHERE s.recording_id=? ORDER BY s.start, s.row_id", (recording_id,)).fetchall()
        return [_seg(r) for r in rows]

    def row_ids_for_path(self, pattern: str) -> np.ndarray:
        """Row ids of segments whose recording path matches: a glob (``*?[``) or else a substring."""
        with self._guard():
            if any(ch in pattern for ch in "*?["):
                sql = "SELECT s.row_id FROM segments s JOIN recordings r ON r.id=s.recording_id WHERE r.path GLOB ?"
            else:
                sql = "SELECT s.row_id FROM segments s JOIN recordings r ON r.id=s.recording_id WHERE instr(r.path, ?) > 0"
            return np.fromiter((r[0] for r in self.conn.execute(sql, (pattern,))), dtype=np.int64)


_REC_SELECT = "SELECT id, path, content_hash, duration, sample_rate, indexed_at, custom FROM recordings"
_SEG_SELECT = (
    "SELECT s.row_id, s.id, s.recording_id, s.start, s.duration, s.kind, s.transcript, s.custom, r.path "
    "FROM segments s JOIN recordings r ON r.id=s.recording_id"
)


def _rec(row: tuple | None) -> RecordingRow | None:
    if row is None:
        return None
    return RecordingRow(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]) if row[6] else {})


def _seg(row: tuple) -> SegmentRow:
    return SegmentRow(int(row[0]), row[1], row[2], float(row[3]), float(row[4]), row[5], row[6], json.loads(row[7]) if row[7] else {}, row[8])


def _unpack(rows: list[tuple[int, bytes]], dim: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    blob = b"".join(r[1] for r in rows)
    if len(blob) != len(rows) * dim * 4:
        raise IndexCorruptError(f"{path}: stored vectors do not have {dim} float32 values each; {REBUILD_HINT}")
    return ids, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim).copy()
