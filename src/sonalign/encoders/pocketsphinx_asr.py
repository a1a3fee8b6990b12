"""``pocketsphinx``: speech -> transcript -> ``minilm-l6`` embedding (the cascade baseline).

Transcription uses pocketsphinx 5's ``Decoder`` with its shipped US-English models (acoustic model
``en-us``, the ``en-us.lm.bin`` trigram LM and ``cmudict-en-us.dict``), 16 kHz 16-bit PCM, one
utterance per input wave (``full_utt=True``). The transcript is then embedded by ``minilm-l6``.

As an :class:`~sonalign.encoders.base.AudioEncoder`: ``sample_rate`` 16000, ``dim`` 384, and
``encode`` returns

* ``embedding`` (B, 384): minilm-l6's embedding of the transcript;
* ``frames`` (B, L, 384) / ``frames_mask`` (B, L): the transcript's minilm token states (the
  "frames" of a cascade are its tokens; [CLS]/[SEP] included, so every row has >= 2 valid frames);
* ``transcripts``: the list of transcripts (lower case, pocketsphinx's words joined by spaces).

An empty transcript (silence, noise, music, or speech the decoder rejects) is embedded as the
empty string ``""``, i.e. minilm's embedding of ``[CLS] [SEP]``: a fixed "nothing was said"
vector, the same for every such segment, rather than an error or a zero vector (which would break
cosine scores).

Decoding (and its determinism: ``reinit_feat()`` before every utterance) lives in
:mod:`sonalign.asr.pocketsphinx`, which needs no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sonalign.asr.pocketsphinx import FAST_OPTIONS, SAMPLE_RATE, Transcriber, model_files, to_pcm16
from sonalign.encoders._common import as_mono_float32, batch_slices, finish, sha256_file
from sonalign.encoders.base import get_text_encoder, register_audio_encoder

_IMPL_VERSION = 1

__all__ = ["PocketsphinxASR", "model_files", "to_pcm16"]


@register_audio_encoder("pocketsphinx", "pocketsphinx English ASR -> minilm-l6 transcript embedding (16 kHz, 384-d; cascade baseline)")
class PocketsphinxASR:
    """Speech -> pocketsphinx transcript -> minilm-l6. The decoder loads on first use."""

    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE

    def __init__(self, text_encoder: str = "minilm-l6", fast: bool = False):
        self.text_encoder_name = text_encoder
        self.fast = bool(fast)
        self._transcriber = Transcriber(fast=self.fast)

    @property
    def dim(self) -> int:
        """The text encoder's dimension (384 for minilm-l6)."""
        return int(self.text_encoder.dim)

    @property
    def text_encoder(self):
        return get_text_encoder(self.text_encoder_name)

    def settings(self) -> dict[str, Any]:
        files = model_files()
        hmm_files = sorted(p for p in files["hmm"].iterdir() if p.is_file())
        return {
            "name": self.name,
            "impl_version": _IMPL_VERSION,
            "sample_rate": SAMPLE_RATE,
            "asr": "pocketsphinx-en-us-default",
            "acoustic_sha256": {p.name: sha256_file(p) for p in hmm_files},
            "lm_sha256": sha256_file(files["lm"]),
            "dict_sha256": sha256_file(files["dict"]),
            "text_encoder": self.text_encoder.settings(),
            "empty_transcript": "embed-empty-string",
            "fast": FAST_OPTIONS if self.fast else None,
            "dim": self.dim,
        }

    def transcribe(self, wave16k: np.ndarray) -> str:
        """Transcript (lower-case words, or ``""``) of one mono 16 kHz float wave."""
        return self._transcriber.transcribe(as_mono_float32(wave16k, 0))

    def encode(self, waves: list[np.ndarray], *, batch_size: int = 16, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False) -> dict[str, Any]:
        """Transcribe each wave (16 kHz mono), embed the transcripts; adds ``"transcripts"``."""
        waves = [as_mono_float32(w, i) for i, w in enumerate(waves)]
        transcripts: list[str] = []
        for sl in batch_slices(len(waves), 1, show_progress_bar, desc="pocketsphinx"):
            transcripts.append(self.transcribe(waves[sl][0]))
        if not transcripts:
            empty = {"embedding": torch.zeros(0, self.dim), "frames": torch.zeros(0, 0, self.dim), "frames_mask": torch.zeros(0, 0, dtype=torch.bool)}
            return {**finish(empty, convert_to_numpy), "transcripts": []}
        text = self.text_encoder.encode(transcripts, batch_size=batch_size, convert_to_numpy=convert_to_numpy, normalize_embeddings=normalize_embeddings)
        return {"embedding": text["embedding"], "frames": text["tokens"], "frames_mask": text["tokens_mask"], "transcripts": transcripts}
