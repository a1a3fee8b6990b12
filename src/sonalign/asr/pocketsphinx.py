"""Pocketsphinx transcription (no torch import, so a worker process starts in a fraction of a second).

Pocketsphinx 5's ``Decoder`` with its shipped US-English models (acoustic model ``en-us``, the
``en-us.lm.bin`` trigram LM and ``cmudict-en-us.dict``), 16 kHz 16-bit PCM, one utterance per
wave (``full_utt=True``).

Determinism: pocketsphinx carries feature-extraction state (live CMN estimate, front-end buffers)
from one utterance into the next, so the same audio can decode differently depending on what came
before. ``Decoder.reinit_feat()`` before every utterance resets it: a transcript depends only on
its own audio. One decoder per :class:`Transcriber`, guarded by a lock (it is not thread-safe).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from sonalign.errors import ConfigError

SAMPLE_RATE = 16000

#: Decoder settings of ``fast=True``: one search pass, narrower beams: faster for somewhat lower
#: word recall (docs/performance.md). Used for indexing.
FAST_OPTIONS = {"fwdflat": False, "bestpath": False, "maxwpf": 5, "maxhmmpf": 3000, "topn": 2}


def model_files() -> dict[str, Path]:
    """Paths of the shipped default model: ``hmm`` (folder), ``lm``, ``dict``."""
    try:
        from pocketsphinx import get_model_path
    except ImportError as exc:
        raise ConfigError("the pocketsphinx encoder needs the 'pocketsphinx' package (>= 5)") from exc
    root = Path(get_model_path()) / "en-us"
    files = {"hmm": root / "en-us", "lm": root / "en-us.lm.bin", "dict": root / "cmudict-en-us.dict"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise ConfigError(f"pocketsphinx model files missing: {', '.join(missing)}")
    return files


def to_pcm16(wave: np.ndarray) -> bytes:
    """float [-1, 1] -> little-endian int16 bytes (clipped, rounded)."""
    return np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class Transcriber:
    """One pocketsphinx decoder (loaded on first use); :meth:`transcribe` one 16 kHz wave."""

    def __init__(self, fast: bool = False):
        self.fast = bool(fast)
        self._decoder = None
        self._lock = threading.Lock()

    def _get_decoder(self):
        if self._decoder is None:
            from pocketsphinx import Decoder

            files = model_files()
            self._decoder = Decoder(hmm=str(files["hmm"]), lm=str(files["lm"]), dict=str(files["dict"]), samprate=SAMPLE_RATE,
                                    loglevel="FATAL", **(FAST_OPTIONS if self.fast else {}))
        return self._decoder

    def transcribe(self, wave16k: np.ndarray) -> str:
        """Transcript (lower-case words, or ``""``) of one mono 16 kHz float wave."""
        wave = np.asarray(wave16k, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            return ""
        with self._lock:
            decoder = self._get_decoder()
            decoder.reinit_feat()  # no state from the previous utterance (see module docstring)
            decoder.start_utt()
            decoder.process_raw(to_pcm16(wave), full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        return " ".join((hyp.hypstr if hyp is not None else "").split())

    def transcribe_many(self, waves: list[np.ndarray]) -> list[str]:
        return [self.transcribe(w) for w in waves]
