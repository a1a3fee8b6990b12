"""Content hashes (sha256 of file bytes) with a stat-keyed memo so unchanged files are not re-read."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sonalign.utils.atomic import atomic_write_text


_DIGESTS: dict[tuple[str, tuple[int, ...]], str] = {}
def file_sha256(path: str | Path, chunk: int = 1 << 20, *, across_processes: bool = False) -> str:
    """sha256 of a file's bytes, remembered while the file's :func:`stat_key` holds: in this process,
    and with ``across_processes`` in ``$SONALIGN_CACHE/file-hashes.json`` too (model weights: every
    ``sonalign search`` checks the index's weights hash, and re-reading them costs time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), tuple(stat_key(st)))
    if key in _DIGESTS:
        return _DIGESTS[key]
    memo = HashMemo(_persistent_memo()) if across_processes else None
    entry = memo._memo.get(key[0]) if memo else None
    if entry and entry[:-1] == list(key[1]):
        _DIGESTS[key] = entry[-1]
        return entry[-1]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    _DIGESTS[key] = digest.hexdigest()
    if memo is not None:
        with contextlib.suppress(OSError):  # a read-only cache folder only costs re-hashing
            memo._memo[key[0]] = [*key[1], _DIGESTS[key]]
            memo._dirty = True
            memo.save()
    return _DIGESTS[key]


def _persistent_memo() -> Path:
    from sonalign.utils.paths import default_cache_dir

    return default_cache_dir() / "file-hashes.json"


def settings_hash(settings: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-able settings object (key order does not matter)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:length]


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def stat_key(st: os.stat_result) -> list[int]:
    """What says a file is unchanged: size, inode, mtime and ctime. ``cp -p``, ``rsync -a`` and
    ``touch -r`` can restore a same-size file's mtime, but not its ctime (set by the kernel on every
    write or rename, and not settable by users) nor, for a replaced file, its inode."""
    return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]


class HashMemo:
    """Remembers ``path -> (stat key, sha256)`` in a JSON file; re-hashes only changed files
    (see :func:`stat_key` for what is trusted)."""

    def __init__(self, memo_path: str | Path):
        self.memo_path = Path(memo_path)
        self._memo: dict[str, list] = {}
        if self.memo_path.exists():
            try:
                self._memo = json.loads(self.memo_path.read_text())
            except (json.JSONDecodeError, OSError):
                self._memo = {}  # a damaged memo only costs re-hashing
        self._dirty = False

    def hash(self, path: str | Path) -> str:
        path = Path(path)
        st = path.stat()
        key = str(path.resolve())
        entry = self._memo.get(key)
        if entry and entry[:-1] == stat_key(st):
            return entry[-1]
        digest = file_sha256(path)
        self._memo[key] = [*stat_key(st), digest]
        self._dirty = True
        return digest

    def save(self) -> None:
        if self._dirty:
            atomic_write_text(self.memo_path, json.dumps(self._memo))
            self._dirty = False
