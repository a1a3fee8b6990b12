"""Where sonalign keeps what it can recompute: one cache folder."""

from __future__ import annotations

from pathlib import Path

CACHE_ENV = "SONALIGN_CACHE"


def default_cache_dir() -> Path:
    """sonalign's one cache folder: ``$SONALIGN_CACHE``, else ``$XDG_CACHE_HOME/sonalign``, else
    ``~/.cache/sonalign``."""
    import os

    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sonalign"
