"""The command line: help texts, clear errors, and the real default pipeline on the bundled sample."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sonalign.cli import app

runner = CliRunner()


def test_help_lists_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("models", "chunk", "features", "train", "evaluate", "index", "search", "serve", "demo"):
        assert verb in result.output


def test_models_lists_encoders_and_configs():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ("aisfx-cnn", "minilm-l6", "pocketsphinx", "hilbert", "robust-atr", "hade", "mga-clap", "calm", "clap-baseline"):
        assert name in result.output


def test_chunk_writes_segments_and_reports_bad_files(tmp_path, make_wav):
    import numpy as np

    t = np.arange(16000) / 16000
    wave = np.concatenate([np.zeros(8000), 0.4 * np.sin(2 * np.pi * 440 * t), np.zeros(16000)]).astype(np.float32)
    make_wav("in/a.wav", wave)
    (tmp_path / "in" / "bad.wav").write_bytes(b"not audio")
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["chunk", str(tmp_path / "in"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(l) for l in out.open()]
    assert rows and rows[0]["recording_id"] == "a.wav" and rows[0]["id"] == "a.wav-00000"
    assert "bad.wav" in result.output
    strict = runner.invoke(app, ["chunk", str(tmp_path / "in"), "--out", str(out), "--strict"])
    assert strict.exit_code == 1


def test_errors_are_one_clear_line(tmp_path):
    result = runner.invoke(app, ["train", "--config", "no-such-model", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output
    result = runner.invoke(app, ["search", str(tmp_path / "nothing"), "a dog"])
    assert result.exit_code == 2 and "no sonalign index here" in result.output
    result = runner.invoke(app, ["search", str(tmp_path)])
    assert result.exit_code == 2 and "give either a text QUERY or --audio FILE" in result.output


@pytest.mark.slow
def test_demo_indexes_the_sample_and_finds_goodbye(tmp_path):
    """The real default model, segmenters and transcripts on the bundled sample."""
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "idx"), "--query", "goodbye"])
    assert result.exit_code == 0, result.output
    from sonalign.index.query import Searcher

    hits = Searcher.open(tmp_path / "idx").search("goodbye", k=3)
    # ground truth (spans.jsonl): "Goodbye" is spoken at 1.50-2.37 s of phone_prompts.flac
    assert any(h.path.endswith("phone_prompts.flac") and h.start < 2.2 and h.end > 1.7 for h in hits)


@pytest.mark.slow
def test_demo_sound_queries_find_their_sound_first(tmp_path):
    """The packaged model on sounds it never trained on (sfx test/zeroshot clips in the sample)."""
    from sonalign.cli import DEMO_SOUND_QUERIES
    from sonalign.index.embedders import default_model_dir
    from sonalign.index.query import Searcher

    spans = [json.loads(line) for line in (default_model_dir().parent / "sample" / "spans.jsonl").open()]
    expected = {s["query"]: s["recording"] + ".flac" for s in spans if "query" in s}
    assert set(expected) == set(DEMO_SOUND_QUERIES)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "idx")] + [a for q in DEMO_SOUND_QUERIES for a in ("--query", q)])
    assert result.exit_code == 0, result.output
    searcher = Searcher.open(tmp_path / "idx")
    for query, path in expected.items():
        top = searcher.search(query, k=1)[0]
        assert top.path.endswith(path), (query, top.path)


def test_device_option_is_checked_before_any_work(tmp_path):
    import torch

    result = runner.invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "idx"), "--device", "gpu0"])
    assert result.exit_code == 2 and "gpu0" in result.output and "auto, cpu, cuda" in result.output
    assert not (tmp_path / "idx").exists()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["features", str(tmp_path), "--out", str(tmp_path / "f"), "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_error_is_one_line_whatever_the_path_length(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 12) / "nothing"
    result = runner.invoke(app, ["search", str(deep), "a dog"])
    assert result.exit_code == 2
    (line,) = [l for l in result.output.splitlines() if l.strip()]
    assert "no sonalign index here" in line and str(deep) in line


def test_tables_are_not_cut_when_output_is_not_a_terminal(capsys):
    from sonalign.cli import _print_hits
    from sonalign.index.query import Hit

    name = "a-recording-with-a-long-descriptive-file-name-from-the-phone-prompts-archive.flac"
    hit = Hit("s-1", f"/data/{name}", 1.5, 2.4, 0.5, "speech", "goodbye and thank you " * 4, "r", 1)
    _print_hits([hit], False)
    assert name in capsys.readouterr().out
    _print_hits([hit, hit], True)
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and json.loads(printed)[0]["path"] == f"/data/{name}"


def test_file_names_cannot_forge_report_lines(capsys):
    from sonalign.cli import _report_failures

    _report_failures([("/data/evil\nerror: [red]everything failed[/red].wav", "unreadable")], strict=False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "evil\\nerror: [red]everything failed[/red].wav: unreadable" in lines[1]


@pytest.mark.parametrize("error, expected", [
    (PermissionError(13, "Permission denied", "/srv/idx/meta.sqlite"), "/srv/idx/meta.sqlite: Permission denied; check its permissions"),
    (OSError(28, "No space left on device", "/srv/idx/vectors.faiss"), "/srv/idx/vectors.faiss: No space left on device; the disk is full"),
    (OSError(30, "Read-only file system", "/srv/idx/.writer.lock"), "/srv/idx/.writer.lock: Read-only file system; it is on a read-only filesystem"),
])
def test_os_errors_are_one_line_exit_2(tmp_path, monkeypatch, error, expected):
    import sonalign.index.build as build

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(build, "build_index", fail)
    result = runner.invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "idx")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = [l for l in result.output.splitlines() if l.strip()]
    assert expected in line


def test_sigterm_stops_indexing_and_its_workers(tmp_path):
    """What `timeout`, systemd and CI send: the run stops cleanly (exit 143), no worker is left,
    and the index opens."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    import soundfile as sf

    t = np.arange(8000) / 16000
    (tmp_path / "audio").mkdir()
    for i in range(160):  # several groups of files: two worker processes
        wave = np.concatenate([np.zeros(12000), 0.3 * np.sin(2 * np.pi * (300 + 5 * i) * t), np.zeros(12000)])
        sf.write(tmp_path / "audio" / f"{i:03d}.wav", wave, 16000)
    exe = Path(sys.executable).with_name("sonalign")
    proc = subprocess.Popen([str(exe), "index", str(tmp_path / "audio"), "--out", str(tmp_path / "idx"), "--no-transcripts", "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "SONALIGN_DEVICE": "cpu"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_descendants(proc.pid)) < 2 and proc.poll() is None:
        time.sleep(0.1)
    children = _descendants(proc.pid)
    assert len(children) >= 2, proc.communicate()
    time.sleep(1.0)  # the workers are loading their models or embedding
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped" in err
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.1)
    assert not [p for p in children if Path(f"/proc/{p}").exists()]
    from sonalign.index.store import IndexStore

    with IndexStore.open(tmp_path / "idx", readonly=True) as store:
        assert store.stats()["counts"]["recordings"] < 160


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*") if Path(f"/proc/{parent}/task").exists() else []:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def test_evaluating_the_packaged_model_writes_nothing_into_the_package(tmp_path, monkeypatch, user_cache):
    import numpy as np
    import soundfile as sf

    from sonalign.index.embedders import default_model_dir

    package_files = sorted(p.name for p in default_model_dir().iterdir())
    t = np.arange(16000) / 16000
    for label, freq in (("beep", 1000), ("hum", 120)):
        for i in range(2):
            (tmp_path / "data" / label).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / "data" / label / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (freq + 20 * i) * t)).astype(np.float32), 16000)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["evaluate", "default", "--data", str(tmp_path / "data"), "--split", "all"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in default_model_dir().iterdir()) == package_files
    assert (tmp_path / "eval-default-data-all" / "report.json").exists()
    assert not (tmp_path / "features").exists() and any((user_cache / "features").iterdir())


def test_features_reports_bad_manifest_rows_by_line_and_processes_the_rest(tmp_path, make_wav):
    import numpy as np

    make_wav("d/a.wav", (0.3 * np.sin(np.arange(16000) / 5)).astype(np.float32))
    rows = [{"id": "a", "audio": "a.wav", "captions": ["a hum"], "license": "CC0-1.0"},
            {"id": "b", "audio": "missing.wav", "captions": ["gone"]},
            {"id": "c", "audio": "a.wav", "captions": []}]
    (tmp_path / "d" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["features", str(tmp_path / "d" / "manifest.jsonl"), "--out", str(tmp_path / "f"),
                                 "--audio-encoder", "fake-audio", "--text-encoder", "fake-text"])
    assert result.exit_code == 0, result.output
    assert "encoded 1 clips" in result.output
    assert "manifest.jsonl:2: field 'audio'" in result.output and "manifest.jsonl:3: field 'captions'" in result.output
