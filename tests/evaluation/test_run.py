"""evaluate_run glue: a caption-trained run zero-shot on label-only data, and CALM's emotion head in the probe."""

import json

import numpy as np

from sonalign.evaluation.run import evaluate_run
from sonalign.train.trainer import TrainSettings, train

FEATURES = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}
WORDS = ["alpha", "bravo", "charlie", "delta"]


def _manifest(tmp_path, make_wav, *, labelled: bool):
    """48 one-second tones, 4 frequencies; splits train (32) / val (8) / test (8)."""
    rows = []
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    for i in range(48):
        k = i % 4
        wave = 0.3 * np.sin(2 * np.pi * (300 + 600 * k) * t) + 0.01 * rng.standard_normal(t.size)
        folder = "lab" if labelled else "cap"
        make_wav(f"{folder}/a/{i}.wav", wave.astype(np.float32), 8000)
        row = {"id": f"c{i}", "audio": f"a/{i}.wav", "split": "train" if i < 32 else ("val" if i < 40 else "test")}
        if labelled:
            row["label"] = str(k)
        else:
            row["text"] = f"a {WORDS[k]} tone number {i}"
        rows.append(row)
    path = tmp_path / ("lab" if labelled else "cap") / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(config, manifest, out, **kw):
    settings = TrainSettings(config=config, data=str(manifest), out=str(out), epochs=2, batch_size=8, lr=3e-3, seed=0, patience=10, features=FEATURES, **kw)
    train(settings, show_progress=False)
    return out


def test_caption_run_zero_shot_on_label_only_data_with_template(tmp_path, make_wav):
    captions = _manifest(tmp_path, make_wav, labelled=False)
    labels = _manifest(tmp_path, make_wav, labelled=True)
    run = _train("clap-baseline", captions, tmp_path / "run")
    result = evaluate_run(run, labels, split="test", template="digit", show_progress=False)
    assert result.metadata["template"] == "digit"
    assert result.zeroshot is not None and result.zeroshot.n == 8
    assert {"t2a/R@1", "t2a/mAP@10", "zeroshot/top1"} <= set(result.metrics)


def test_calm_head_scored_only_for_the_classes_it_was_trained_on(tmp_path, make_wav):
    labels = _manifest(tmp_path, make_wav, labelled=True)
    captions = _manifest(tmp_path, make_wav, labelled=False)
    supervised = _train("calm", labels, tmp_path / "calm-labels", template="sound")
    result = evaluate_run(supervised, labels, split="test", probe_data=labels, show_progress=False)
    assert "head" in result.probe and "linear" in result.probe
    assert 0.0 <= result.metrics["probe/head/UA"] <= 1.0 and 0.0 <= result.metrics["probe/head/WA"] <= 1.0
    # A CALM trained on captions has an untrained head: the probe must not report it.
    unlabelled = _train("calm", captions, tmp_path / "calm-captions")
    result = evaluate_run(unlabelled, captions, split="test", probe_data=labels, show_progress=False)
    assert "linear" in result.probe and "head" not in result.probe
