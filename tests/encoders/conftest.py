"""Fixtures for the encoder tests: tiny random Hugging Face models saved to disk, speech synthesis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

TINY_WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] a the of on in and dog cat bark barks barking sound rain car "
    "engine loud quiet music people talking door bird ##s ##ing ##ed"
).split()


def _tokenizer(root: Path):
    from transformers import BertTokenizerFast

    vocab = root / "vocab.txt"
    if not vocab.exists():
        vocab.write_text("\n".join(TINY_WORDS) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab), model_max_length=64)


def _conv_kw():
    # A 2-layer conv feature encoder (receptive field 20 samples, hop 10) keeps frame counts small.
    return dict(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        vocab_size=10,
    )


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> dict[str, Path]:
    """``{kind: folder}`` of tiny random models saved with save_pretrained (weights, configs,
    feature extractors, tokenizers): clap, w2v_layer, w2v_group, hubert, wavlm, whisper, bert."""
    pytest.importorskip("transformers")
    import torch

    root = tmp_path_factory.mktemp("tiny_hf")
    torch.manual_seed(0)
    out: dict[str, Path] = {}

    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    cfg = ClapConfig(
        text_config=dict(
            vocab_size=len(TINY_WORDS),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=40,
            pad_token_id=0,
            type_vocab_size=1,
            projection_dim=12,
        ),
        audio_config=dict(
            spec_size=64,
            num_mel_bins=16,
            window_size=4,
            patch_size=4,
            patch_stride=4,
            depths=[1, 1],
            num_heads=[1, 2],
            patch_embeds_hidden_size=8,
            hidden_size=16,
            projection_dim=12,
            enable_fusion=False,
        ),
        projection_dim=12,
    )
    out["clap"] = root / "clap"
    ClapModel(cfg).eval().save_pretrained(out["clap"])
    # max_length_s=1 at 16 kHz: one CLAP window per second; default truncation="fusion" on purpose
    ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1, fft_window_size=400, frequency_max=8000).save_pretrained(out["clap"])
    _tokenizer(root).save_pretrained(out["clap"])

    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model, WavLMConfig, WavLMModel

    for name, config_cls, model_cls, extra in [
        ("w2v_layer", Wav2Vec2Config, Wav2Vec2Model, {"feat_extract_norm": "layer"}),
        ("w2v_group", Wav2Vec2Config, Wav2Vec2Model, {"feat_extract_norm": "group"}),
        ("hubert", HubertConfig, HubertModel, {}),
        ("wavlm", WavLMConfig, WavLMModel, {}),
    ]:
        out[name] = root / name
        config = config_cls(**_conv_kw(), **extra)
        model_cls(config).eval().save_pretrained(out[name])
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True, return_attention_mask=config.feat_extract_norm == "layer").save_pretrained(out[name])

    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    out["whisper"] = root / "whisper"
    wcfg = WhisperConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        max_source_positions=50,  # 100 mel frames = a 1 s window at hop 160
        max_target_positions=16,
        vocab_size=60,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=3,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    WhisperModel(wcfg).eval().save_pretrained(out["whisper"])
    WhisperFeatureExtractor(feature_size=8, sampling_rate=16000, hop_length=160, chunk_length=1, n_fft=400).save_pretrained(out["whisper"])

    from transformers import BertConfig, BertModel

    out["bert"] = root / "bert"
    BertModel(BertConfig(vocab_size=len(TINY_WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=40)).eval().save_pretrained(out["bert"])
    _tokenizer(root).save_pretrained(out["bert"])
    return out


@pytest.fixture(scope="session")
def espeak(tmp_path_factory):
    """``say(text, speed=150) -> 16 kHz float32 wave`` with espeak-ng; skips where it is absent."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    import soundfile as sf

    from sonalign.audio.io import resample

    root = tmp_path_factory.mktemp("espeak")

    def say(text: str, speed: int = 150) -> np.ndarray:
        path = root / f"{abs(hash((text, speed)))}.wav"
        subprocess.run([exe, "-v", "en-us", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True, timeout=60)
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return resample(data.mean(axis=1), sr, 16000)

    return say


def noise(seconds: float, sr: int, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)
