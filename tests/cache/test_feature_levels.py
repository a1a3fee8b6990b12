"""Encoder levels in the feature cache (issue 13 item 4): new optional keys, existing keys unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sonalign.cache.features import FORMAT_VERSION, FeatureCache, FeatureSettings
from sonalign.data.readers import load_clips
from sonalign.errors import ConfigError
from sonalign.utils.hashing import settings_hash

from conftest import FakeAudioEncoder, FakeTextEncoder


class LevelAudio(FakeAudioEncoder):
    """Fake audio encoder with one intermediate level (half the frame features)."""

    name = "fake-levels-audio"
    levels = {"half": 8}

    def encode(self, waves, *, batch_size=16, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False, levels=False):
        out = super().encode(waves, batch_size=batch_size)
        if levels:
            out["frames_half"] = out["frames"][..., :8] * 2.0
        return out


class LevelText(FakeTextEncoder):
    """Fake text encoder with an intermediate "layer 1" (the word vectors negated)."""

    name = "fake-levels-text"
    levels = {"layer1": 16}

    def encode(self, texts, *, batch_size=32, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False, layers=()):
        out = super().encode(texts, batch_size=batch_size)
        for k in layers:
            out[f"tokens_layer{k}"] = -out["tokens"]
        return out


@pytest.fixture(autouse=True)
def _level_encoders():
    from sonalign.encoders import base

    base._AUDIO["fake-levels-audio"], base._TEXT["fake-levels-text"] = LevelAudio, LevelText
    yield
    base._AUDIO.pop("fake-levels-audio"), base._TEXT.pop("fake-levels-text")


def _clips(tmp_path, make_wav):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        make_wav(f"src/a/{i}.wav", (0.2 * rng.standard_normal(8000 * (1 + i))).astype(np.float32), 8000)
        rows.append({"id": f"c{i}", "audio": f"a/{i}.wav", "captions": [f"word{i} and more words"]})
    (tmp_path / "src" / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_clips(tmp_path / "src" / "m.jsonl")


def test_default_settings_keep_their_cache_keys_and_files(tmp_path, make_wav):
    settings = FeatureSettings(audio_encoder="fake-levels-audio", text_encoder="fake-levels-text")
    cache = FeatureCache(tmp_path / "c", settings)
    expected = {"format": FORMAT_VERSION, "encoder": LevelAudio().settings(), "segmenter": cache.segmenter.settings(), "mel": None}
    assert cache.audio_key == settings_hash(expected)  # the key files were written under before levels existed
    assert cache.text_store.key == settings_hash(LevelText().settings())
    cache.extract(_clips(tmp_path, make_wav), show_progress=False)
    files = sorted((tmp_path / "c" / "audio").rglob("*.safetensors"))
    assert files and all(set(cache.load_audio_features(f.stem)) == {"embedding", "frames", "frame_offsets", "segments"} for f in files)
    view = json.loads((cache.view_dir / "settings.json").read_text())
    assert "with_levels" not in view["feature_settings"]  # settings.json as written before the option existed


def test_with_levels_caches_intermediate_levels_under_new_keys(tmp_path, make_wav):
    plain = FeatureCache(tmp_path / "c", FeatureSettings(audio_encoder="fake-levels-audio", text_encoder="fake-levels-text"))
    cache = FeatureCache(tmp_path / "c", FeatureSettings(audio_encoder="fake-levels-audio", text_encoder="fake-levels-text", with_levels=True))
    assert cache.audio_key != plain.audio_key and cache.text_store.key != plain.text_store.key
    clips = _clips(tmp_path, make_wav)
    cache.extract(clips, show_progress=False)
    for clip in clips:
        data = cache.load_audio_features(cache.memo.hash(clip.audio))
        assert data["frames_half"].shape == (data["frames"].shape[0], 8)
        assert np.array_equal(data["frames_half"], data["frames"][:, :8] * 2.0)  # same frame grid and offsets
        text = cache.text_store.get(clip.texts[0])
        assert np.array_equal(text["tokens_layer1"], -text["tokens"])
    assert json.loads((cache.view_dir / "settings.json").read_text())["feature_settings"]["with_levels"] is True


def test_with_levels_needs_encoders_that_have_them(tmp_path):
    with pytest.raises(ConfigError, match="intermediate levels"):
        FeatureCache(tmp_path / "c", FeatureSettings(audio_encoder="fake-audio", text_encoder="fake-levels-text", with_levels=True))
