"""IndexStore: incremental upserts, crash consistency (SIGKILL at random points), damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from sonalign.errors import ConfigError, IndexCorruptError
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.index.vectors import FaissIndex, normalize
from sonalign.segments import Segment

DIM = 16
TDIM = 8


def vec(key: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def recording(name: str, n: int, version: int = 0, folder: str = "/audio"):
    """(info, segments, vectors, transcripts, extras) of a fake recording; every 3rd segment is speech."""
    segs = [
        Segment(f"{name}-{i:05d}", name, i * 0.5, 1.0, custom={"kind": "speech" if i % 3 == 0 else "audio", "v": version}) for i in range(n)
    ]
    vecs = np.stack([vec(f"{s.id}@{version}") for s in segs]) if n else np.zeros((0, DIM), np.float32)
    tr = np.full((n, TDIM), np.nan, np.float32)
    transcripts = []
    for i, s in enumerate(segs):
        if s.custom["kind"] == "speech":
            tr[i] = vec(f"t:{s.id}@{version}", TDIM)
            transcripts.append(f"words of {s.id}")
        else:
            transcripts.append(None)
    info = RecordingInfo(path=f"{folder}/{name}.wav", content_hash=f"v{version}-n{n}", duration=n * 0.5 + 0.5, sample_rate=16000, id=name)
    return info, segs, vecs, transcripts, {"transcript": tr}


def upsert(store: IndexStore, name: str, n: int, version: int = 0, folder: str = "/audio") -> np.ndarray:
    info, segs, vecs, transcripts, extras = recording(name, n, version, folder)
    return store.upsert_recording(info, segs, vecs, transcripts, extras)


def check_consistent(store: IndexStore) -> dict[str, int]:
    """Every recording complete and matching its hash; faiss == SQLite for every vector kind."""
    seen = {}
    for path, content_hash in store.recordings().items():
        version, n = (int(p[1:]) for p in content_hash.split("-"))
        name = Path(path).stem
        rows = store.recording_segments(name)
        assert [r.id for r in rows] == [f"{name}-{i:05d}" for i in range(n)], path
        assert all(r.custom["v"] == version for r in rows)
        got, vecs = store.vectors([r.row_id for r in rows])
        assert got.size == n
        by_row = {r.row_id: r for r in rows}
        for rid, v in zip(got.tolist(), vecs, strict=True):
            np.testing.assert_allclose(v, normalize(vec(f"{by_row[rid].id}@{version}"))[0], atol=1e-5)
        seen[path] = n
    main = store.index()
    sql_ids = store.db.row_ids()
    if main is not None:
        np.testing.assert_array_equal(main.ids(), sql_ids)
        # the faiss copy of each vector equals SQLite's
        if sql_ids.size:
            sample = sql_ids[:: max(1, sql_ids.size // 50)]
            f_ids, f_vecs = main.reconstruct(sample)
            s_ids, s_vecs = store.vectors(sample)
            np.testing.assert_array_equal(f_ids, sample)
            order = np.argsort(s_ids)
            np.testing.assert_allclose(f_vecs, s_vecs[order][np.searchsorted(s_ids[order], f_ids)], atol=1e-5)
    else:
        assert sql_ids.size == 0
    tr = store.index("transcript")
    if tr is not None:
        np.testing.assert_array_equal(tr.ids(), store.db.row_ids("transcript"))
    assert store.db.conn.execute("SELECT count(*) = count(DISTINCT id) FROM segments").fetchone()[0] == 1
    return seen


# ---------------------------------------------------------------------- basics
def test_create_upsert_commit_reopen(tmp_path):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, model="fake", settings={"hop": 0.5}) as store:
        upsert(store, "a", 10)
        upsert(store, "b", 4)
    assert sorted(p.name for p in idx.iterdir() if not p.name.startswith("meta.sqlite-")) == [
        ".writer.lock",
        "manifest.json",
        "meta.sqlite",
        "vectors.faiss",
        "vectors.transcript.faiss",
    ]
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["model"] == "fake" and manifest["dim"] == DIM and manifest["counts"]["segments"] == 14
    assert manifest["extra"]["transcript"] == {"dim": TDIM, "count": 6, "index_type": "flat"}
    store = IndexStore.open(idx, readonly=True)
    assert store.recordings() == {"/audio/a.wav": "v0-n10", "/audio/b.wav": "v0-n4"}
    assert store.model == "fake" and store.dim == DIM and store.settings == {"hop": 0.5}
    assert store.index().ntotal == 14 and store.index("transcript").ntotal == 6
    check_consistent(store)
    seg = store.segment("a-00003")
    assert seg.kind == "speech" and seg.transcript == "words of a-00003" and seg.path == "/audio/a.wav"
    stats = store.stats()
    assert stats["counts"]["kinds"] == {"audio": 8, "speech": 6}
    store.close()


def test_upsert_replaces_previous_version_without_duplicates(tmp_path):
    store = IndexStore.open(tmp_path / "idx", create=True)
    old = upsert(store, "a", 10, version=0)
    upsert(store, "b", 5)
    store.commit()
    new = upsert(store, "a", 6, version=1)
    store.commit()
    assert not set(old.tolist()) & set(new.tolist())
    assert store.recordings()["/audio/a.wav"] == "v1-n6"
    assert store.index().ntotal == 11
    _, ids = store.index().search(vec("a-00001@0"), 11)
    assert not set(ids[0].tolist()) & set(old.tolist())
    check_consistent(store)
    assert store.remove_recording("/audio/a.wav") is True
    assert store.remove_recording("/audio/a.wav") is False
    store.commit()
    assert store.recordings() == {"/audio/b.wav": "v0-n5"}
    assert store.index().ntotal == 5 and store.index("transcript").ntotal == 2
    check_consistent(store)
    store.close()


def test_empty_recording_and_dict_rec_info(tmp_path):
    store = IndexStore.open(tmp_path / "idx", create=True)
    store.upsert_recording({"path": "/audio/silent.wav", "content_hash": "h"}, [], np.zeros((0, DIM), np.float32))
    store.commit()
    assert store.recordings() == {"/audio/silent.wav": "h"}
    assert store.index() is None  # no vectors yet, dimension unknown
    upsert(store, "a", 3)
    store.commit()
    assert store.index().ntotal == 3
    store.close()


def test_rollback_and_close_without_commit_drop_changes(tmp_path):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    upsert(store, "a", 4)
    store.commit()
    upsert(store, "b", 4)
    store.remove_recording("/audio/a.wav")
    assert store.index().ntotal == 4
    store.rollback()
    assert store.recordings() == {"/audio/a.wav": "v0-n4"} and store.index().ntotal == 4
    check_consistent(store)
    upsert(store, "c", 2)
    store.close()  # not committed
    store = IndexStore.open(idx)
    assert list(store.recordings()) == ["/audio/a.wav"]
    check_consistent(store)
    store.close()


def test_bad_upserts_are_rejected_and_leave_the_store_intact(tmp_path):
    store = IndexStore.open(tmp_path / "idx", create=True)
    upsert(store, "a", 4)
    store.commit()
    info, segs, vecs, transcripts, extras = recording("b", 3)
    with pytest.raises(ValueError, match="shape"):
        store.upsert_recording(info, segs, vecs[:2])
    with pytest.raises(ValueError, match="16-d"):
        store.upsert_recording(info, segs, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        store.upsert_recording(info, segs, vecs * np.nan)
    with pytest.raises(ValueError, match="all-zero"):
        store.upsert_recording(info, segs, vecs * 0)
    with pytest.raises(ValueError, match="transcripts"):
        store.upsert_recording(info, segs, vecs, transcripts[:1])
    with pytest.raises(ValueError, match="belongs to recording"):
        store.upsert_recording(RecordingInfo("/audio/b.wav", "h", id="other"), segs, vecs)
    with pytest.raises(ValueError, match="name"):
        store.upsert_recording(info, segs, vecs, extra_vectors={"Bad Name!": vecs})
    # the same recording id for another file
    info_a, segs_a, vecs_a, _, _ = recording("a", 2)
    with pytest.raises(ValueError, match="already names"):
        store.upsert_recording(RecordingInfo("/elsewhere/a.wav", "h", id="a"), segs_a, vecs_a)
    # a segment id already used by another recording: the savepoint undoes the partial insert
    clash = [Segment("a-00000", "b", 0.0, 1.0)]
    with pytest.raises(ValueError, match="segment id"):
        store.upsert_recording(RecordingInfo("/audio/b.wav", "h", id="b"), clash, vecs[:1])
    store.commit()
    assert store.recordings() == {"/audio/a.wav": "v0-n4"}
    check_consistent(store)
    store.close()


def test_model_and_dim_mismatch_raise_config_error(tmp_path):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, model="m1", dim=DIM):
        pass
    with pytest.raises(ConfigError, match="m1"):
        IndexStore.open(idx, model="m2")
    with pytest.raises(ConfigError, match="16-d"):
        IndexStore.open(idx, dim=32)
    IndexStore.open(idx, model="m1", dim=DIM).close()


def test_missing_index_and_second_writer(tmp_path):
    with pytest.raises(FileNotFoundError, match="no sonalign index"):
        IndexStore.open(tmp_path / "nothing")
    store = IndexStore.open(tmp_path / "idx", create=True)
    with pytest.raises(RuntimeError, match="another process"):
        IndexStore.open(tmp_path / "idx", lock_timeout=0.2)
    reader = IndexStore.open(tmp_path / "idx", readonly=True)  # readers need no lock
    reader.close()
    store.close()
    IndexStore.open(tmp_path / "idx").close()


def test_reader_refresh_sees_committed_changes(tmp_path):
    idx = tmp_path / "idx"
    writer = IndexStore.open(idx, create=True)
    upsert(writer, "a", 5)
    writer.commit()
    reader = IndexStore.open(idx, readonly=True)
    assert reader.index().ntotal == 5
    upsert(writer, "b", 7)
    assert reader.refresh(min_interval=0) is False  # nothing committed yet
    writer.commit()
    assert reader.refresh(min_interval=0) is True
    assert reader.index().ntotal == 12 and reader.index("transcript").ntotal == 5
    check_consistent(reader)
    writer.close()
    reader.close()


def test_reader_keeps_working_while_a_writer_commits(tmp_path):
    import threading

    idx = tmp_path / "idx"
    writer = IndexStore.open(idx, create=True, hnsw_threshold=80)
    upsert(writer, "r0", 10)
    writer.commit()
    reader = IndexStore.open(idx, readonly=True)
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                reader.refresh(min_interval=0, stale_grace=0.5)
                index = reader.index()
                scores, ids = index.search(vec("q"), 5)
                reader.segments(ids[0][ids[0] >= 0])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for step in range(15):
        upsert(writer, f"r{step % 5}", 5 + step, version=step + 1)
        writer.commit()
    time.sleep(0.2)
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors
    reader.refresh(min_interval=0)
    check_consistent(reader)
    assert reader.index().ntotal == writer.index().ntotal
    writer.close()
    reader.close()


def test_hnsw_store_with_tombstones_survives_reopen(tmp_path):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True, hnsw_threshold=60)
    for r in range(8):
        upsert(store, f"r{r}", 12)
    store.commit()
    assert store.index().kind == "hnsw"
    upsert(store, "r3", 5, version=1)
    store.commit()
    assert store.index().tombstones > 0
    store.close()
    store = IndexStore.open(idx, hnsw_threshold=60)
    assert store.index().kind == "hnsw" and store.index().ntotal == 89
    check_consistent(store)
    store.close()


# ---------------------------------------------------------------------- crash windows, deterministic
def test_crash_between_sqlite_commit_and_vector_write_is_repaired(tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    upsert(store, "a", 6)
    store.commit()
    upsert(store, "a", 3, version=1)
    upsert(store, "b", 4)

    def boom(self, path, tag=None):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FaissIndex, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        store.commit()  # SQLite committed, vector files still the old generation
    monkeypatch.undo()
    store.close()
    reader = IndexStore.open(idx, readonly=True)  # repairs in memory, writes nothing
    assert reader.index().ntotal == 7
    check_consistent(reader)
    reader.close()
    store = IndexStore.open(idx)  # repairs and rewrites the files
    check_consistent(store)
    tag = json.loads((idx / "manifest.json").read_text())["generation"]
    assert tag == store.generation
    store.close()


def test_stale_missing_or_foreign_vector_files_are_rebuilt(tmp_path):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    upsert(store, "a", 6)
    store.commit()
    old = (idx / "vectors.faiss").read_bytes()
    upsert(store, "b", 6)
    store.remove_recording("/audio/a.wav")
    store.commit()
    store.close()
    (idx / "vectors.faiss").write_bytes(old)  # an older generation
    store = IndexStore.open(idx)
    assert store.index().ntotal == 6
    check_consistent(store)
    store.close()
    (idx / "vectors.faiss").unlink()
    (idx / "vectors.transcript.faiss").unlink()
    store = IndexStore.open(idx)
    check_consistent(store)
    store.close()
    other = IndexStore.open(tmp_path / "other", create=True)  # same ids, other vectors
    upsert(other, "b", 6, version=5)
    other.commit()
    other.close()
    (idx / "vectors.faiss").write_bytes((tmp_path / "other" / "vectors.faiss").read_bytes())
    store = IndexStore.open(idx)
    check_consistent(store)
    store.close()


def test_metadata_restored_from_backup_with_newer_vector_files(tmp_path):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    upsert(store, "a", 5)
    store.commit()
    store.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = (idx / "meta.sqlite").read_bytes()
    upsert(store, "b", 5)
    store.remove_recording("/audio/a.wav")
    store.commit()
    store.close()
    for suffix in ("-wal", "-shm"):
        Path(str(idx / "meta.sqlite") + suffix).unlink(missing_ok=True)
    (idx / "meta.sqlite").write_bytes(backup)
    store = IndexStore.open(idx)  # vector files are from the future: brought back in line
    assert list(store.recordings()) == ["/audio/a.wav"]
    check_consistent(store)
    upsert(store, "c", 3)  # new row ids, whatever the newer files had held
    store.commit()
    store.close()
    store = IndexStore.open(idx)
    check_consistent(store)
    store.close()


def test_damaged_files_raise_index_corrupt_with_rebuild_hint(tmp_path):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True) as store:
        upsert(store, "a", 6)
    good = (idx / "vectors.faiss").read_bytes()
    (idx / "vectors.faiss").write_bytes(good[: len(good) // 3])
    for readonly in (False, True):
        with pytest.raises(IndexCorruptError) as err:
            IndexStore.open(idx, readonly=readonly)
        assert "vectors.faiss" in str(err.value) and "--rebuild" in str(err.value)
    store = IndexStore.open(idx, repair=True)  # regenerated from meta.sqlite
    check_consistent(store)
    store.close()
    IndexStore.open(idx, readonly=True).close()

    db = idx / "meta.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"\x00garbage" * 1000)
    for readonly in (False, True):
        with pytest.raises(IndexCorruptError) as err:
            IndexStore.open(idx, readonly=readonly)
        assert "meta.sqlite" in str(err.value) and "--rebuild" in str(err.value)
    store = IndexStore.open(idx, rebuild=True)  # what `--rebuild` does: start over
    assert store.recordings() == {} and store.index() is None
    store.close()


def test_not_a_directory_or_vectors_without_metadata(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(IndexCorruptError, match="not an index directory"):
        IndexStore.open(f)
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True) as store:
        upsert(store, "a", 2)
    for name in ("meta.sqlite", "meta.sqlite-wal", "meta.sqlite-shm"):
        (idx / name).unlink(missing_ok=True)
    with pytest.raises(IndexCorruptError, match="meta.sqlite"):
        IndexStore.open(idx)


# ---------------------------------------------------------------------- SIGKILL at random moments
WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from test_store import upsert
    import numpy as np
    from sonalign.index.store import IndexStore

    idx, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    store = IndexStore.open(idx, create=True, model="fake", hnsw_threshold=150)
    print("ready", flush=True)
    step = 1000 * seed
    while True:
        step += 1
        name = f"rec{int(rng.integers(0, 12))}"
        if rng.random() < 0.2:
            store.remove_recording(f"/audio/{name}.wav")
        else:
            upsert(store, name, int(rng.integers(1, 40)), version=step)
        if rng.random() < 0.5:
            store.commit()
    """
)


def _kill_and_check(tmp_path: Path, iterations: int, seed0: int) -> None:
    idx = tmp_path / "idx"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    here = str(Path(__file__).parent)
    rng = np.random.default_rng(seed0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    totals = []
    for it in range(iterations):
        proc = subprocess.Popen([sys.executable, str(script), str(idx), str(seed0 * 100 + it), here], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Kill at a random moment: sometimes during open/repair, mostly while writing.
        wait_ready = rng.random() < 0.8
        if wait_ready:
            line = proc.stdout.readline()
            assert line.strip() == b"ready", proc.stderr.read().decode()[-2000:]
        time.sleep(float(rng.uniform(0.0, 0.6)))
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if not alive and proc.returncode != 0:
            raise AssertionError(proc.stderr.read().decode()[-3000:])
        if not (idx / "meta.sqlite").exists():
            continue
        reader = IndexStore.open(idx, readonly=True)  # a reader copes without writing
        check_consistent(reader)
        reader.close()
        store = IndexStore.open(idx)
        totals.append(sum(check_consistent(store).values()))
        store.close()
        store = IndexStore.open(idx)  # the second open takes the fast path
        check_consistent(store)
        store.close()
    assert totals, "the writer never got to create the index"


def test_sigkill_at_random_points_leaves_a_consistent_index(tmp_path):
    _kill_and_check(tmp_path, iterations=4, seed0=1)


@pytest.mark.slow
def test_sigkill_many_iterations(tmp_path):
    _kill_and_check(tmp_path, iterations=25, seed0=2)
