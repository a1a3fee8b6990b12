"""The searchable copies of an index's vectors, kept in line with ``meta.sqlite``.

Each vector kind (``""`` main, ``"transcript"``...) is searched through one
:class:`~sonalign.index.backend.VectorBackend`, kept between runs by a
:class:`~sonalign.index.backend.VectorStorage`. :class:`VectorCopies` loads them, checks them against
SQLite and repairs them, gathers each transaction's added and removed rows and applies them once SQLite
has committed, saves the copies whose turn it is, and lets a read-only store catch up with a writer's
commits. See :mod:`sonalign.index.store` for the design.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from sonalign.errors import IndexCorruptError
from sonalign.index.backend import VectorBackend, VectorStorage
from sonalign.index.metadata import REBUILD_HINT, MetadataDB
from sonalign.index.vectors import FaissIndex

#: A commit rewrites a vector file only once the rows changed since it was written exceed this share of
#: the rows it holds. Files are then rewritten at sizes growing geometrically, so the bytes written over
#: a whole build stay proportional to the index (at most about ``1 + 1/SNAPSHOT_RATIO`` times its final
#: size), and an opener of a lagging file replays at most this share of it from SQLite. 0: at every commit.
SNAPSHOT_RATIO = 0.25
_NO_IDS = np.zeros(0, np.int64)


class Pending:
    """Rows added to and removed from one vector kind that its copy does not hold yet."""

    def __init__(self) -> None:
        self.removed: set[int] = set()
        self.added: dict[int, np.ndarray] = {}
        self.rows = 0  # every row added or removed, also those that cancel out

    def remove(self, ids: np.ndarray) -> None:
        for i in ids.tolist():
            if self.added.pop(i, None) is None:
                self.removed.add(i)
        self.rows += int(ids.size)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.added.update(zip(ids.tolist(), vectors, strict=True))
        self.rows += int(ids.size)

    def then(self, later: "Pending") -> "Pending":
        """These changes followed by ``later``'s."""
        rows = self.rows + later.rows
        self.remove(np.fromiter(later.removed, np.int64, len(later.removed)))
        self.added.update(later.added)
        self.rows = rows
        return self

    def arrays(self, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ids to remove, ids to add, their vectors)``."""
        ids = np.fromiter(self.added, np.int64, len(self.added))
        vectors = np.stack(list(self.added.values())) if self.added else np.zeros((0, dim), np.float32)
        return np.fromiter(sorted(self.removed), np.int64, len(self.removed)), ids, vectors


class VectorCopies:
    """The copy of each vector kind a store searches; see the module docstring."""

    def __init__(self, db: MetadataDB, storage: VectorStorage, *, readonly: bool, snapshot_ratio: float = SNAPSHOT_RATIO):
        self.db = db
        self.storage = storage
        self.readonly = readonly
        self.snapshot_ratio = float(snapshot_ratio)
        self.indexes: dict[str, VectorBackend] = {}  # replaced whole, never changed in place: searches hold the old one
        self.loaded_generation = -1
        self._pending: dict[str, Pending] = {}  # the open transaction's changes
        self._unapplied: dict[str, Pending] = {}  # committed changes an apply failed on (retried at the next commit or close)
        self._saved_rows: dict[str, int | None] = {}  # rows in each kind's saved copy (None: no valid saved copy)
        self._lag: dict[str, int] = {}  # rows changed since each kind's copy was saved
        self._stale_since: float | None = None
        self._last_refresh = 0.0
        self._refresh_lock = threading.Lock()

    def dims(self) -> dict[str, int]:
        """``{kind: dim}`` of every vector kind the index has (``""``: the main vectors)."""
        dims = {str(k): int(v) for k, v in (self.db.get_meta("extra_dims") or {}).items()}
        main = self.db.get_meta("dim")
        if main is not None:
            dims[""] = int(main)
        return dims

    # ------------------------------------------------------------------ loading
    def load(self, *, repair: bool = False, reuse: dict[str, VectorBackend] | None = None) -> None:
        """Load every kind's saved copy and bring it in line with SQLite: missing, of another index
        (uuid) or of an older generation, it gets SQLite's rows by set difference. A writer's copies on
        a server are repaired there; a reader never changes a server's copy and searches one made in
        memory instead. ``reuse``: copies whose tag already matches SQLite are kept instead of re-read.
        Nothing is saved here: :meth:`save_behind` does that (a writer's open)."""
        # The generation is read first: a writer committing while this runs makes what is loaded
        # newer than the label (caught up at the next refresh), never older.
        generation = int(self.db.get_meta("generation") or 0)
        uid = self.db.get_meta("index_uuid")
        vgens = self.db.get_meta("vector_generations") or {}
        indexes: dict[str, VectorBackend] = {}
        for name, dim in self.dims().items():
            want = self.db.count_vectors(name or None)
            current = (reuse or {}).get(name)
            if current is not None and current.tag == {"index_uuid": uid, "generation": vgens.get(name, 0)} and current.ntotal == want:
                indexes[name] = current
                continue
            index = self._read_saved(name, dim, uid, repair)
            self._saved_rows[name] = None if index is None else index.ntotal
            self._lag[name] = 0
            if index is None or (index.tag or {}).get("generation") != vgens.get(name, 0) or index.ntotal != want:
                if index is None or (self.readonly and self.storage.server_side):
                    index = self.storage.new(name, dim)
                index, changed = self._sync(index, name)
                # At least 1: even holding the same rows, the saved copy is labelled with an older state.
                self._lag[name] = max(1, changed)
                index.tag = None  # its content no longer matches the saved copy it came from
            indexes[name] = index
        self.indexes = indexes
        self.loaded_generation = generation

    def _read_saved(self, name: str, dim: int, uid: str, repair: bool) -> VectorBackend | None:
        """The saved copy of kind ``name`` as it is; None if missing, of another index, or (with ``repair``) damaged."""
        try:
            index = self.storage.load(name, dim)
        except IndexCorruptError as exc:
            if not repair:
                raise IndexCorruptError(
                    f"{exc}. {REBUILD_HINT[0].upper()}{REBUILD_HINT[1:]}; or, since {self.db.path} holds every vector, "
                    f"regenerate the file with IndexStore.open({str(self.db.path.parent)!r}, repair=True)"
                ) from None
            return None
        if index is not None and ((index.tag or {}).get("index_uuid") != uid or index.dim != dim):
            return None  # a file left from another index: not ours to trust
        return index

    def _sync(self, index: VectorBackend, name: str) -> tuple[VectorBackend, int]:
        """Make ``index`` hold exactly SQLite's ids for kind ``name``: ``(the index that does, rows changed)``."""
        key = name or None
        stale, missing = self._difference(index, key)
        if stale.size:
            index = index.apply(stale, _NO_IDS, np.zeros((0, index.dim), np.float32))
        for ids, vecs in self._read_vectors(index.dim, key, missing):
            index = index.apply(_NO_IDS, ids, vecs)
        return index, int(stale.size + missing.size)

    def _difference(self, index: VectorBackend, key: str | None) -> tuple[np.ndarray, np.ndarray]:
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

    # ------------------------------------------------------------------ writing
    def stage(self, name: str, remove: np.ndarray, add_ids: np.ndarray = _NO_IDS, add_vectors: np.ndarray | None = None) -> None:
        """Record a change of the open transaction, applied to the copy of ``name`` once committed."""
        pending = self._pending.setdefault(name, Pending())
        pending.remove(remove)
        if add_ids.size:
            pending.add(add_ids, add_vectors)

    def changed_kinds(self) -> set[str]:
        """The kinds the open transaction changed."""
        return set(self._pending)

    def discard(self) -> None:
        """Forget the open transaction's changes (it was rolled back)."""
        self._pending = {}

    def committed(self, vgens: dict[str, int]) -> bool:
        """SQLite has committed the open transaction: apply its changes to the copies and save those
        due (:data:`SNAPSHOT_RATIO`), labelled with ``vgens``. Returns whether any copy was saved."""
        changed = set(self._pending)
        for name, pending in self._pending.items():
            self._unapplied[name] = self._unapplied[name].then(pending) if name in self._unapplied else pending
        self._pending = {}
        self._apply_unapplied()
        due = {name for name in changed if self._save_due(name)}
        self.save(due, vgens)
        return bool(due)

    def _apply_unapplied(self) -> None:
        for name in sorted(self._unapplied):
            pending = self._unapplied[name]
            index = self.indexes.get(name) or self.storage.new(name, self.dims()[name])
            self.indexes = {**self.indexes, name: index.apply(*pending.arrays(index.dim))}
            self._lag[name] = self._lag.get(name, 0) + pending.rows
            del self._unapplied[name]

    def _save_due(self, name: str) -> bool:
        """Whether kind ``name`` should be saved now. A server-side copy saves only what changed, so at every commit."""
        rows = self._saved_rows.get(name)
        return self.storage.server_side or rows is None or self._lag.get(name, 0) > self.snapshot_ratio * rows

    def save(self, names: set[str], vgens: dict[str, int] | None = None) -> None:
        uid = self.db.get_meta("index_uuid")
        vgens = self.db.get_meta("vector_generations") or {} if vgens is None else vgens
        for name in sorted(names):
            index = self.indexes.get(name)
            if index is not None:
                self.storage.save(name, index, {"index_uuid": uid, "generation": vgens.get(name, 0)})
                self._saved_rows[name], self._lag[name] = index.ntotal, 0

    def save_behind(self) -> bool:
        """Apply what is committed but not applied, then save every copy whose saved state lags it
        (a writer's open and close). Returns whether any was saved."""
        self._apply_unapplied()
        behind = {name for name in self.indexes if self._lag.get(name) or self._saved_rows.get(name) is None}
        self.save(behind)
        return bool(behind)

    def unsaved(self, name: str) -> int:
        """Rows this store changed in kind ``name`` (committed or not) that its saved copy lacks."""
        return self._lag.get(name, 0) + sum(p.rows for p in (self._unapplied.get(name), self._pending.get(name)) if p is not None)

    # ------------------------------------------------------------------ a reader catching up
    def refresh(self, min_interval: float, stale_grace: float) -> bool:
        """Pick up a writer's commits; see :meth:`~sonalign.index.store.IndexStore.refresh`."""
        if not self._refresh_lock.acquire(blocking=False):
            return False  # another thread is refreshing; keep searching the current copies
        try:
            now = time.monotonic()
            if now - self._last_refresh < min_interval:
                return False
            self._last_refresh = now
            if int(self.db.get_meta("generation") or 0) == self.loaded_generation:
                self._stale_since = None
                return False
            if self.storage.server_side:
                return self._reload(now, stale_grace)
            self._catch_up()
            return True
        finally:
            self._refresh_lock.release()

    def _catch_up(self) -> None:
        """Apply what changed in SQLite since the last refresh to the copies in memory. Each changes in
        one step (a search sees all of it or none); a change that would rebuild one is made on a copy."""
        with self.db.snapshot():
            generation = int(self.db.get_meta("generation") or 0)
            changes = {name: self._changes(name, dim) for name, dim in self.dims().items()}
        for name, (index, stale, ids, vecs) in changes.items():
            index = index.apply(stale, ids, vecs)
            if self.indexes.get(name) is not index:
                self.indexes = {**self.indexes, name: index}
        self.loaded_generation = generation

    def _changes(self, name: str, dim: int) -> tuple[FaissIndex, np.ndarray, np.ndarray, np.ndarray]:
        """``(index, ids to remove, ids to add, their vectors)`` that bring this reader's copy of kind
        ``name`` to SQLite's state.

        Row ids are never reused and a new row's id is above every earlier one, so the rows above the
        largest id the copy has seen are the new ones; if SQLite's count then agrees, nothing was
        removed and nothing more is read. Otherwise the removed ids are found by a set difference.
        """
        index = self.indexes.get(name) or self.storage.new(name, dim)
        assert isinstance(index, FaissIndex), "only copies in memory catch up"
        key = name or None
        ids, vecs = _concat(self.db.iter_vectors(dim, key, after=index.max_id), dim)
        if index.ntotal + ids.size == self.db.count_vectors(key):
            return index, _NO_IDS, ids, vecs
        stale, missing = self._difference(index, key)
        ids, vecs = _concat(self._read_vectors(dim, key, missing), dim)
        return index, stale, ids, vecs

    def _reload(self, now: float, stale_grace: float) -> bool:
        """Reload server-side copies once the writer has saved the committed generation there; if that
        stays behind SQLite for ``stale_grace`` seconds (a writer that died mid-way), reload anyway
        (the lagging kinds are then searched in memory, see :meth:`load`)."""
        vgens = self.db.get_meta("vector_generations") or {}
        ready = all((self.storage.saved_tag(n) or {}).get("generation") == vgens.get(n, 0) for n in self.dims() if n in vgens)
        if not ready:
            if self._stale_since is None:
                self._stale_since = now
                return False
            if now - self._stale_since < stale_grace:
                return False
        self._stale_since = None
        self.load(reuse=self.indexes)
        return True


def _concat(batches: Iterator[tuple[np.ndarray, np.ndarray]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """One ``(ids, vectors)`` pair from batches of them."""
    parts = list(batches)
    if not parts:
        return _NO_IDS, np.zeros((0, dim), np.float32)
    return np.concatenate([ids for ids, _ in parts]), np.concatenate([vecs for _, vecs in parts])


__all__ = ["SNAPSHOT_RATIO", "Pending", "VectorCopies"]
