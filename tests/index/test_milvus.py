"""The Milvus backend against a real Milvus standalone server (PyPI ``milvus`` 2.3.5) started on loopback.

Every test here needs the server: they skip, with the reason, where it cannot start (package missing,
no port, timeout). The server is started once per session in its own process group and the whole
group is stopped afterwards (see ``milvus_server.py`` and the ``milvus`` fixture in conftest.py).
What a store does on either backend is tested in test_store.py; here, what only Milvus has.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sonalign.errors import ConfigError
from sonalign.index.store import IndexStore
from sonalign.index.vectors import FaissIndex, normalize

from .test_store import DIM, check_consistent, upsert

pytestmark = pytest.mark.timeout(300)


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / y.shape[0] for x, y in zip(a, b, strict=True)]))


def new_index(milvus, name: str, dim: int = 64, **options):
    from sonalign.index.milvus import MilvusIndex

    return MilvusIndex(dim, uri=milvus.uri, collection=name, overwrite=True, **options)


# ---------------------------------------------------------------------- MilvusIndex
def test_top10_agrees_with_faiss_exact_search(milvus):
    x, q = unit(5000, 64, 0), unit(50, 64, 1)
    ids = np.arange(5000, dtype=np.int64) * 7 + 3
    exact = FaissIndex(64)
    exact.add(ids, x)
    t_scores, truth = exact.search(q, 10)
    index = new_index(milvus, "recall")
    index.add(ids, x)
    assert index.ntotal == 5000
    index.save(tag={"generation": 1})
    assert index.tag == {"generation": 1} and index.ntotal == 5000
    scores, found = index.search(q, 10)
    assert overlap(found, truth) >= 0.95
    hit = found == truth
    np.testing.assert_allclose(scores[hit], t_scores[hit], atol=1e-4)
    # a second handle (another process would do the same) sees the saved collection
    from sonalign.index.milvus import MilvusIndex

    again = MilvusIndex.load("recall", uri=milvus.uri)
    assert again.ntotal == 5000 and again.tag == {"generation": 1} and again.dim == 64
    _, found2 = again.search(q, 10)
    assert overlap(found2, truth) >= 0.95
    np.testing.assert_array_equal(again.ids(), np.sort(ids))


def test_deletes_and_updates_are_seen_with_strong_consistency(milvus):
    from sonalign.index.milvus import MilvusIndex

    x = unit(300, 32, 2)
    ids = np.arange(300, dtype=np.int64)
    index = new_index(milvus, "strong", 32, consistency="Strong")
    index.add(ids, x)
    index.save(tag={"g": 1})
    reader = MilvusIndex.load("strong", uri=milvus.uri, consistency="Strong")
    assert reader.consistency == "Strong"
    # delete 0..9, "update" 10..19 (remove + add under new ids, as the store does), add 300..309;
    # unknown ids are ignored
    new_x = unit(20, 32, 3)
    index.apply(np.append(ids[:20], 12345), np.arange(300, 320), new_x)
    assert index.ntotal == 300
    _, got = index.search(x[:20], 1)  # the writer reads its own writes
    assert not np.isin(got, ids[:20]).any()
    _, got = index.search(new_x, 1)
    np.testing.assert_array_equal(got[:, 0], np.arange(300, 320))
    _, got = reader.search(x[:20], 1)  # Strong: another handle sees them at once
    assert not np.isin(got, ids[:20]).any()
    _, got = reader.search(new_x, 1)
    np.testing.assert_array_equal(got[:, 0], np.arange(300, 320))
    index.add([300], new_x[:1])  # upserts are idempotent: a repeated apply changes nothing
    assert index.ntotal == 300
    index.save(tag={"g": 2})
    fresh = MilvusIndex.load("strong", uri=milvus.uri, consistency="Strong")
    assert fresh.ntotal == 300 and fresh.tag == {"g": 2}
    np.testing.assert_array_equal(fresh.ids(), np.arange(20, 320))


def test_default_commit_consistency_reads_the_last_save_without_strong_waits(milvus):
    from sonalign.index.milvus import MilvusIndex

    index = new_index(milvus, "commit", 16)
    assert index.consistency == "commit"
    x = unit(50, 16, 4)
    index.add(np.arange(50), x)
    index.save(tag={"g": 1})
    for round_ in range(3):  # save, then read immediately from another handle: never stale
        index.apply([round_], [1000 + round_], x[round_ : round_ + 1])
        index.save(tag={"g": 2 + round_})
        reader = MilvusIndex.load("commit", uri=milvus.uri)
        assert reader._ts > 0 and reader._read_kw()["consistency_level"] == "Customized"
        _, got = reader.search(x[round_], 1)
        assert got[0, 0] == 1000 + round_
    times = []
    for q in x[:20]:
        t0 = time.perf_counter()
        reader.search(q, 5)
        times.append(time.perf_counter() - t0)
    assert np.median(times) < 0.15, times  # Strong would wait for a time tick (~200 ms) on every query


def test_path_filter(milvus):
    x = unit(600, 16, 5)
    ids = np.arange(600, dtype=np.int64) + 1
    paths = [f"/data/{'music' if i % 3 == 0 else 'speech'}/take {i}.wav" for i in range(600)]
    paths[7] = '/data/music/odd "quoted" name.wav'
    index = new_index(milvus, "paths", 16)
    index.add(ids, x, paths=paths)
    index.save()
    q = unit(4, 16, 6)
    music = ids[[p.startswith("/data/music/") for p in paths]]
    _, got = index.search(q, 10, path_prefix="/data/music/")
    assert np.isin(got, music).all()
    allowed = ids[100:200]
    _, got = index.search(q, 10, allowed_ids=allowed)
    assert np.isin(got, allowed).all()
    exact = FaissIndex(16)
    exact.add(allowed, x[100:200])
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(exact.search(q, 10)[1], axis=1))
    _, got = index.search(q, 3, allowed_ids=[8])  # one allowed row: the rest is padding
    assert got[:, 0].tolist() == [8] * 4 and (got[:, 1:] == -1).all()
    _, got = index.search(q, 5, expr='path like "/data/speech/%" and row_id < 50')
    assert np.isin(got, ids[[p.startswith("/data/speech/") for p in paths]][:50]).all() and (got < 50).all()
    _, got = index.search(x[7], 1, path_prefix='/data/music/odd "quoted"')
    assert got[0, 0] == 8
    with pytest.raises(ValueError):
        index.search(q, 5, path_prefix="/data/100%/")
    # many allowed ids: split into several Milvus expressions, merged exactly
    from sonalign.index import milvus as mv

    old = mv.IN_CHUNK
    mv.IN_CHUNK = 64
    try:
        _, got = index.search(q, 10, allowed_ids=ids[::2])
    finally:
        mv.IN_CHUNK = old
    exact = FaissIndex(16)
    exact.add(ids[::2], x[::2])
    assert overlap(got, exact.search(q, 10)[1]) >= 0.95


# ---------------------------------------------------------------------- IndexStore on Milvus
def test_store_on_milvus_keeps_its_vectors_in_collections(milvus, tmp_path):
    from sonalign.index.milvus_client import collection_name

    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, model="fake", backend="milvus", uri=milvus.uri) as store:
        upsert(store, "a", 10)
        upsert(store, "b", 4)
    assert not list(idx.glob("vectors*.faiss"))
    reader = IndexStore.open(idx, readonly=True)
    assert reader.meta()["vector_backend"] == {"name": "milvus", "uri": milvus.uri}
    assert reader.index().kind == "milvus" and reader.index("transcript").kind == "milvus"
    assert reader.index().collection_name == collection_name(reader.meta()["index_uuid"], "main")
    assert reader.index("transcript").collection_name.endswith("_transcript")
    stats = json.loads((idx / "manifest.json").read_text())
    assert stats["index_type"] == "milvus" and stats["index"]["collection"].startswith("sonalign_")
    # the path field in Milvus is the recording's path
    _, got = reader.index().search(np.ones(DIM, np.float32), 20, path_prefix="/audio/b")
    got = got[got >= 0]
    assert got.size == 4 and {r.path for r in reader.segments(got).values()} == {"/audio/b.wav"}
    reader.close()
    with pytest.raises(ConfigError, match="milvus backend, not faiss"):
        IndexStore.open(idx, backend="faiss")


def test_store_repairs_milvus_after_a_crash_between_sqlite_and_milvus(milvus, tmp_path, monkeypatch):
    from sonalign.index.milvus import MilvusIndex

    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, backend="milvus", uri=milvus.uri) as store:
        upsert(store, "a", 6)
    store = IndexStore.open(idx)
    upsert(store, "a", 4, version=1)
    upsert(store, "b", 5)
    real_apply = MilvusIndex.apply

    def killed_half_way(self, remove, add_ids=(), add_vectors=None, paths=None):  # only part of the change reaches the server...
        real_apply(self, np.asarray(remove)[:1], np.asarray(add_ids)[:2], None if add_vectors is None else np.asarray(add_vectors)[:2])
        raise KeyboardInterrupt("killed")  # ...and the process dies before recording the new tag

    monkeypatch.setattr(MilvusIndex, "apply", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        store.commit()  # SQLite has committed by now
    with pytest.raises(KeyboardInterrupt):
        store.close()  # the "killed" writer gets no further on its way out either (and still lets go of the lock)
    monkeypatch.setattr(MilvusIndex, "apply", real_apply)
    reader = IndexStore.open(idx, readonly=True)  # a reader repairs in memory, never on the server
    assert sorted(reader.recordings()) == ["/audio/a.wav", "/audio/b.wav"]
    check_consistent(reader)
    assert reader.unsaved() > 0
    reader.close()
    store = IndexStore.open(idx)  # the writer repairs the server (set difference against SQLite)
    assert store.unsaved() == 0
    check_consistent(store)
    store.close()
    store = IndexStore.open(idx, readonly=True)
    assert store.unsaved() == 0 and store.index().ntotal == 9
    check_consistent(store)
    store.close()


CRASH_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from index.test_store import upsert
    from sonalign.index.store import IndexStore

    store = IndexStore.open({idx!r}, create=True, backend="milvus", uri={uri!r})
    n = 0
    while True:
        for name in ("p", "q", "r"):
            n += 1
            upsert(store, name, 3 + n % 5, version=n)
        store.commit()
        print("committed", n, flush=True)
    """
)


def test_store_on_milvus_consistent_after_sigkill_mid_update(milvus, tmp_path):
    idx = tmp_path / "idx"
    script = CRASH_WRITER.format(tests=str(Path(__file__).resolve().parents[1]), idx=str(idx), uri=milvus.uri)
    rng = np.random.default_rng(7)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()  # at least one commit done
            assert line.startswith("committed"), proc.stderr.read()[-2000:] if proc.poll() is not None else line
            time.sleep(float(rng.uniform(0.0, 1.5)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        store = IndexStore.open(idx, backend="milvus")
        seen = check_consistent(store)
        assert set(seen) == {"/audio/p.wav", "/audio/q.wav", "/audio/r.wav"}
        assert store.unsaved() == 0
        store.close()
        reader = IndexStore.open(idx, readonly=True)
        assert reader.unsaved() == 0  # the writer's open repaired the server itself
        np.testing.assert_array_equal(reader.index().ids(), reader.db.row_ids())
        reader.close()


def test_rebuild_drops_the_old_collections(milvus, tmp_path):
    from sonalign.index.milvus import MilvusIndex

    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, backend="milvus", uri=milvus.uri) as store:
        upsert(store, "a", 3)
        store.commit()
        old = store.index().collection_name
    assert MilvusIndex.exists(old, uri=milvus.uri)
    with IndexStore.open(idx, rebuild=True) as store:  # keeps the backend it had
        upsert(store, "b", 2)
        store.commit()
        assert store.index().kind == "milvus" and store.index().collection_name != old
    assert not MilvusIndex.exists(old, uri=milvus.uri)


def test_uri_override_for_a_moved_server(milvus, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, backend="milvus", uri=milvus.uri) as store:
        upsert(store, "a", 3)
    db = IndexStore.open(idx)
    db.db.set_meta("vector_backend", {"name": "milvus", "uri": "http://127.0.0.1:1"})  # "the server moved"
    db.db.commit()
    db.close()
    with pytest.raises(ConfigError, match="cannot reach Milvus"):
        IndexStore.open(idx, readonly=True)
    monkeypatch.setenv("SONALIGN_MILVUS_URI", milvus.uri)
    store = IndexStore.open(idx, readonly=True)
    assert store.index().ntotal == 3
    store.close()
    monkeypatch.delenv("SONALIGN_MILVUS_URI")
    store = IndexStore.open(idx, readonly=True, uri=milvus.uri)
    assert store.index().ntotal == 3
    store.close()


# ---------------------------------------------------------------------- build_index end to end
def tones(freqs, sr=16000, seed=0):
    rng = np.random.default_rng(seed)
    parts = [0.003 * rng.standard_normal(sr)]
    for f in freqs:
        t = np.arange(int(0.8 * sr)) / sr
        parts += [0.4 * np.sin(2 * np.pi * f * t), 0.003 * rng.standard_normal(sr)]
    return np.concatenate(parts).astype(np.float32)


def test_build_index_with_milvus_backend_end_to_end(milvus, tmp_path, fake_run):
    from sonalign.index.build import build_index
    from sonalign.index.query import Searcher

    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(3):
        sf.write(folder / f"r{i}.wav", tones([300 + 200 * i, 900], seed=i), 16000)
    idx = tmp_path / "idx"
    first = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, backend="milvus", uri=milvus.uri, workers=1)
    assert first.added == 3 and first.segments == 6 and not first.failures
    (folder / "r1.wav").unlink()
    sf.write(folder / "r3.wav", tones([1500], seed=3), 16000)
    again = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, workers=1)  # backend from the index
    assert (again.added, again.removed, again.unchanged) == (1, 1, 2)
    store = IndexStore.open(idx, readonly=True)
    assert store.index().kind == "milvus" and store.index().ntotal == 5 and store.unsaved() == 0
    np.testing.assert_array_equal(store.index().ids(), store.db.row_ids())
    searcher = Searcher.for_store(store, model=str(fake_run))
    hits = searcher.search("a tone", k=5)
    assert len(hits) == 5 and {Path(h.path).name for h in hits} == {"r0.wav", "r2.wav", "r3.wav"}
    hits = searcher.search("a tone", k=5, path_filter="r3")
    assert [Path(h.path).name for h in hits] == ["r3.wav"]
    store.close()


def test_cli_index_verb_records_the_backend(milvus, tmp_path, fake_run):
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "one.wav", tones([500, 700]), 16000)
    idx = tmp_path / "idx"
    from typer.testing import CliRunner

    from sonalign.cli import app

    args = ["index", str(folder), "--out", str(idx), "--model", str(fake_run), "--no-transcripts", "--workers", "1", "--backend", "milvus", "--uri", milvus.uri]
    done = CliRunner().invoke(app, args, env={"SONALIGN_MILVUS_URI": ""})
    assert done.exit_code == 0, done.output[-3000:]
    store = IndexStore.open(idx, readonly=True)
    assert store.meta()["vector_backend"]["name"] == "milvus" and store.index().ntotal == 2
    store.close()


# ---------------------------------------------------------------------- the server itself
@pytest.mark.slow
def test_killed_server_restarted_on_its_data_still_holds_everything(milvus, tmp_path):
    """SIGKILL the whole server process group and restart it on the same data directory: every
    acknowledged row is still there. (Milvus 2.3.5 may lose collection *properties* set shortly before
    a kill, i.e. the sonalign tag; the store then sees no valid tag and repairs by set difference.)"""
    from sonalign.index.milvus import MilvusIndex
    from sonalign.index.milvus_client import disconnect_all

    x = unit(2000, 32, 8)
    index = new_index(milvus, "survivor", 32)
    index.add(np.arange(2000), x, paths=[f"/k/{i % 4}.wav" for i in range(2000)])
    index.save(tag={"g": 1})
    index.apply(np.arange(100))
    index.save(tag={"g": 2})
    q = unit(20, 32, 9)
    _, before = index.search(q, 10)
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, backend="milvus", uri=milvus.uri) as store:
        upsert(store, "a", 7)
        upsert(store, "b", 5)
    milvus.kill()
    disconnect_all()
    milvus.start()  # same data directory (the port may differ)
    again = MilvusIndex.load("survivor", uri=milvus.uri)
    assert again.ntotal == 1900 and again.tag in ({"g": 2}, None)
    np.testing.assert_array_equal(again.ids(), np.arange(100, 2000))
    _, after = again.search(q, 10)
    assert overlap(after, before) >= 0.95
    _, got = again.search(q, 5, path_prefix="/k/1")
    assert ((got - 1) % 4 == 0).all()
    store = IndexStore.open(idx, uri=milvus.uri)  # the server moved to another port: override the address
    check_consistent(store)
    assert store.index().ntotal == 12 and store.unsaved() == 0
    store.close()
    store = IndexStore.open(idx, readonly=True, uri=milvus.uri)
    assert store.unsaved() == 0 and store.index().tag is not None
    check_consistent(store)
    store.close()
