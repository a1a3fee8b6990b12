"""The encoder registry: every built-in name is listed, unknown names fail clearly, instances are
cached and satisfy the protocols, construction loads no weights."""

from __future__ import annotations

import pytest

from sonalign.encoders import base
from sonalign.encoders.base import AudioEncoder, TextEncoder, get_audio_encoder, get_text_encoder, list_encoders
from sonalign.errors import ConfigError

BUILTIN = {"audio:aisfx-cnn", "audio:pocketsphinx", "audio:hf", "text:minilm-l6", "text:hf"}


def test_list_encoders_lists_all_builtins():
    names = list_encoders()
    assert BUILTIN <= set(names)
    assert all(isinstance(d, str) and d for d in names.values())


def test_unknown_names_list_known_ones():
    with pytest.raises(ConfigError) as err:
        get_audio_encoder("no-such-encoder")
    msg = str(err.value)
    assert "no-such-encoder" in msg and "aisfx-cnn" in msg and "pocketsphinx" in msg and "hf:PATH" in msg
    with pytest.raises(ConfigError) as err:
        get_text_encoder("aisfx-cnn")  # an audio name is not a text encoder
    assert "minilm-l6" in str(err.value) and "hf:PATH" in str(err.value)


def test_builtins_are_cached_cheap_and_follow_the_protocols():
    audio = get_audio_encoder("aisfx-cnn")
    assert get_audio_encoder("aisfx-cnn") is audio
    assert isinstance(audio, AudioEncoder)
    text = get_text_encoder("minilm-l6")
    assert isinstance(text, TextEncoder) and text.dim == 384
    asr = get_audio_encoder("pocketsphinx")
    assert isinstance(asr, AudioEncoder) and asr.sample_rate == 16000
    # lookups construct without loading weights (fresh instances, not the shared cached ones)
    from sonalign.encoders.aisfx_cnn import AisfxCNN
    from sonalign.encoders.minilm import MiniLML6
    from sonalign.encoders.pocketsphinx_asr import PocketsphinxASR

    assert AisfxCNN()._trunk is None and MiniLML6()._model is None and PocketsphinxASR()._transcriber._decoder is None


def test_hf_prefix_goes_to_the_hf_factory(tmp_path):
    assert "hf" in base._AUDIO and "hf" in base._TEXT
    with pytest.raises(ConfigError, match="no such folder"):
        get_audio_encoder(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(ConfigError, match="no such folder"):
        get_text_encoder(f"hf:{tmp_path / 'nope'}")
