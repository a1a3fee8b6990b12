import os

import pytest

from sonalign.utils.atomic import atomic_path, atomic_write_text
from sonalign.utils.hashing import HashMemo, file_sha256, settings_hash


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.listdir(p.parent) == ["f.txt"]


def test_failed_write_keeps_old_file(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_settings_hash_is_order_independent():
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


def test_hash_memo_rehashes_only_changed_files(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    memo = HashMemo(tmp_path / "memo.json")
    first = memo.hash(f)
    assert first == file_sha256(f)
    memo.save()
    again = HashMemo(tmp_path / "memo.json")
    assert again.hash(f) == first and not again._dirty
    f.write_bytes(b"abcd")
    os.utime(f, ns=(1, 1))
    assert again.hash(f) == file_sha256(f) != first
