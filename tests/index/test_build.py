"""Index builder end to end (real segmenters, fake encoders): incremental updates, failures, kill -9."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from safetensors.torch import save_file

from sonalign.index import indexer, workers
from sonalign.index.build import build_index
from sonalign.index.indexer import segment_for_index
from sonalign.index.query import Searcher
from sonalign.index.store import IndexStore


def events(freqs, sr=16000, gap=1.0, noise=0.003, seed=0):
    """Tones of 0.8 s separated by ``gap`` s of faint noise; returns (wave, [(start, end)])."""
    rng = np.random.default_rng(seed)
    parts, spans, t = [], [], gap
    parts.append(noise * rng.standard_normal(int(gap * sr)))
    for f in freqs:
        tt = np.arange(int(0.8 * sr)) / sr
        parts += [0.4 * np.sin(2 * np.pi * f * tt), noise * rng.standard_normal(int(gap * sr))]
        spans.append((t, t + 0.8))
        t += 0.8 + gap
    return np.concatenate(parts).astype(np.float32), spans


def write(path: Path, wave, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, sr)


def test_segment_for_index_finds_sound_events(tmp_path):
    wave, spans = events([440, 880, 1320])
    write(tmp_path / "a.wav", wave)
    segs = segment_for_index(tmp_path / "a.wav", "a")
    assert [s.id for s in segs] == ["a-00000", "a-00001", "a-00002"]
    for s, (start, end) in zip(segs, spans):
        assert s.custom["kind"] == "sound"
        assert abs(s.start - start) < 0.15 and abs(s.end - end) < 0.15


def test_incremental_updates_and_failures(tmp_path, fake_run):
    folder = tmp_path / "audio"
    for i in range(3):
        write(folder / f"r{i}.wav", events([300 + 200 * i, 900], seed=i)[0])
    (folder / "broken.wav").write_bytes(b"RIFF....not audio at all")
    idx = tmp_path / "idx"
    first = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    assert (first.added, first.updated, first.removed) == (3, 0, 0)
    assert [Path(p).name for p, _ in first.failures] == ["broken.wav"]
    again = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)
    write(folder / "r0.wav", events([500, 700, 1100], seed=9)[0])  # changed
    (folder / "r1.wav").unlink()  # deleted
    write(folder / "sub" / "new.wav", events([1500])[0])  # added
    third = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    assert (third.added, third.updated, third.removed, third.unchanged) == (1, 1, 1, 1)
    with IndexStore.open(idx, readonly=True) as store:
        recs = store.recordings()
        assert sorted(Path(p).name for p in recs) == ["new.wav", "r0.wav", "r2.wav"]
        assert len(store.recording_segments("r0.wav")) == 3
        assert store.stats()["counts"]["segments"] == 3 + 2 + 1


def test_search_returns_files_and_spans(tmp_path, fake_run):
    folder = tmp_path / "audio"
    wave, spans = events([440, 2000])
    write(folder / "x.wav", wave)
    build_index(folder, tmp_path / "idx", model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    searcher = Searcher.open(tmp_path / "idx")
    hits = searcher.search("a tone", k=5)
    assert len(hits) == 2 and {h.segment_id for h in hits} == {"x.wav-00000", "x.wav-00001"}
    for h in hits:
        assert h.path.endswith("x.wav") and h.end > h.start
    by_example = searcher.search_audio(wave[int(spans[1][0] * 16000) : int(spans[1][1] * 16000)], 16000, k=1)
    assert by_example[0].segment_id == "x.wav-00001"  # the same sound finds its own span first


def test_kill_9_midway_then_rerun_is_consistent(tmp_path, fake_run):
    folder = tmp_path / "audio"
    for i in range(12):
        write(folder / f"r{i:02d}.wav", events([300 + 100 * i, 1000, 1700], seed=i)[0])
    idx = tmp_path / "idx"
    worker = Path(__file__).with_name("index_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    partial = []
    for target in (3, 7):  # kill once 3, then once 7 recordings are committed
        proc = subprocess.Popen([sys.executable, str(worker), str(folder), str(idx), str(fake_run)], env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _committed(idx) < target and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        partial.append(_committed(idx))
    assert 3 <= partial[0] < 12 and partial[0] <= partial[1] < 12, partial  # really killed midway
    report = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    assert report.added + report.unchanged == 12 and not report.failures
    with IndexStore.open(idx, readonly=True) as store:
        assert len(store.recordings()) == 12
        assert store.stats()["counts"]["segments"] == 36  # 3 events per file: no duplicate, none lost
        ids = [s.id for r in store.recordings() for s in store.recording_segments(Path(r).name)]
        assert len(ids) == len(set(ids)) == 36


def _committed(idx: Path) -> int:
    import sqlite3

    db = idx / "meta.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_short_sound_without_background_is_one_whole_file_segment(tmp_path, fake_run):
    t = np.arange(int(0.3 * 16000)) / 16000
    write(tmp_path / "audio" / "beep.wav", (0.4 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    write(tmp_path / "audio" / "silent.wav", np.zeros(16000, np.float32))
    report = build_index(tmp_path / "audio", tmp_path / "idx", model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    assert report.added == 1 and [Path(p).name for p, _ in report.failures] == ["silent.wav"]
    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        (seg,) = store.recording_segments("beep.wav")
        assert seg.start == 0.0 and abs(seg.duration - 0.3) < 1e-3


def test_grouped_files_get_the_segments_and_vectors_of_one_file_at_a_time(tmp_path, fake_run, monkeypatch):
    """Short files share VAD and CNN batches; each still gets exactly its own segments and vectors."""
    from sonalign.index.embedders import get_embedder

    folder = tmp_path / "audio"
    for i in range(5):
        wave, _ = events([300 + 150 * i, 900], seed=i)
        write(folder / f"f{i}.wav", wave, sr=[16000, 22050, 16000, 44100, 8000][i])
    monkeypatch.setattr(indexer, "GROUP_FILES", 3)  # groups of 3 + 2
    idx = tmp_path / "idx"
    assert len(indexer.plan_groups(sorted(folder.iterdir()))) == 2
    report = build_index(folder, idx, model=str(fake_run), transcripts=False, show_progress=False, workers=1)
    assert report.added == 5 and not report.failures
    store = IndexStore.open(idx, readonly=True)
    embedder = get_embedder(str(fake_run))
    try:
        for i in range(5):
            path = folder / f"f{i}.wav"
            alone = segment_for_index(path, f"f{i}.wav")
            rows = store.recording_segments(f"f{i}.wav")
            assert [(r.id, round(r.start, 4), round(r.duration, 4), r.kind) for r in rows] == \
                [(s.id, round(s.start, 4), round(s.duration, 4), s.custom["kind"]) for s in alone]
            from sonalign.audio.io import load_audio

            expected = embedder.embed_segments([load_audio(path, embedder.sample_rate, start=s.start, duration=s.duration)[0] for s in alone])
            _, got = store.vectors([r.row_id for r in rows])
            np.testing.assert_allclose(got, expected, atol=1e-5)
    finally:
        store.close()


def test_long_file_is_streamed_in_its_own_group(tmp_path, monkeypatch):

    for i, seconds in enumerate([2.0, 3.0, 4.0, 2.0]):
        write(tmp_path / f"{i}.wav", np.zeros(int(seconds * 16000), np.float32) + 0.01)
    monkeypatch.setattr(indexer, "SHORT_FILE_SECONDS", 3.5)
    monkeypatch.setattr(indexer, "GROUP_SECONDS", 4.5)
    assert indexer.plan_groups([tmp_path / f"{i}.wav" for i in range(4)]) == [[0], [1], [2], [3]]
    monkeypatch.setattr(indexer, "GROUP_SECONDS", 5.0)
    assert indexer.plan_groups([tmp_path / f"{i}.wav" for i in range(4)]) == [[0, 1], [2], [3]]
    assert indexer.plan_groups([tmp_path / "missing.wav", tmp_path / "0.wav"]) == [[0, 1]]  # errors are reported later, per file


def test_worker_processes_index_what_one_process_does(tmp_path, monkeypatch):
    """The default model (real CNN, segmenters) in 2 spawned workers and in this process: same
    segments, vectors equal up to thread-count rounding; failures reported the same way."""

    folder = tmp_path / "audio"
    for i in range(4):
        wave, _ = events([300 + 150 * i, 900], seed=i)
        write(folder / f"f{i}.wav", wave, sr=[16000, 22050, 44100, 8000][i])
    (folder / "broken.wav").write_bytes(b"RIFF not really")
    monkeypatch.setattr(indexer, "GROUP_FILES", 2)  # plan_groups runs here: 3 groups
    reports, stores = {}, {}
    for n in (1, 2):
        idx = tmp_path / f"idx{n}"
        reports[n] = build_index(folder, idx, transcripts=False, show_progress=False, workers=n)
        stores[n] = IndexStore.open(idx, readonly=True)
    try:
        for n, r in reports.items():
            assert r.workers == n
            assert r.added == 4 and [Path(p).name for p, _ in r.failures] == ["broken.wav"]
        assert reports[1].failures[0][1] == reports[2].failures[0][1]
        for i in range(4):
            one, two = (stores[w].recording_segments(f"f{i}") for w in (1, 2))
            assert [(r.id, r.start, r.duration, r.kind) for r in one] == [(r.id, r.start, r.duration, r.kind) for r in two]
            np.testing.assert_allclose(stores[2].vectors([r.row_id for r in two])[1], stores[1].vectors([r.row_id for r in one])[1], atol=1e-4)
    finally:
        for s in stores.values():
            s.close()


class DyingPool:
    """A process pool whose worker dies at submission ``dies_at`` (1-based)."""

    def __init__(self, dies_at: int):
        self.calls, self.dies_at = 0, dies_at

    def submit(self, fn, group):
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        from sonalign.index.indexer import Failed

        self.calls += 1
        if self.calls > self.dies_at:
            raise BrokenProcessPool("pool is broken")
        f = Future()
        if self.calls == self.dies_at:
            f.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        else:
            f.set_result([Failed("worker")] * len(group))
        return f


def in_this_process(groups):
    from sonalign.index.indexer import Failed

    return iter([[Failed("here")] * len(g) for g in groups])


GROUPS = [[("a", "a")], [("b", "b"), ("c", "c")], [("d", "d")], [("e", "e")]]


def test_a_worker_that_dies_mid_run_fails_the_groups_in_flight_and_the_rest_run_here():
    """Nothing raised, order kept: done groups stand, in-flight ones fail naming the cause, the
    others are indexed in this process."""

    out = list(workers._groups_in_workers(DyingPool(dies_at=2), 1, GROUPS, in_this_process))
    assert [[f.reason for f in g] for g in out[:1] + out[2:]] == [["worker"], ["here"], ["here"]]
    assert len(out[1]) == 2 and all("worker process died" in f.reason and "run again" in f.reason for f in out[1])


def test_workers_that_cannot_start_leave_everything_to_this_process():

    out = list(workers._groups_in_workers(DyingPool(dies_at=1), 2, GROUPS, in_this_process))
    assert [[f.reason for f in g] for g in out] == [["here"], ["here", "here"], ["here"], ["here"]]


def test_resolve_workers(monkeypatch):

    assert workers.resolve_workers(4, 2) == 2 and workers.resolve_workers(1, 10) == 1 and workers.resolve_workers(3, 0) == 1
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(workers, "_physical_memory", lambda: 64 * 2**30)
    assert workers.resolve_workers(None, 100) == workers.MAX_AUTO_WORKERS == 8
    assert workers.resolve_workers(None, 3) == 3
    monkeypatch.setattr(workers, "_physical_memory", lambda: 4 * 2**30)  # 4 GiB: two workers of 1.5 GiB
    assert workers.resolve_workers(None, 100) == 2
    monkeypatch.setattr(workers, "_physical_memory", lambda: 2**30)
    assert workers.resolve_workers(None, 100) == 1
    with pytest.raises(ValueError):
        workers.resolve_workers(0, 5)


def _index(folder, idx, run):
    return build_index(folder, idx, model=str(run), transcripts=False, show_progress=False, workers=1)


def test_retrained_weights_are_refused_and_never_recorded(tmp_path, fake_run):
    """A run folder retrained in place (same path, new weights): index and search refuse, and the
    index keeps the hash of the weights its vectors were made with."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from sonalign.errors import ConfigError
    from sonalign.index.embedders import _EMBEDDERS
    from sonalign.index.query import Searcher

    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    write(tmp_path / "audio" / "a.wav", events([500, 900])[0])
    _index(tmp_path / "audio", tmp_path / "idx", run)
    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        before = store.settings["weights_sha256"]
    weights = load_file(str(run / "model.safetensors"))
    save_file({k: (v + 0.5 * torch.randn_like(v)).contiguous() if v.is_floating_point() else v for k, v in weights.items()}, str(run / "model.safetensors"))
    _EMBEDDERS.pop(str(run), None)  # a new process would load the new weights
    with pytest.raises(ConfigError, match="--rebuild"):
        _index(tmp_path / "audio", tmp_path / "idx", run)
    with pytest.raises(ConfigError, match="--rebuild"):
        Searcher.open(tmp_path / "idx")
    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        assert store.settings["weights_sha256"] == before
    rebuilt = build_index(tmp_path / "audio", tmp_path / "idx", model=str(run), rebuild=True, transcripts=False, show_progress=False, workers=1)
    assert rebuilt.added == 1
    assert Searcher.open(tmp_path / "idx").search("a tone", k=1)


def test_files_whose_names_collide_all_get_distinct_ids(tmp_path, fake_run):
    folder = tmp_path / "audio"
    for i, name in enumerate(["song.wav", "song.flac", "x/y.flac", "x__y.wav"]):
        write(folder / name, events([400 + 150 * i, 900], seed=i)[0])
    for side in ("left", "right"):  # two linked folders holding the same file names
        write(tmp_path / "elsewhere" / side / "take.wav", events([700, 1200], seed=len(side))[0])
        os.symlink(tmp_path / "elsewhere" / side, folder / f"link-{side}")
    report = _index(folder, tmp_path / "idx", fake_run)
    assert report.added == 6 and not report.failures
    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        ids = sorted(store.recording(rid).id for rid in ("song.wav", "song.flac", "x/y.flac", "x__y.wav", "link-left/take.wav", "link-right/take.wav"))
        assert len(set(ids)) == 6
    from sonalign.data.readers import load_clips

    clip_ids = [c.id for c in load_clips(folder)]
    assert len(clip_ids) == len(set(clip_ids)) == 6


def test_a_recording_id_taken_by_another_root_is_disambiguated(tmp_path, fake_run):
    for root in ("a", "b"):
        write(tmp_path / root / "take.wav", events([500 if root == "a" else 1500, 900])[0])
        assert _index(tmp_path / root, tmp_path / "idx", fake_run).added == 1
    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        ids = sorted(r.id for r in (store.db.recording_by_path(p) for p in store.recordings()))
    assert ids[0] == "take.wav" and ids[1].startswith("take.wav~") and len(ids) == 2


def test_a_file_that_turns_corrupt_or_a_removed_link_leaves_the_index(tmp_path, fake_run):
    folder = tmp_path / "audio"
    write(folder / "good.wav", events([500, 900])[0])
    write(folder / "soon-broken.wav", events([1500, 700], seed=3)[0])
    write(tmp_path / "outside" / "linked.wav", events([1100], seed=4)[0])
    os.symlink(tmp_path / "outside" / "linked.wav", folder / "linked.wav")
    assert _index(folder, tmp_path / "idx", fake_run).added == 3
    (folder / "soon-broken.wav").write_bytes(np.random.default_rng(0).bytes(20000))
    (folder / "linked.wav").unlink()
    report = _index(folder, tmp_path / "idx", fake_run)
    assert [Path(p).name for p, _ in report.failures] == ["soon-broken.wav"] and report.removed == 1
    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        assert sorted(Path(p).name for p in store.recordings()) == ["good.wav"]
        assert store.stats()["counts"]["segments"] == 2


def test_same_size_edit_with_restored_mtime_is_reindexed(tmp_path, fake_run):
    folder = tmp_path / "audio"
    write(folder / "a.wav", events([500, 900])[0])
    _index(folder, tmp_path / "idx", fake_run)
    st = (folder / "a.wav").stat()
    write(tmp_path / "edited.wav", events([1500, 700], seed=5)[0])
    assert (tmp_path / "edited.wav").stat().st_size == st.st_size
    (folder / "a.wav").write_bytes((tmp_path / "edited.wav").read_bytes())  # what cp -p / rsync -a do
    os.utime(folder / "a.wav", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = _index(folder, tmp_path / "idx", fake_run)
    assert (report.updated, report.unchanged) == (1, 0)


def test_workers_die_with_a_killed_indexer(tmp_path):
    """kill -9 of the parent: its spawned workers end too (they are not left to PID 1)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from sonalign.utils.processes import spawn_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = spawn_pool(2)\n"
        "    pids = [pool.submit(__import__('os').getpid).result() for _ in range(4)]\n"
        "    futures = [pool.submit(time.sleep, 300) for _ in range(2)]\n"
        "    print(' '.join(map(str, sorted(set(pool._processes)))), flush=True)\n"
        "    time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
