"""One batching path: the index embeds a clip and a caption exactly as the evaluator scores them."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sonalign
from sonalign.audio.io import load_audio
from sonalign.batches import build_paired, encode_audio_items, encode_texts
from sonalign.cache.features import FeatureCache, FeatureSettings
from sonalign.data.clips import Clip

FAKE = {"audio_encoder": "fake-audio", "text_encoder": "fake-text", "segmenter": "fixed"}
#: small configs on the 16-d fake encoders, for every registered method
SMALL = {
    "clap-baseline": dict(embed_dim=8),
    "hilbert": dict(embed_dim=8, pool_hidden=8, segment_heads=2, cross_heads=2, pool_heads=2, num_classes=3),
    "robust-atr": dict(embed_dim=8, pool_hidden=8, transformer_heads=2, transformer_ff=16, refine_heads=2, refine_dim=8),
    "hade": dict(hierarchy="stream", features={}, dim=16, embed_dim=8, num_heads=2, ff_mult=2, num_factors=2, factor_dim=4),
    "mga-clap": dict(dim=16, embed_dim=8, num_codes=16, num_heads=2, ff_mult=2),
    "calm": dict(n_mels=64, patch_time=4, patch_mel=16, dim=16, embed_dim=8, spectran_layers=1, mm_layers=1, num_heads=2, ff_mult=2, num_classes=3),
}


def test_every_registered_method_has_a_small_config_here():
    assert set(SMALL) == set(sonalign.list_models())


@pytest.mark.parametrize("method", sorted(SMALL))
def test_index_time_and_evaluation_time_embeddings_are_equal(method, tmp_path, make_wav):
    from sonalign.index.embedders import RunEmbedder

    torch.manual_seed(0)
    model = sonalign.create_model(method, **{k: 16 for k in ("audio_dim", "text_dim") if k in sonalign.create_model(method).defaults}, **SMALL[method])
    features = {**FAKE, "with_mel": "audio_mel" in model.required_inputs}
    run = tmp_path / "run"
    run.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    (run / "config.json").write_text(json.dumps({"model": model.config, "data": {"features": features}}))
    t = np.arange(3 * 8000) / 8000
    path = make_wav("clip.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * np.linspace(0.2, 1, t.size)).astype(np.float32), 8000)
    caption = "a rising tone. then it stops"

    cache = FeatureCache(tmp_path / "cache", FeatureSettings(**features))
    cache.extract([Clip("clip", str(path), captions=[caption])], show_progress=False)
    evaluated = build_paired(cache, [Clip("clip", str(path), captions=[caption])], None)
    trained = sonalign.create_model(str(run))
    audio_eval = encode_audio_items(trained, evaluated.audio)["embedding"].numpy()
    text_eval = encode_texts(trained, cache, [caption])["embedding"].numpy()

    embedder = RunEmbedder(run)
    audio_index = embedder.embed_segments([load_audio(path, embedder.sample_rate)[0]])
    text_index = embedder.embed_text([caption])
    np.testing.assert_allclose(audio_index, audio_eval / np.linalg.norm(audio_eval, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(text_index, text_eval / np.linalg.norm(text_eval, axis=1, keepdims=True), atol=1e-5)
