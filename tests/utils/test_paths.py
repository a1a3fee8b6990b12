"""The cache folder and data files inside installed packages."""

import pytest

from sonalign.errors import ConfigError
from sonalign.utils.paths import CACHE_ENV, default_cache_dir, package_file


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "sonalign"


def test_package_file_is_found_without_importing_the_package():
    assert package_file("sonalign", "models/configs/clap-baseline.json", "a test").is_file()


def test_a_missing_package_or_file_names_what_needs_it_and_how_to_install():
    with pytest.raises(ConfigError, match=r"the speech segmenter needs the 'not_a_pkg' package \(pip install not-a-pkg\)"):
        package_file("not_a_pkg", "x", "the speech segmenter")
    with pytest.raises(ConfigError, match="sonalign is installed but its file nope.bin is missing"):
        package_file("sonalign", "nope.bin", "a test")
