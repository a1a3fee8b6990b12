"""One error type per kind of bad input, each naming the file or field at fault."""

from __future__ import annotations

from pathlib import Path


class SonalignError(Exception):
    """Base class: every error sonalign raises on purpose."""


class AudioError(SonalignError):
    """An audio file that cannot be used: unreadable, corrupt, empty, zero-length or all-silent."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(SonalignError):
    """A manifest (JSONL, CSV) with a malformed line or a missing/invalid field."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path + (f":{line}" if line is not None else "")
        what = f" field '{field}'" if field else ""
        super().__init__(f"{where}:{what} {reason}".replace(": ", ": ", 1))


class ConfigError(SonalignError):
    """A model or run configuration that does not validate."""


class IndexCorruptError(SonalignError):
    """An index on disk that cannot be read; the message says how to rebuild it."""
