"""The Python surface (``import sonalign``) mirrors the CLI verbs, end to end on fake encoders."""

import json

import numpy as np

import sonalign

FEATURES = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}


def test_every_verb_through_the_public_names(tmp_path, make_wav):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        k = i % 4
        t = np.arange(8000 * 2) / 8000
        make_wav(f"d/audio/{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 500 * k) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 8000)
        rows.append({"id": f"c{i}", "audio": f"audio/{i}.wav", "split": "test" if i >= 20 else "val" if i >= 16 else "train", "captions": [f"tone {k}"]})
    manifest = tmp_path / "d" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert "clap-baseline" in sonalign.list_models()
    assert len(sonalign.load_clips(manifest, split="train")) == 16
    report = sonalign.extract_features(manifest, tmp_path / "cache", **FEATURES, split="train", show_progress=False)
    assert report.encoded == 16 and not report.failures
    summary = sonalign.train_model("clap-baseline", manifest, tmp_path / "run", epochs=2, batch_size=8, features=FEATURES, cache=str(tmp_path / "cache"))
    assert summary["epochs_run"] == 2 and (tmp_path / "run" / "model.safetensors").exists()
    result = sonalign.evaluate(tmp_path / "run", manifest, split="test", cache_dir=tmp_path / "cache", show_progress=False)
    assert 0.0 <= result.metrics["t2a/R@10"] <= 1.0 and result.metadata["n_clips"] == 4
    model = sonalign.create_model(str(tmp_path / "run"))
    assert model.config["method"] == "clap_baseline"
    built = sonalign.build_index(tmp_path / "d" / "audio", tmp_path / "idx", model=str(tmp_path / "run"), transcripts=False, workers=1, show_progress=False)
    assert built.added == 24
    hits = sonalign.open_searcher(tmp_path / "idx").search("tone 2", k=3, group_by_file=True)
    assert len(hits) == 3 and all(h.path.endswith(".wav") and h.end > h.start for h in hits)


def test_import_stays_light():
    import subprocess
    import sys

    code = "import sys, sonalign; print(int(any(m in sys.modules for m in ('torch', 'faiss', 'fastapi'))))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "0"
