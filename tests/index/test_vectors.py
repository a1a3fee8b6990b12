"""FaissIndex: exact flat search, HNSW switch-over and recall, deletions (tombstones), atomic files."""

from __future__ import annotations

import numpy as np
import pytest

from sonalign.errors import IndexCorruptError
from sonalign.index.backend import VectorBackend
from sonalign.index.vector_file import file_tag
from sonalign.index.vectors import FaissIndex, normalize


def clustered(n: int, d: int, seed: int = 0, rank: int = 24) -> np.ndarray:
    """Random vectors with low intrinsic dimension, like real embeddings."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)).astype(np.float32)
    x = rng.standard_normal((n, rank)).astype(np.float32) @ basis + 0.1 * rng.standard_normal((n, d)).astype(np.float32)
    return normalize(x)


def exact_topk(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = normalize(q) @ x.T
    return ids[np.argsort(-sims, axis=1, kind="stable")[:, :k]]


def test_protocol_and_flat_search_is_exact():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    ids = np.arange(1000, 1500)
    index = FaissIndex(32)
    assert isinstance(index, VectorBackend)
    index.add(ids, x)
    assert index.kind == "flat" and index.ntotal == 500
    q = rng.standard_normal((7, 32)).astype(np.float32)
    scores, got = index.search(q, 10)
    assert got.shape == (7, 10) and scores.dtype == np.float32
    np.testing.assert_array_equal(got, exact_topk(normalize(x), ids, q, 10))
    # scores are cosines, best first
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert np.all(scores <= 1.0 + 1e-5)


def test_k_larger_than_index_pads_with_minus_one():
    index = FaissIndex(8)
    index.add([5, 6], np.eye(8, dtype=np.float32)[:2])
    scores, ids = index.search(np.eye(8, dtype=np.float32)[0], 4)
    assert ids[0].tolist()[:2] == [5, 6] and ids[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 2:]).all()
    empty = FaissIndex(8)
    s, i = empty.search(np.ones(8, np.float32), 3)
    assert (i == -1).all()


def test_bad_inputs_are_rejected():
    index = FaissIndex(4)
    with pytest.raises(ValueError, match="shape"):
        index.add([1], np.ones((1, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        index.add([1], np.full((1, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="duplicate"):
        index.add([1, 1], np.ones((2, 4), np.float32))
    index.add([1], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="already"):
        index.add([1], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError):
        index.add([-3], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError):
        index.search(np.ones((1, 3), np.float32), 1)
    with pytest.raises(ValueError):
        index.search(np.ones((1, 4), np.float32), 0)


def test_flat_remove_and_reconstruct():
    x = clustered(300, 16)
    index = FaissIndex(16)
    index.add(np.arange(300), x)
    assert index.remove(np.arange(0, 300, 2)) == 150
    assert index.remove([0, 2, 99999]) == 0
    assert index.ntotal == 150
    _, got = index.search(x[:20], 5)
    assert not np.isin(got, np.arange(0, 300, 2)).any()
    found, vecs = index.reconstruct([1, 2, 3])
    assert found.tolist() == [1, 3]
    np.testing.assert_allclose(vecs, x[[1, 3]], atol=1e-6)
    np.testing.assert_array_equal(index.ids(), np.arange(1, 300, 2))


def test_switches_to_hnsw_at_threshold_with_high_recall():
    x = clustered(2000, 64, seed=3)
    q = clustered(200, 64, seed=4)
    ids = np.arange(2000) * 3 + 7
    index = FaissIndex(64, hnsw_threshold=1000)
    index.add(ids[:900], x[:900])
    assert index.kind == "flat"
    index.add(ids[900:], x[900:])
    assert index.kind == "hnsw" and index.ntotal == 2000
    _, got = index.search(q, 10)
    truth = exact_topk(x, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    assert recall >= 0.98, recall


def test_hnsw_removal_uses_tombstones_then_compacts():
    x = clustered(1000, 32, seed=5)
    index = FaissIndex(32, hnsw_threshold=250, compact_ratio=0.3)
    index.add(np.arange(1000), x)
    removed = np.arange(0, 200)
    assert index.remove(removed) == 200
    assert index.kind == "hnsw" and index.tombstones == 200 and index.ntotal == 800
    _, got = index.search(x[:50], 10)
    assert not np.isin(got, removed).any()
    assert (got >= 0).all()  # still k real hits
    assert index.reconstruct([5])[0].size == 0
    index.remove(np.arange(200, 400))  # > 30 % tombstones: rebuilt
    assert index.tombstones == 0 and index.ntotal == 600
    np.testing.assert_array_equal(index.ids(), np.arange(400, 1000))
    index.remove(np.arange(400, 950))  # shrinks below half the threshold: back to flat
    assert index.kind == "flat" and index.ntotal == 50
    # ids removed from HNSW can come back
    index.add([3], x[3:4])
    assert index.search(x[3], 1)[1][0, 0] == 3


@pytest.mark.parametrize("threshold", [10**9, 200])
def test_update_removes_and_adds_in_one_step(threshold):
    x = clustered(600, 16, seed=11)
    index = FaissIndex(16, hnsw_threshold=threshold)
    index.add(np.arange(500), x[:500])
    assert index.max_id == 499
    with pytest.raises(ValueError, match="already"):  # checked before anything changes
        index.update(np.arange(10), np.array([20, 500]), x[500:502])
    assert index.ntotal == 500
    assert index.update(np.arange(10), np.arange(500, 600), x[500:]) == 10
    assert index.ntotal == 590 and index.max_id == 599
    np.testing.assert_array_equal(index.ids(), np.arange(10, 600))
    assert index.remove(np.arange(590, 600)) == 10
    assert index.max_id == 599  # the largest id ever added: a higher one is new
    assert index.update([], [], None) == 0


def test_would_rebuild_and_updated_copy_leave_the_original_alone():
    x = clustered(400, 16, seed=12)
    flat = FaissIndex(16, hnsw_threshold=300)
    flat.add(np.arange(250), x[:250])
    assert not flat.would_rebuild(0, 49) and flat.would_rebuild(0, 50) and not flat.would_rebuild(10, 50)
    copy = flat.updated_copy(np.arange(5), np.arange(250, 400), x[250:])
    assert flat.kind == "flat" and flat.ntotal == 250  # unchanged
    assert copy.kind == "hnsw" and copy.ntotal == 395 and copy.max_id == 399
    np.testing.assert_array_equal(copy.ids(), np.arange(5, 400))
    assert copy.search(x[300], 1)[1][0, 0] == 300
    hnsw = FaissIndex(16, hnsw_threshold=100, compact_ratio=0.2)
    hnsw.add(np.arange(400), x)
    assert not hnsw.would_rebuild(80, 0) and hnsw.would_rebuild(81, 0)  # tombstones above a fifth of the slots
    smaller = hnsw.updated_copy(np.arange(100))
    assert hnsw.ntotal == 400 and hnsw.tombstones == 0 and smaller.ntotal == 300 and smaller.tombstones == 0


@pytest.mark.parametrize("threshold", [10**9, 200])
def test_allowed_ids_filter_is_exact(threshold):
    x = clustered(1500, 24, seed=6)
    ids = np.arange(1500)
    index = FaissIndex(24, hnsw_threshold=threshold)
    index.add(ids, x)
    allowed = np.arange(100, 1500, 7)
    q = clustered(10, 24, seed=7)
    _, got = index.search(q, 5, allowed_ids=allowed)
    np.testing.assert_array_equal(got, exact_topk(x[allowed], allowed, q, 5))
    _, none = index.search(q, 5, allowed_ids=np.array([99999]))
    assert (none == -1).all()


@pytest.mark.parametrize("threshold", [10**9, 100])
def test_save_load_round_trip_with_tag(tmp_path, threshold):
    x = clustered(400, 16, seed=8)
    index = FaissIndex(16, hnsw_threshold=threshold)
    index.add(np.arange(400) + 10, x)
    index.remove([10, 11, 12])
    path = tmp_path / "v.faiss"
    index.save(path, tag={"generation": 7})
    assert file_tag(path) == {"generation": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]  # no temp files left
    back = FaissIndex.load(path, hnsw_threshold=threshold)
    assert back.kind == index.kind and back.ntotal == 397 and back.tag == {"generation": 7}
    q = x[:20]
    np.testing.assert_array_equal(back.search(q, 5)[1], index.search(q, 5)[1])
    # plain faiss can still read the file (the footer is ignored)
    import faiss

    assert faiss.read_index(str(path)).ntotal == index._index.ntotal


def test_damaged_files_raise_index_corrupt(tmp_path):
    index = FaissIndex(8)
    index.add(np.arange(50), clustered(50, 8))
    path = tmp_path / "v.faiss"
    index.save(path, tag={"g": 1})
    data = path.read_bytes()
    truncated = tmp_path / "t.faiss"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "f.faiss"
    flipped.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    garbage = tmp_path / "g.faiss"
    garbage.write_bytes(b"not an index at all" * 10)
    empty = tmp_path / "e.faiss"
    empty.write_bytes(b"")
    for bad in (truncated, flipped, garbage, empty):
        with pytest.raises(IndexCorruptError, match=bad.name):
            FaissIndex.load(bad, require_footer=True)
    with pytest.raises(IndexCorruptError):
        FaissIndex.load(garbage)  # without the footer requirement faiss itself rejects it
    with pytest.raises(FileNotFoundError):
        FaissIndex.load(tmp_path / "missing.faiss")


def test_automatic_ef_search_widens_for_large_indexes(monkeypatch):
    from sonalign.index import vectors

    monkeypatch.setattr(vectors, "LARGE_INDEX", 300)
    index = FaissIndex(8, hnsw_threshold=100)
    rng = np.random.default_rng(0)
    index.add(np.arange(200), rng.standard_normal((200, 8)).astype(np.float32))
    assert index.kind == "hnsw" and index.ef_search == vectors.DEFAULT_EF_SEARCH
    index.add(np.arange(200, 400), rng.standard_normal((200, 8)).astype(np.float32))
    assert index.ef_search == vectors.LARGE_EF_SEARCH and index.describe()["efSearch"] == vectors.LARGE_EF_SEARCH
    index.ef_search = 40  # an explicit value wins at any size
    assert index.ef_search == 40
    index.ef_search = None
    assert index.ef_search == vectors.LARGE_EF_SEARCH
