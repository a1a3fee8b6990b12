"""Where sonalign finds files: its one cache folder, and data files shipped inside installed packages."""

from __future__ import annotations

from pathlib import Path

from sonalign.errors import ConfigError

CACHE_ENV = "SONALIGN_CACHE"


def default_cache_dir() -> Path:
    """sonalign's one cache folder: ``$SONALIGN_CACHE``, else ``$XDG_CACHE_HOME/sonalign``, else
    ``~/.cache/sonalign``."""
    import os

    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sonalign"


def package_file(package: str, relative: str, needed_by: str) -> Path:
    """The file ``relative`` inside the installed ``package``, found without importing it (some
    packages' ``__init__`` change global state, e.g. torch's thread count); a :class:`ConfigError`
    naming ``needed_by`` and the install command when the package or the file is missing."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{needed_by} needs the {package!r} package (pip install {package.replace('_', '-')})")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ConfigError(f"{package} is installed but its file {relative} is missing: {path}")
    return path
