"""Batch building for the keys of issue 13: label-prompt flags, encoder levels, and per-epoch diagnostics."""

from __future__ import annotations

import json

import numpy as np

from sonalign.cache.features import FeatureCache, FeatureSettings
from sonalign.data.readers import load_clips
from sonalign.batches import audio_batch, build_paired, make_batch, text_batch
from sonalign.train.trainer import TrainSettings, train

FEATURES = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}


def _manifest(tmp_path, make_wav, labelled: bool, n: int = 24):
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    rows = []
    for i in range(n):
        k = i % 3
        make_wav(f"d/a/{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 500 * k) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 8000)
        row = {"id": f"c{i}", "audio": f"a/{i}.wav", "split": "train" if i < 18 else "val"}
        row.update({"label": f"class{k}"} if labelled else {"text": f"tone number {k} clip {i}"})
        rows.append(row)
    path = tmp_path / "d" / ("lab.jsonl" if labelled else "cap.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_say_whether_their_text_was_rendered_from_the_label(tmp_path, make_wav):
    cache = FeatureCache(tmp_path / "c", FeatureSettings(**FEATURES))
    for labelled in (True, False):
        clips = load_clips(_manifest(tmp_path, make_wav, labelled))
        cache.extract(clips, show_progress=False)
        data = build_paired(cache, clips, "sound" if labelled else None)
        batch = make_batch(cache, data, np.arange(6), {"audio_embedding", "text_embedding"})
        assert batch["text_from_label"].dtype.is_floating_point is False
        assert batch["text_from_label"].tolist() == [labelled] * 6
        assert "groups" in batch and (("labels" in batch) == labelled)


def test_level_keys_are_built_when_cached_and_skipped_otherwise():
    items = [{"embedding": np.ones((1, 4), np.float32), "frames": np.ones((n, 4), np.float32), "frames_block2": np.full((n, 2), 2.0, np.float32)}
             for n in (3, 5)]
    batch = audio_batch(items, {"audio_frames", "audio_frames_block2", "audio_frames_block3"})
    assert batch["audio_frames_block2"].shape == (2, 5, 2) and batch["audio_frames_mask"].tolist()[0] == [True] * 3 + [False] * 2
    assert float(batch["audio_frames_block2"][0, 3:].abs().sum()) == 0.0  # padded like the frames
    assert "audio_frames_block3" not in batch  # not cached: the model that needs it says so


def test_text_level_keys_follow_the_tokens(tmp_path):
    class Store:
        def ensure(self, texts):
            pass

        def get(self, text):
            n = len(text.split())
            return {"embedding": np.zeros(4, np.float32), "tokens": np.ones((n, 4), np.float32), "tokens_layer2": np.full((n, 4), 3.0, np.float32)}

    class Cache:
        text_store = Store()

    batch = text_batch(Cache(), ["a b", "a b c"], {"text_tokens", "text_tokens_layer2"})
    assert batch["text_tokens_layer2"].shape == batch["text_tokens"].shape == (2, 3, 4)
    assert batch["text_tokens_layer2"][0, 2].abs().sum() == 0 and batch["text_tokens_layer2"][1, 2].sum() == 12.0


def test_trainer_logs_model_diagnostics_per_epoch(tmp_path, make_wav):
    """MGA-CLAP's codebook support and regulariser reach metrics.jsonl (issue 13 item 5), outside the loss."""
    manifest = _manifest(tmp_path, make_wav, labelled=True)
    overrides = {"dim": 16, "embed_dim": 8, "num_codes": 16, "num_heads": 2, "ff_mult": 2}
    settings = TrainSettings(config="mga-clap", data=str(manifest), out=str(tmp_path / "run"), epochs=1, batch_size=6, lr=1e-3, seed=0,
                             patience=5, template="sound", features=FEATURES, model_overrides=overrides)
    train(settings, show_progress=False)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/diag_codebook_support_audio", "train/diag_codebook_support_text", "train/diag_embed_reg"} <= set(row)
    assert 1 <= row["train/diag_codebook_support_audio"] <= 16
    terms = sum(v for k, v in row.items() if k.startswith("train/") and k not in ("train/loss",) and not k.startswith("train/diag_"))
    assert abs(row["train/loss"] - terms) < 1e-4  # the loss is the sum of the terms, diagnostics excluded
