"""The command line: help texts, clear errors, and the real default pipeline on the bundled sample."""

import json

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
    assert rows and rows[0]["recording_id"] == "a" and rows[0]["id"] == "a-00000"
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
    from sonalign.index.build import make_searcher

    hits = make_searcher(tmp_path / "idx").search("goodbye", k=3)
    # ground truth (spans.jsonl): "Goodbye" is spoken at 1.50-2.37 s of phone_prompts.flac
    assert any(h.path.endswith("phone_prompts.flac") and h.start < 2.2 and h.end > 1.7 for h in hits)


def test_device_option_is_checked_before_any_work(tmp_path):
    import torch

    result = runner.invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "idx"), "--device", "gpu0"])
    assert result.exit_code == 2 and "gpu0" in result.output and "auto, cpu, cuda" in result.output
    assert not (tmp_path / "idx").exists()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["features", str(tmp_path), "--out", str(tmp_path / "f"), "--device", "cuda"])
        assert result.exit_code == 2 and "no CUDA GPU" in result.output
