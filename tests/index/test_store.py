"""IndexStore: incremental upserts, crash consistency (SIGKILL at random points), damaged files.

Tests taking the ``backend`` fixture run on both vector backends: faiss files, and a Milvus server
(skipped where it cannot start, see conftest.py); the others are about faiss files.
"""

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

from sonalign.errors import ConfigError, IndexCorruptError, StorageError
from sonalign.index.store import SNAPSHOT_RATIO, IndexStore, RecordingInfo
from sonalign.index.vector_file import file_tag
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
def test_create_upsert_commit_reopen(tmp_path, backend):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, model="fake", settings={"hop": 0.5}, **backend) as store:
        upsert(store, "a", 10)
        upsert(store, "b", 4)
    vector_files = [] if backend else ["vectors.faiss", "vectors.transcript.faiss"]
    assert sorted(p.name for p in idx.iterdir() if not p.name.startswith("meta.sqlite-")) == [
        ".writer.lock",
        "manifest.json",
        "meta.sqlite",
        *vector_files,
    ]
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["model"] == "fake" and manifest["dim"] == DIM and manifest["counts"]["segments"] == 14
    assert manifest["extra"]["transcript"] == {"dim": TDIM, "count": 6, "index_type": "milvus" if backend else "flat"}
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


def test_upsert_replaces_previous_version_without_duplicates(tmp_path, backend):
    store = IndexStore.open(tmp_path / "idx", create=True, **backend)
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


def test_empty_recording_and_dict_rec_info(tmp_path, backend):
    store = IndexStore.open(tmp_path / "idx", create=True, **backend)
    store.upsert_recording({"path": "/audio/silent.wav", "content_hash": "h"}, [], np.zeros((0, DIM), np.float32))
    store.commit()
    assert store.recordings() == {"/audio/silent.wav": "h"}
    assert store.index() is None  # no vectors yet, dimension unknown
    upsert(store, "a", 3)
    store.commit()
    assert store.index().ntotal == 3
    store.close()


def test_rollback_and_close_without_commit_drop_changes(tmp_path, backend):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True, **backend)
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


def test_bad_upserts_are_rejected_and_leave_the_store_intact(tmp_path, backend):
    store = IndexStore.open(tmp_path / "idx", create=True, **backend)
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


def test_model_and_dim_mismatch_raise_config_error(tmp_path, backend):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, model="m1", dim=DIM, **backend):
        pass
    with pytest.raises(ConfigError, match="m1"):
        IndexStore.open(idx, model="m2")
    with pytest.raises(ConfigError, match="16-d"):
        IndexStore.open(idx, dim=32)
    IndexStore.open(idx, model="m1", dim=DIM).close()


def test_missing_index_and_second_writer(tmp_path, backend):
    with pytest.raises(FileNotFoundError, match="no sonalign index"):
        IndexStore.open(tmp_path / "nothing")
    store = IndexStore.open(tmp_path / "idx", create=True, **backend)
    with pytest.raises(StorageError, match="another process is writing this index"):  # a one-line error for the CLI, not a traceback
        IndexStore.open(tmp_path / "idx", lock_timeout=0.2)
    reader = IndexStore.open(tmp_path / "idx", readonly=True)  # readers need no lock
    reader.close()
    store.close()
    IndexStore.open(tmp_path / "idx").close()


def test_reader_refresh_sees_committed_changes(tmp_path, backend):
    idx = tmp_path / "idx"
    writer = IndexStore.open(idx, create=True, **backend)
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


def test_reader_keeps_working_while_a_writer_commits(tmp_path, backend):
    import threading

    idx = tmp_path / "idx"
    writer = IndexStore.open(idx, create=True, hnsw_threshold=80, **backend)
    upsert(writer, "r0", 10)
    writer.commit()
    reader = IndexStore.open(idx, readonly=True, hnsw_threshold=80)  # catch-ups switch, tombstone and compact too
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


def test_changes_reach_the_vectors_and_readers_at_commit(tmp_path, backend):
    idx = tmp_path / "idx"
    with IndexStore.open(idx, create=True, model="fake", **backend) as store:
        upsert(store, "a", 10)
        upsert(store, "b", 4)
        assert store.unsaved() == 14
    reader = IndexStore.open(idx, readonly=True)
    assert reader.index().ntotal == 14 and reader.index("transcript").ntotal == 6
    assert reader.unsaved() == 0  # nothing to repair: the saved vectors hold the committed state
    check_consistent(reader)

    store = IndexStore.open(idx)
    upsert(store, "a", 6, version=1)  # an update: 10 old segments out, 6 new in
    upsert(store, "c", 3)
    assert store.remove_recording("/audio/b.wav")
    assert store.db.count_vectors() == 9
    assert store.index().ntotal == 14  # the vectors change at commit: until then searches see the last one
    reader.refresh(min_interval=0)
    assert reader.index().ntotal == 14  # uncommitted: readers (and the saved vectors) still see the old state
    store.commit()
    assert store.index().ntotal == 9
    assert reader.refresh(min_interval=0)
    assert reader.index().ntotal == 9 and reader.unsaved() == 0
    check_consistent(reader)
    upsert(store, "d", 5)  # rollback: the vectors never see it
    store.rollback()
    assert store.index().ntotal == 9
    store.close()
    reader.close()
    store = IndexStore.open(idx, readonly=True)
    assert sorted(store.recordings()) == ["/audio/a.wav", "/audio/c.wav"]
    assert store.index().ntotal == 9 and store.unsaved() == 0
    check_consistent(store)
    rows = store.segments(store.index().search(np.ones(DIM, np.float32), 9)[1][0])
    assert {r.path for r in rows.values()} == {"/audio/a.wav", "/audio/c.wav"}
    store.close()


def test_searcher_path_filter(tmp_path, backend):
    from sonalign.index.query import Searcher

    store = IndexStore.open(tmp_path / "idx", create=True, **backend)
    upsert(store, "x", 8, folder="/audio/dogs")
    upsert(store, "y", 8, folder="/audio/cats")
    store.commit()

    def embed(texts):
        return np.ones((len(texts), DIM), np.float32)

    searcher = Searcher(store, embed)
    hits = searcher.search("anything", k=5, path_filter="/dogs/")
    assert len(hits) == 5 and {h.path for h in hits} == {"/audio/dogs/x.wav"}
    assert {h.path for h in searcher.search("anything", k=16)} == {"/audio/dogs/x.wav", "/audio/cats/y.wav"}
    store.close()


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


# ---------------------------------------------------------------------- vector files as lagging snapshots
def _count_vector_bytes(monkeypatch) -> list[int]:
    """Bytes written to vector files, one running total per entry (append 0 to start a new one)."""
    written = [0]
    real_save = FaissIndex.save

    def counting_save(self, path, tag=None):
        real_save(self, path, tag)
        written[-1] += Path(path).stat().st_size

    monkeypatch.setattr(FaissIndex, "save", counting_save)
    return written


def test_bytes_written_per_commit_do_not_grow_with_the_index(tmp_path, monkeypatch):
    written = _count_vector_bytes(monkeypatch)
    store = IndexStore.open(tmp_path / "idx", create=True)
    commits = 64
    for step in range(commits):
        for j in range(5):  # the same change each time: 5 recordings, 20 segments
            upsert(store, f"r{step}-{j}", 4)
        written.append(0)
        store.commit()
    per_commit = written[1:]
    final = sum((tmp_path / "idx" / name).stat().st_size for name in ("vectors.faiss", "vectors.transcript.faiss"))
    # Rewriting every file at every commit writes commits/2 times the final size in all, and three times
    # as much per commit in the second half (index 1/2..1 full) as in the first (0..1/2).
    assert sum(per_commit) <= (2 + 1 / SNAPSHOT_RATIO) * final
    first, second = sum(per_commit[: commits // 2]), sum(per_commit[commits // 2 :])
    assert second <= 1.5 * first
    assert sum(1 for b in per_commit if b) < commits / 4  # most commits write no vector file at all
    store.close()
    store = IndexStore.open(tmp_path / "idx", readonly=True)
    check_consistent(store)
    store.close()


def test_snapshot_ratio_zero_rewrites_the_changed_files_at_every_commit(tmp_path, monkeypatch):
    written = _count_vector_bytes(monkeypatch)
    store = IndexStore.open(tmp_path / "idx", create=True, snapshot_ratio=0)
    for step in range(6):
        upsert(store, f"r{step}", 6)
        written.append(0)
        store.commit()
        assert file_tag(tmp_path / "idx" / "vectors.faiss")["generation"] == store.generation
    assert all(written[1:]) and written[-1] > written[1]
    store.close()


def test_lagging_files_are_caught_up_on_open_and_saved_on_close(tmp_path):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    for r in range(10):
        upsert(store, f"r{r}", 10)
    store.commit()
    upsert(store, "r3", 4, version=1)  # 14 changes to 100 rows: below the snapshot ratio
    store.commit()
    assert file_tag(idx / "vectors.faiss")["generation"] < store.generation  # the file lags
    reader = IndexStore.open(idx, readonly=True)  # and an opener catches up from SQLite
    check_consistent(reader)
    reader.close()
    upsert(store, "extra", 3)
    store.rollback()  # memory back to the committed state, from the lagging file and SQLite
    check_consistent(store)
    upsert(store, "uncommitted", 3)
    store.close()  # saves the lagging files, without the uncommitted change
    vgens = IndexStore.open(idx, readonly=True).meta()["vector_generations"]
    assert file_tag(idx / "vectors.faiss")["generation"] == vgens[""]
    assert file_tag(idx / "vectors.transcript.faiss")["generation"] == vgens["transcript"]
    assert json.loads((idx / "manifest.json").read_text())["generation"] == IndexStore.open(idx, readonly=True).generation
    store = IndexStore.open(idx, readonly=True)
    assert "/audio/uncommitted.wav" not in store.recordings()
    check_consistent(store)
    store.close()


def test_a_file_with_the_right_rows_but_an_older_tag_is_relabelled_on_open(tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    for r in range(10):
        upsert(store, f"r{r}", 10)
    store.commit()
    upsert(store, "x", 2)
    store.remove_recording("/audio/x.wav")
    store.commit()  # the same rows as the file holds, under a newer generation: not worth a snapshot yet
    assert file_tag(idx / "vectors.faiss")["generation"] < store.generation

    def killed(self, path, tag=None):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FaissIndex, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        store.close()  # killed before its closing snapshot
    monkeypatch.undo()
    store = IndexStore.open(idx)  # the writer's open relabels the file, so later opens need no set difference
    assert file_tag(idx / "vectors.faiss")["generation"] == store.meta()["vector_generations"][""]
    check_consistent(store)
    store.close()


def test_reader_refresh_catches_up_from_sqlite_while_the_files_lag(tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    writer = IndexStore.open(idx, create=True)
    for r in range(20):
        upsert(writer, f"r{r}", 10)
    writer.commit()
    tags = {name: file_tag(idx / name) for name in ("vectors.faiss", "vectors.transcript.faiss")}
    reader = IndexStore.open(idx, readonly=True)
    main, transcripts = reader.index(), reader.index("transcript")

    def no_file_reads(*args, **kwargs):
        raise AssertionError("refresh read a vector file")

    monkeypatch.setattr(FaissIndex, "load", no_file_reads)
    id_lists = []
    real_row_ids = reader.db.row_ids
    monkeypatch.setattr(reader.db, "row_ids", lambda *a, **k: id_lists.append(a) or real_row_ids(*a, **k))

    upsert(writer, "new", 6)  # only additions: only the new rows are read
    writer.commit()
    assert reader.refresh(min_interval=0) is True
    assert reader.index() is main and reader.index("transcript") is transcripts  # changed in place
    assert id_lists == []
    check_consistent(reader)
    _, ids = reader.index().search(vec("new-00004@0"), 1)
    assert reader.segments(ids[0])[int(ids[0, 0])].id == "new-00004"

    upsert(writer, "r3", 4, version=1)  # an update and a removal: found by a set difference
    writer.remove_recording("/audio/r5.wav")
    writer.commit()
    assert reader.refresh(min_interval=0) is True
    assert reader.recordings()["/audio/r3.wav"] == "v1-n4" and "/audio/r5.wav" not in reader.recordings()
    check_consistent(reader)
    assert reader.index().ntotal == 200 + 6 - 10 + 4 - 10
    assert reader.refresh(min_interval=0) is False  # nothing new

    # the writer never rewrote a vector file for these small commits
    assert {name: file_tag(idx / name) for name in tags} == tags
    writer.close()
    reader.close()


def test_reader_catch_up_that_switches_to_hnsw_is_built_aside(tmp_path):
    idx = tmp_path / "idx"
    writer = IndexStore.open(idx, create=True)
    upsert(writer, "a", 30)
    writer.commit()
    reader = IndexStore.open(idx, readonly=True, hnsw_threshold=40)
    old = reader.index()
    assert old.kind == "flat"
    upsert(writer, "b", 20)
    writer.commit()
    assert reader.refresh(min_interval=0)
    assert reader.index() is not old and reader.index().kind == "hnsw"
    assert old.kind == "flat" and old.ntotal == 30  # searches still holding the old index were not disturbed
    check_consistent(reader)
    writer.close()
    reader.close()


# ---------------------------------------------------------------------- crash windows, deterministic
def test_crash_between_sqlite_commit_and_vector_write_is_repaired(tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True)
    upsert(store, "a", 6)
    store.commit()
    saved_generation = store.generation
    upsert(store, "a", 3, version=1)
    upsert(store, "b", 4)

    def boom(self, path, tag=None):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FaissIndex, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        store.commit()  # SQLite committed, vector files still the old generation
    with pytest.raises(KeyboardInterrupt):
        store.close()  # the "killed" writer saves nothing on its way out either (and still lets go of the lock)
    monkeypatch.undo()
    assert file_tag(idx / "vectors.faiss")["generation"] == saved_generation
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


def test_metadata_restored_from_backup_with_newer_vector_files(tmp_path, backend):
    idx = tmp_path / "idx"
    store = IndexStore.open(idx, create=True, **backend)
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
    server = None  # a long-lived reader, like the web server: opened once, then only refreshed
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
        server = server or IndexStore.open(idx, readonly=True)
        server.refresh(min_interval=0)  # catches up incrementally across killed writers
        check_consistent(server)
        store = IndexStore.open(idx)
        totals.append(sum(check_consistent(store).values()))
        store.close()
        store = IndexStore.open(idx)  # the second open takes the fast path
        check_consistent(store)
        store.close()
    if server is not None:
        server.close()
    assert totals, "the writer never got to create the index"


def test_sigkill_at_random_points_leaves_a_consistent_index(tmp_path):
    _kill_and_check(tmp_path, iterations=4, seed0=1)


@pytest.mark.slow
def test_sigkill_many_iterations(tmp_path):
    _kill_and_check(tmp_path, iterations=25, seed0=2)


def test_a_failed_vector_write_is_a_storage_error_naming_the_file(tmp_path, monkeypatch):
    """Disk full inside faiss' writer surfaces as one clear StorageError, and the committed index is intact."""
    import faiss

    from sonalign.index import vectors

    store = IndexStore.open(tmp_path / "idx", create=True, dim=DIM)
    store.upsert_recording({"path": "a.wav", "content_hash": "h"}, [Segment("a-0", "a", 0.0, 1.0)], np.ones((1, DIM), np.float32))
    store.commit()

    def disk_full(index, path):
        raise RuntimeError("Error in faiss::FileIOWriter: 'ret == (size_t)1' failed: write error in x: 28 (No space left on device)")

    monkeypatch.setattr(vectors.faiss, "write_index", disk_full)
    with pytest.raises(StorageError, match=r"vectors\.faiss: could not write the vector index \(.*No space left on device\)"):
        store.index().save(tmp_path / "idx" / "vectors.faiss")
    monkeypatch.setattr(vectors.faiss, "write_index", faiss.write_index)
    store.close()
    with IndexStore.open(tmp_path / "idx", readonly=True) as reader:
        assert reader.stats()["counts"]["segments"] == 1
