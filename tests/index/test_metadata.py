"""MetadataDB: schema, WAL mode, rows and vector BLOBs, savepoints, damaged files."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from sonalign.errors import IndexCorruptError
from sonalign.index.metadata import MetadataDB


def _fill(db: MetadataDB, rec: str = "r1", path: str = "/x/r1.wav", n: int = 3, dim: int = 4) -> np.ndarray:
    db.insert_recording(rec, path, "hash", 10.0, 16000, 0.0, {"note": 1})
    rows = [(f"{rec}-{i:05d}", rec, float(i), 1.0, "speech" if i % 2 else "audio", f"word {i}" if i % 2 else None, {"i": i}) for i in range(n)]
    vecs = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    ids = db.insert_segments(rows, vecs)
    db.insert_extra_vectors("transcript", ids[1::2], vecs[1::2] * 2)
    return ids


def test_schema_wal_and_round_trip(tmp_path):
    db = MetadataDB(tmp_path / "m.sqlite", create=True)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "recordings", "segments", "vectors", "extra_vectors"} <= tables
    ids = _fill(db)
    db.set_meta("model", {"name": "m", "dim": 4})
    db.commit()
    assert db.get_meta("model") == {"name": "m", "dim": 4}
    assert db.get_meta("absent", 5) == 5
    assert db.recordings() == {"/x/r1.wav": "hash"}
    assert db.counts() == {"recordings": 1, "segments": 3, "extra": {"transcript": 1}, "kinds": {"audio": 2, "speech": 1}}
    np.testing.assert_array_equal(db.row_ids(), ids)
    np.testing.assert_array_equal(db.row_ids("transcript"), ids[1:2])
    got, vecs = db.vectors([int(ids[2]), 12345, int(ids[0])], 4)
    assert sorted(got.tolist()) == sorted([int(ids[0]), int(ids[2])])
    by_id = dict(zip(got.tolist(), vecs, strict=True))
    np.testing.assert_array_equal(by_id[int(ids[2])], [8, 9, 10, 11])
    batches = list(db.iter_vectors(4, batch=2))
    assert [b[0].tolist() for b in batches] == [ids[:2].tolist(), ids[2:].tolist()]
    seg = db.segment_by_id("r1-00001")
    assert seg is not None and seg.path == "/x/r1.wav" and seg.kind == "speech" and seg.transcript == "word 1" and seg.custom == {"i": 1}
    assert seg.end == 2.0
    assert [s.id for s in db.segments_of_recording("r1")] == ["r1-00000", "r1-00001", "r1-00002"]
    assert set(db.segments_by_row_ids(ids.tolist())) == set(ids.tolist())
    assert db.recording("r1").custom == {"note": 1}
    db.close()


def test_row_ids_are_never_reused(tmp_path):
    db = MetadataDB(tmp_path / "m.sqlite", create=True)
    first = _fill(db)
    db.delete_recording("r1")
    second = _fill(db)
    db.commit()
    assert second.min() > first.max()
    assert db.counts()["segments"] == 3


def test_delete_returns_removed_ids_per_kind(tmp_path):
    db = MetadataDB(tmp_path / "m.sqlite", create=True)
    ids = _fill(db)
    main, extra = db.delete_recording("r1")
    assert sorted(main.tolist()) == sorted(ids.tolist())
    assert extra["transcript"].tolist() == [int(ids[1])]
    assert db.counts()["segments"] == 0
    assert db.conn.execute("SELECT count(*) FROM vectors").fetchone()[0] == 0


def test_path_filter_substring_and_glob(tmp_path):
    db = MetadataDB(tmp_path / "m.sqlite", create=True)
    a = _fill(db, "a", "/data/birds/a.wav")
    b = _fill(db, "b", "/data/city/b.flac")
    assert sorted(db.row_ids_for_path("birds").tolist()) == sorted(a.tolist())
    assert sorted(db.row_ids_for_path("*.flac").tolist()) == sorted(b.tolist())
    assert db.row_ids_for_path("nowhere").size == 0
    assert db.row_ids_for_path("%").size == 0  # no LIKE wildcards


def test_savepoint_undoes_only_the_failed_unit(tmp_path):
    db = MetadataDB(tmp_path / "m.sqlite", create=True)
    _fill(db, "a", "/a.wav")
    with pytest.raises(sqlite3.IntegrityError):
        with db.savepoint():
            db.insert_recording("b", "/b.wav", "h", None, None, 0.0)
            db.insert_recording("b", "/b2.wav", "h", None, None, 0.0)  # duplicate id
    db.commit()
    assert db.recordings() == {"/a.wav": "hash"}


def test_uncommitted_changes_are_invisible_to_readers(tmp_path):
    path = tmp_path / "m.sqlite"
    writer = MetadataDB(path, create=True)
    writer.commit()
    reader = MetadataDB(path, readonly=True)
    _fill(writer)
    assert reader.counts()["segments"] == 0
    writer.commit()
    assert reader.counts()["segments"] == 3


def test_vectors_after_a_row_id_and_counts_per_kind(tmp_path):
    db = MetadataDB(tmp_path / "m.sqlite", create=True)
    first = _fill(db, "a", "/a.wav", n=4)
    second = _fill(db, "b", "/b.wav", n=3)
    assert db.count_vectors() == 7 and db.count_vectors("transcript") == 3 and db.count_vectors("absent") == 0
    batches = list(db.iter_vectors(4, after=int(first.max())))
    assert [b[0].tolist() for b in batches] == [second.tolist()]
    assert [b[0].tolist() for b in db.iter_vectors(4, "transcript", after=int(first.max()))] == [second[1::2].tolist()]
    assert list(db.iter_vectors(4, after=int(second.max()))) == []


def test_snapshot_reads_one_committed_state(tmp_path):
    path = tmp_path / "m.sqlite"
    writer = MetadataDB(path, create=True)
    _fill(writer, "a", "/a.wav")
    writer.commit()
    reader = MetadataDB(path, readonly=True)
    with reader.snapshot():
        before = reader.count_vectors()
        _fill(writer, "b", "/b.wav")
        writer.commit()  # commits while the snapshot is open: not seen inside it
        assert reader.count_vectors() == before and reader.row_ids().size == before
    assert reader.count_vectors() == before + 3
    _fill(writer, "c", "/c.wav")
    with writer.snapshot():  # inside a write transaction: that transaction's state, left open
        assert writer.count_vectors() == before + 6
    assert writer.in_transaction
    writer.rollback()
    assert writer.count_vectors() == before + 3


@pytest.mark.parametrize("content", [b"", b"garbage" * 500, b"SQLite format 3\x00" + b"\x00" * 200])
def test_damaged_or_foreign_files_raise_index_corrupt(tmp_path, content):
    path = tmp_path / "m.sqlite"
    path.write_bytes(content)
    with pytest.raises(IndexCorruptError, match="m.sqlite"):
        MetadataDB(path)


def test_truncated_database_is_reported(tmp_path):
    path = tmp_path / "m.sqlite"
    db = MetadataDB(path, create=True)
    for r in range(30):
        _fill(db, f"r{r}", f"/x/{r}.wav", n=20, dim=64)
    db.commit()
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorruptError, match="rebuild"):
        db = MetadataDB(path)
        db.counts()
        list(db.iter_vectors(64))


def test_foreign_sqlite_database_is_not_an_index(tmp_path):
    path = tmp_path / "m.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE other(x)")
    con.commit()
    con.close()
    with pytest.raises(IndexCorruptError, match="not a sonalign index"):
        MetadataDB(path)
