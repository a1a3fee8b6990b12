"""``hf:PATH``: a Hugging Face model from a LOCAL folder (never downloaded: ``local_files_only``).

``get_audio_encoder("hf:/models/x")`` / ``get_text_encoder("hf:/models/x")`` dispatch on
``config.json``'s ``model_type``:

===========================  =========  =====================================================
model_type                   kind       embedding / frames (tokens)
===========================  =========  =====================================================
``clap``                     audio      ``audio_projection(pooled audio state)`` (what
                                        ``ClapModel.get_audio_features`` gives before its L2
                                        normalisation); frames: the audio encoder's last hidden
                                        state averaged over frequency, one per time step, passed
                                        through the same projection head so they share ``dim``
``clap``                     text       ``text_projection(pooler)`` (= ``get_text_features``
                                        before normalisation); tokens: last hidden states through
                                        the same projection
``wav2vec2``, ``hubert``,    audio      masked mean of ``last_hidden_state``; frames: the
``wavlm``                               ``last_hidden_state`` rows of real audio
``whisper``                  audio      encoder only; masked mean; frames: encoder states cut to
                                        the real audio length (20 ms each for real Whisper)
anything else                text       ``AutoModel`` + ``AutoTokenizer`` (encoder of an
                                        encoder-decoder); masked mean; tokens: last hidden states
===========================  =========  =====================================================

Determinism and batch independence:

* CLAP: audio longer than the feature extractor's window (10 s for LAION CLAP) is split into
  consecutive windows by us, so the extractor's *random* crop (``rand_trunc`` / ``fusion``) never
  runs; ``is_longer`` is set False for every window (the extractor otherwise marks a random clip as
  longer when none is). A segment's embedding is the duration-weighted mean of its windows'
  L2-normalised embeddings (= the single window's embedding when it fits). Short audio is padded the
  way the checkpoint's extractor says (``repeatpad`` for LAION: the clip is repeated); frames past
  the real audio are masked out.
* wav2vec2-style models whose extractor returns no attention mask (``feat_extract_norm="group"``,
  e.g. wav2vec2-base) would see the zero padding of a batch; those encode one wave at a time.
  Waves shorter than the conv receptive field (400 samples for the usual config) are zero-padded
  to it.
* Whisper: audio is cut into the extractor's 30 s windows (``chunk_length``), each padded as
  Whisper requires; frames beyond ``ceil((n // hop) / 2)`` of a window are masked out.

``load_clap_pair(PATH)`` gives both CLAP towers in the joint (already aligned) space, for the
search index's ``--model hf:PATH``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sonalign.encoders.base import register_audio_encoder, register_text_encoder
from sonalign.encoders.hf_audio import (
    HFClapAudioEncoder,
    HFSSLAudioEncoder,
    HFWhisperEncoder,
)
from sonalign.encoders.hf_base import AUDIO_TYPES, SSL_TYPES, model_type
from sonalign.encoders.hf_text import HFClapTextEncoder, HFTextEncoder
from sonalign.errors import ConfigError


@register_audio_encoder("hf", "hf:PATH: local Hugging Face audio model (clap, wav2vec2, hubert, wavlm, whisper encoder)")
def hf_audio_encoder(path: str, device: str | None = None, **kwargs: Any):
    if kwargs:
        raise ConfigError(f"hf:{path}: unexpected options {sorted(kwargs)}")
    mt = model_type(path)
    if mt == "clap":
        return HFClapAudioEncoder(path, device)
    if mt in SSL_TYPES:
        return HFSSLAudioEncoder(path, device)
    if mt == "whisper":
        return HFWhisperEncoder(path, device)
    raise ConfigError(f"hf:{path}: model_type '{mt}' is not a supported audio model (supported: {', '.join(AUDIO_TYPES)}); text models work as text encoders")


@register_text_encoder("hf", "hf:PATH: local Hugging Face text model (clap text tower, or any AutoModel + AutoTokenizer, mean pooled)")
def hf_text_encoder(path: str, device: str | None = None, **kwargs: Any):
    if kwargs:
        raise ConfigError(f"hf:{path}: unexpected options {sorted(kwargs)}")
    mt = model_type(path)
    if mt == "clap":
        return HFClapTextEncoder(path, device)
    if mt in SSL_TYPES or mt == "whisper":
        raise ConfigError(f"hf:{path}: model_type '{mt}' is an audio model; use it as an audio encoder")
    return HFTextEncoder(path, device)


class ClapPair:
    """Both CLAP towers from one local folder, returning L2-normalised joint-space vectors."""

    def __init__(self, path: str | Path, device: str | None = None):
        mt = model_type(path)
        if mt != "clap":
            raise ConfigError(f"hf:{path}: model_type '{mt}' is not CLAP; a joint audio-text model needs model_type 'clap'")
        self.name = f"hf:{path}"
        self.audio = HFClapAudioEncoder(path, device)
        self.text = HFClapTextEncoder(path, device)
        self.sample_rate = self.audio.sample_rate
        self.dim = self.audio.dim

    def settings(self) -> dict[str, Any]:
        return {"audio": self.audio.settings(), "text": self.text.settings()}

    def encode_audio(self, waves: list[np.ndarray], *, batch_size: int = 8, show_progress_bar: bool = False) -> np.ndarray:
        """(B, D) float32, unit norm: mono waves at :attr:`sample_rate`."""
        return self.audio.encode(waves, batch_size=batch_size, show_progress_bar=show_progress_bar, normalize_embeddings=True)["embedding"]

    def encode_text(self, texts: list[str], *, batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray:
        """(B, D) float32, unit norm."""
        return self.text.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar, normalize_embeddings=True)["embedding"]


def load_clap_pair(path: str | Path, device: str | None = None) -> ClapPair:
    """A :class:`ClapPair` for ``path`` (``hf:`` prefix accepted)."""
    p = str(path)
    return ClapPair(p[3:] if p.startswith("hf:") else p, device)
