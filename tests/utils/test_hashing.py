"""File hashes: remembered while the file is unchanged (size, inode, mtime, ctime)."""

import builtins

import pytest

from sonalign.utils import hashing


def test_weights_digest_is_remembered_across_processes_until_the_file_changes(tmp_path, monkeypatch, user_cache):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights" * 1000)
    first = hashing.file_sha256(weights, across_processes=True)
    assert (user_cache / "file-hashes.json").exists()
    hashing._DIGESTS.clear()  # a new process
    real_open = builtins.open

    def no_reading(path, mode="r", *args, **kwargs):
        if str(path) == str(weights):
            raise AssertionError("the weights were read again")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_reading)
    assert hashing.file_sha256(weights, across_processes=True) == first
    monkeypatch.setattr(builtins, "open", real_open)
    weights.write_bytes(b"retrained" * 1000)
    hashing._DIGESTS.clear()
    assert hashing.file_sha256(weights, across_processes=True) != first


def test_same_size_edit_with_restored_mtime_is_hashed_again(tmp_path):
    import os

    f = tmp_path / "a.bin"
    f.write_bytes(b"a" * 100)
    memo = hashing.HashMemo(tmp_path / "memo.json")
    before = memo.hash(f)
    st = f.stat()
    f.write_bytes(b"b" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert memo.hash(f) != before


@pytest.mark.parametrize("order", [("a", 1), ("b", 2)])
def test_settings_hash_ignores_key_order(order):
    assert hashing.settings_hash({"x": 1, "y": order}) == hashing.settings_hash({"y": order, "x": 1})
