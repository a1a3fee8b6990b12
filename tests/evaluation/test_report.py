"""Report writing: files exist, JSON round-trips, PNGs are valid, Markdown has the numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sonalign.evaluation.noise import NoiseBank
from sonalign.evaluation.probe import linear_probe
from sonalign.evaluation.report import (
    atomic_write_text,
    format_table,
    load_report,
    normalise_robustness,
    snr_label,
    write_report,
)
from sonalign.evaluation.retrieval import evaluate_retrieval
from sonalign.evaluation.zeroshot import class_prompts, zero_shot_classify

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    t2a = np.repeat(np.arange(40), 5)
    s = rng.random((40, 200))
    s[t2a, np.arange(200)] += 0.6
    retrieval = evaluate_retrieval(s, t2a)

    centers = rng.standard_normal((5, 8))
    labels = np.repeat(np.arange(5), 10)
    audio = centers[labels] + 0.8 * rng.standard_normal((50, 8))
    names = ["dog", "rain", "siren", "clock_tick", "engine"]
    prompts, tpl = class_prompts(names, kind="sounds")
    zs = zero_shot_classify(audio, centers, labels, names, template=tpl, prompts=prompts)

    x = centers[labels] + 0.5 * rng.standard_normal((50, 8))
    probe = linear_probe(x[::2], labels[::2], x[1::2], labels[1::2])

    robustness = {
        "clean": {"t2a/R@1": 0.31, "t2a/R@10": 0.72, "t2a/median_rank": 4.0},
        15: {"t2a/R@1": 0.27, "t2a/R@10": 0.66, "t2a/median_rank": 5.0},
        10.0: {"t2a/R@1": 0.22, "t2a/R@10": 0.6, "t2a/median_rank": 7.0},
        "5 dB": {"t2a/R@1": 0.15, "t2a/R@10": 0.5, "t2a/median_rank": 10.0},
    }
    bank = NoiseBank([rng.standard_normal(1000)], names=["hum.wav"], sample_rate=16000, source="ESC-50 fold 5")
    metadata = {
        "model": "hilbert",
        "data": "clotho-v2.1",
        "split": "evaluation",
        "template": tpl,
        "noise": bank.describe(),
    }
    return dict(retrieval=retrieval, zeroshot={"esc50": zs}, probe={"emotions": probe}, robustness=robustness, metadata=metadata)


def test_write_report_files_and_roundtrip(tmp_path: Path, results) -> None:
    paths = write_report(tmp_path / "rep", **results)
    for p in (paths.json, paths.markdown, *paths.plots.values()):
        assert p.is_file() and p.stat().st_size > 0
    assert set(paths.plots) == {"recall_at_k", "robustness_snr"}
    for png in paths.plots.values():
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC
        import matplotlib.image as mpimg

        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    # no temporary files left behind
    assert not [f for f in os.listdir(paths.directory) if f.endswith(".tmp")]

    rep = load_report(paths.directory)
    assert rep == json.loads(json.dumps(rep))  # plain JSON types only
    assert rep["schema"] == "sonalign.report/1"
    r = results["retrieval"]
    assert rep["retrieval"]["metrics"] == pytest.approx(r.metrics)
    assert rep["retrieval"]["conventions"] == r.conventions
    assert rep["metadata"]["model"] == "hilbert"
    assert rep["metadata"]["noise"]["source"] == "ESC-50 fold 5"
    assert rep["zeroshot"]["esc50"]["template"] == "the sound of {label}"
    assert rep["zeroshot"]["esc50"]["top1"] == pytest.approx(results["zeroshot"]["esc50"].top1)
    assert rep["probe"]["emotions"]["UA"] == pytest.approx(results["probe"]["emotions"].ua)
    assert [row["condition"] for row in rep["robustness"]] == ["clean", "15 dB", "10 dB", "5 dB"]
    assert [row["snr_db"] for row in rep["robustness"]] == [None, 15.0, 10.0, 5.0]
    assert rep["files"]["recall_at_k"] == "recall_at_k.png"


def test_markdown_contains_numbers(tmp_path: Path, results) -> None:
    paths = write_report(tmp_path, **results)
    md = paths.markdown.read_text()
    r = results["retrieval"].metrics
    for key in ("t2a/R@1", "t2a/R@10", "a2t/R@5", "a2t/mAP@10", "t2a/median_rank", "primary"):
        assert f"{r[key]:.4f}" in md, key
    assert "text-to-audio" in md and "audio-to-text" in md
    zs = results["zeroshot"]["esc50"]
    assert f"{zs.top1:.4f}" in md and f"{zs.top5:.4f}" in md and "the sound of {label}" in md
    pr = results["probe"]["emotions"]
    assert f"{pr.ua:.4f}" in md and f"{pr.wa:.4f}" in md
    assert "| 10 dB | 0.2200 | 0.6000 | 7.0000 |" in md
    assert "![recall_at_k](recall_at_k.png)" in md
    assert "hilbert" in md and "clotho-v2.1" in md


def test_report_is_deterministic_and_partial(tmp_path: Path, results) -> None:
    a = write_report(tmp_path / "a", **results)
    b = write_report(tmp_path / "b", **results)
    assert a.json.read_bytes() == b.json.read_bytes()
    assert a.markdown.read_bytes() == b.markdown.read_bytes()
    only = write_report(tmp_path / "c", probe=results["probe"]["emotions"], metadata={"model": "m"})
    rep = load_report(only.json)
    assert set(rep) == {"schema", "metadata", "probe", "files"}
    assert "probe" in rep["probe"]
    assert only.plots == {}
    assert "## Linear probe" in only.markdown.read_text()
    assert "## Retrieval" not in only.markdown.read_text()


def test_overwrite_is_atomic_replace(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    atomic_write_text(p, "old")
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert os.listdir(tmp_path) == ["x.json"]


def test_nan_becomes_null(tmp_path: Path) -> None:
    paths = write_report(tmp_path, robustness={"clean": {"R@1": float("nan")}}, metadata={"x": np.float32(1.5)})
    rep = load_report(tmp_path)
    assert rep["robustness"][0]["metrics"]["R@1"] is None
    assert rep["metadata"]["x"] == 1.5
    assert paths.json.read_text().count("NaN") == 0


def test_snr_labels_and_order() -> None:
    assert snr_label(None) == "clean" and snr_label("clean") == "clean" and snr_label(float("inf")) == "clean"
    assert snr_label(5) == "5 dB" and snr_label("7.5dB") == "7.5 dB"
    rows = normalise_robustness({5: {"m": 0.1}, "clean": {"m": 0.5}, 15: {"m": 0.3}})
    assert [r["condition"] for r in rows] == ["clean", "15 dB", "5 dB"]
    with pytest.raises(ValueError, match="twice"):
        normalise_robustness({5: {}, "5 dB": {}})
    with pytest.raises(ValueError, match="neither"):
        normalise_robustness({"loud": {}})


def test_format_table_styles() -> None:
    metrics = {"t2a/R@1": 0.123456, "t2a/median_rank": 7.0, "top5": None}
    plain = format_table(metrics, title="Retrieval")
    assert plain.splitlines()[0] == "Retrieval"
    assert "0.1235" in plain and "7.0000" in plain and "-" in plain
    md = format_table(metrics, style="markdown")
    assert md.splitlines()[0] == "| metric | value |"
    assert "| t2a/R@1 | 0.1235 |" in md
    rich = format_table([["t2a", 0.5, 3], ["a2t", 0.25, 1]], ["direction", "R@1", "rank"], style="rich", title="T")
    assert "0.5000" in rich and "0.2500" in rich and "direction" in rich
    assert "\x1b[" not in rich
    with pytest.raises(ValueError, match="cells"):
        format_table([[1, 2], [3]], ["a", "b"])
    with pytest.raises(ValueError, match="style"):
        format_table(metrics, style="html")  # type: ignore[arg-type]
