"""``probe_run`` reads each model's ``probe_output`` and gives a classifier head audio alone (issue 13 item 1)."""

from __future__ import annotations

import json

import numpy as np
import torch

from sonalign.cache.features import FeatureCache, FeatureSettings
from sonalign.evaluation.run import probe_run
from sonalign.models.base import AlignmentModel

FEATURES = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}


class Probed(AlignmentModel):
    """``embedding`` is noise; ``calm_embedding`` is the clip's pooled features (what the probe must read)."""

    required_inputs = ("audio_embedding", "text_embedding", "text_tokens")
    probe_output = "calm_embedding"

    def __init__(self):
        super().__init__({})
        self.classifier = torch.nn.Linear(16, 3)
        self.seen_keys: set[str] = set()

    def encode_audio(self, batch):
        x = batch["audio_embedding"]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(x.sum() * 1000) % 2**31))
        return {"embedding": noise, "calm_embedding": x}

    def classify(self, batch):
        self.seen_keys |= set(batch)
        return self.classifier(batch["audio_embedding"])


def _manifest(tmp_path, make_wav):
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    rows = []
    for i in range(60):
        k = i % 3
        make_wav(f"p/a/{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 900 * k) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32), 8000)
        rows.append({"id": f"c{i}", "audio": f"a/{i}.wav", "label": f"c{k}", "split": "train" if i < 36 else ("val" if i < 48 else "test")})
    path = tmp_path / "p" / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_probe_reads_the_models_probe_output_and_the_head_gets_audio_only(tmp_path, make_wav):
    manifest = _manifest(tmp_path, make_wav)
    cache = FeatureCache(tmp_path / "cache", FeatureSettings(**FEATURES))
    model = Probed().eval()
    out = probe_run(model, cache, manifest, show_progress=False, head_labels=["c0", "c1", "c2"])
    assert out["linear"].ua >= 0.9  # the informative calm_embedding, not the noise "embedding" (chance 1/3)
    assert "head" in out and model.seen_keys and all(k.startswith("audio_") for k in model.seen_keys)
