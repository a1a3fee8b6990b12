"""Faiss index files with a checksummed footer, written atomically.

:func:`write_index_file` writes the faiss index to a temporary file, appends a footer (magic, JSON
meta holding the caller's tag, payload size and CRC-32), fsyncs and ``os.replace`` s it over the
target, so a reader sees the old file or the new one, never a torn one. :func:`read_index_file`
rejects a damaged file with :class:`~sonalign.errors.IndexCorruptError` before faiss ever parses it.
faiss ignores trailing bytes, so the file stays readable by ``faiss.read_index``.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import faiss

from sonalign.errors import IndexCorruptError, StorageError
from sonalign.utils.atomic import atomic_path

_FOOTER_MAGIC = b"SONALIGNVEC1"
_FOOTER_TAIL = struct.Struct("<QQ12s")  # payload size, json length, magic


def write_index_file(index: Any, path: str | Path, meta: dict[str, Any]) -> None:
    """Write ``index`` to ``path`` atomically with a footer holding ``meta`` and the payload's CRC-32."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # faiss reports a failed write (disk full, I/O error) as a C++ RuntimeError
            detail = str(exc).strip().splitlines()[-1][-200:] if str(exc).strip() else type(exc).__name__
            raise StorageError(f"{path}: could not write the vector index ({detail}); check the free disk space and run again "
                               "(what was committed is kept)") from None
        size = tmp.stat().st_size
        with open(tmp, "rb") as handle:
            crc = _crc32(handle, size)
        header = json.dumps({**meta, "crc32": crc}).encode("utf-8")
        with open(tmp, "ab") as handle:
            handle.write(header)
            handle.write(_FOOTER_TAIL.pack(size, len(header), _FOOTER_MAGIC))


def read_index_file(path: str | Path, *, require_footer: bool = False) -> tuple[Any, dict[str, Any] | None]:
    """``(faiss index, footer meta)`` of a file written by :func:`write_index_file` (or, unless
    ``require_footer``, a plain faiss file: meta None). IndexCorruptError names a damaged file."""
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
    return index, (footer[1] if footer else None)


def file_tag(path: str | Path) -> dict[str, Any] | None:
    """The tag saved in a vector file's footer, without loading the index (None if absent/damaged)."""
    try:
        with open(path, "rb") as handle:
            footer = _read_footer(handle)
    except FileNotFoundError:
        return None
    return footer[1].get("tag") if footer else None


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


__all__ = ["file_tag", "read_index_file", "write_index_file"]
