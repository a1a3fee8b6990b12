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


class StorageError(SonalignError):
    """The operating system refused a read or write (permissions, disk full, read-only filesystem,
    a lock held by another process); the message names the path and what to do."""


def describe_os_error(exc: OSError, action: str = "") -> str:
    """One line for an operating-system error: the path, what went wrong and what to do."""
    import errno

    where = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or str(exc) or type(exc).__name__
    advice = {
        errno.EACCES: "check its permissions, or choose another location",
        errno.EPERM: "check its permissions, or choose another location",
        errno.ENOSPC: "the disk is full: free some space and run the same command again (committed work is kept)",
        errno.EROFS: "it is on a read-only filesystem: choose a writable location",
        errno.EDQUOT: "the disk quota is exceeded: free some space and run again",
    }.get(exc.errno or 0, "")
    return f"{where}: {what}" + (f" while {action}" if action else "") + (f"; {advice}" if advice else "")
