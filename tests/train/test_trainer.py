"""Trainer: learns, writes every artefact, resumes exactly, reloads to identical scores."""

import json

import numpy as np
import pytest

from sonalign.train.trainer import TrainSettings, train

FEATURES = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


@pytest.fixture
def tone_manifest(tmp_path, make_wav):
    """48 clips: 8 tone frequencies (6 clips each), captioned by a word per frequency."""
    rows = []
    rng = np.random.default_rng(1)
    for i in range(48):
        k = i % 8
        t = np.arange(8000 * 2) / 8000
        wave = 0.3 * np.sin(2 * np.pi * (200 + 400 * k) * t) + 0.02 * rng.standard_normal(t.size)
        make_wav(f"d/a/{i}.wav", wave.astype(np.float32), 8000)
        split = "val" if i >= 40 else "train"
        rows.append({"id": f"c{i}", "audio": f"a/{i}.wav", "split": split, "captions": [f"a {WORDS[k]} tone"]})
    path = tmp_path / "d" / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _settings(manifest, out, **kw):
    base = dict(config="clap-baseline", data=str(manifest), out=str(out), epochs=6, batch_size=8, lr=3e-3, seed=0, patience=10, features=FEATURES)
    base.update(kw)
    return TrainSettings(**base)


def test_batches_cover_every_row_once_and_keep_classes_together():
    from sonalign.train.trainer import shuffled_batches

    rows = list(range(37))
    batches = shuffled_batches(rows, 8, np.random.default_rng(0))
    used = np.concatenate(batches)
    assert sorted(used.tolist()) == rows and all(len(b) >= 2 for b in batches)  # 37 = 4 x 8 + 5
    assert shuffled_batches([3], 8, np.random.default_rng(0)) == []  # one row alone has no negative


def test_parameter_groups_and_warmup():
    from sonalign.models.factory import create_model
    from sonalign.train.trainer import parameter_groups, warmup_steps

    model = create_model("clap-baseline", audio_dim=16, text_dim=16, embed_dim=8)
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == 0.01
    assert {names[id(p)] for p in no_decay["params"]} >= {"loss_fn.logit_scale", "audio_proj.norm.weight", "audio_proj.norm.bias"}
    assert no_decay["weight_decay"] == 0.0
    assert warmup_steps(120, 0.1, 50) == 50 and warmup_steps(2000, 0.1, 50) == 200 and warmup_steps(30, 0.1, 50) == 30


def test_same_class_pairs_are_positives_not_negatives():
    import math

    import torch

    from sonalign.data.clips import Clip
    from sonalign.models.losses.infonce import info_nce
    from sonalign.batches import positive_groups

    clips = [Clip("a", "a.wav", label="dog"), Clip("b", "b.wav", label="dog"), Clip("c", "c.wav"), Clip("d", "d.wav")]
    groups = positive_groups(clips, ["a dog barks", "dog barking", "rain", "rain"], [0, 1, 2, 3])
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    def turned(v, angle):
        return torch.tensor([v[0] * math.cos(angle) - v[1] * math.sin(angle), v[0] * math.sin(angle) + v[1] * math.cos(angle)])

    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    together = torch.stack([e1, e1, e2, e2])  # each class's two clips at one point
    apart = torch.stack([turned(e1, 0.3), turned(e1, -0.3), turned(e2, 0.3), turned(e2, -0.3)])
    by_class = torch.from_numpy(groups)
    # with the groups, classes gathered in one point is the better solution; without, clips of one class must be pushed apart
    assert info_nce(together, together, 3.0, groups=by_class) < info_nce(apart, apart, 3.0, groups=by_class)
    assert info_nce(apart, apart, 3.0) < info_nce(together, together, 3.0)
    x = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    assert torch.allclose(info_nce(x, x.flip(0), 3.0, groups=torch.arange(5)), info_nce(x, x.flip(0), 3.0))  # distinct groups: plain InfoNCE


def test_train_learns_and_writes_artifacts(tone_manifest, tmp_path):
    out = tmp_path / "run"
    summary = train(_settings(tone_manifest, out), show_progress=False)
    for name in ("config.json", "model.safetensors", "state.pt", "metrics.jsonl", "curves.png", "summary.json"):
        assert (out / name).exists(), name
    assert len(list((out / "checkpoints").glob("epoch-*.safetensors"))) == 6
    history = [json.loads(l) for l in (out / "metrics.jsonl").open()]
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    # 8 clips of 8 distinct captions: chance R@1 = 1/8
    assert summary["best_val_primary"] > 0.5
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["model"]["method"] == "clap_baseline" and resolved["data"]["features"]["audio_encoder"] == "fake-audio"


def test_resume_equals_uninterrupted(tone_manifest, tmp_path):
    straight = tmp_path / "straight"
    train(_settings(tone_manifest, straight, epochs=4), show_progress=False)
    split = tmp_path / "split"
    train(_settings(tone_manifest, split, epochs=4), show_progress=False, stop_after=2)
    train(_settings(tone_manifest, split, epochs=4), resume=True, show_progress=False)
    a = [json.loads(l) for l in (straight / "metrics.jsonl").open()]
    b = [json.loads(l) for l in (split / "metrics.jsonl").open()]
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert ra["train/loss"] == pytest.approx(rb["train/loss"], rel=1e-5)


def test_reloaded_run_gives_identical_scores(tone_manifest, tmp_path):
    from sonalign.evaluation.run import evaluate_run

    out = tmp_path / "run"
    train(_settings(tone_manifest, out, epochs=2), show_progress=False)
    first = evaluate_run(out, tone_manifest, split="val", show_progress=False)
    second = evaluate_run(out, tone_manifest, split="val", show_progress=False)
    assert first.metrics == second.metrics
    assert "t2a/R@1" in first.metrics and "a2t/R@1" in first.metrics


def test_label_only_data_uses_template_and_zero_shot(tmp_path, make_wav):
    rows = []
    for i in range(32):
        k = i % 4
        t = np.arange(8000) / 8000
        make_wav(f"d/a/{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 600 * k) * t)).astype(np.float32), 8000)
        rows.append({"id": f"c{i}", "audio": f"a/{i}.wav", "split": "val" if i >= 24 else "train", "label": WORDS[k]})
    manifest = tmp_path / "d" / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    summary = train(_settings(manifest, out, epochs=8, template="sound"), show_progress=False)
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["data"]["template"] == "sound"
    history = [json.loads(l) for l in (out / "metrics.jsonl").open()]
    assert "val/zeroshot/accuracy" in history[0]
    assert summary["best_val_primary"] > 0.5  # chance is 0.25
