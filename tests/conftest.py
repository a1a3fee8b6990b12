"""Shared fixtures: generated audio, fake (tiny, deterministic) encoders, and the shared real data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("SONALIGN_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that use it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def tone(freq: float, seconds: float, sr: int = 16000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def make_wav(tmp_path):
    """make_wav(name, wave, sr=16000) -> path of a written file (format from the suffix)."""

    def _make(name: str, wave: np.ndarray, sr: int = 16000) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, sr)
        return path

    return _make


class FakeAudioEncoder:
    """16-d band energies per 0.25 s frame; deterministic and instant."""

    name = "fake-audio"
    sample_rate = 8000
    dim = 16
    frame_hop_seconds = 0.25

    def settings(self):
        return {"name": self.name, "dim": self.dim}

    def encode(self, waves, *, batch_size=16, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False):
        hop = int(self.sample_rate * self.frame_hop_seconds)
        frames = []
        for w in waves:
            n = max(1, len(w) // hop)
            chunks = np.array_split(np.asarray(w, np.float32)[: n * hop] if len(w) >= hop else np.pad(w, (0, hop - len(w))), n)
            feats = []
            for c in chunks:
                spec = np.abs(np.fft.rfft(c, n=256))[:128].reshape(16, 8).mean(1)
                feats.append(np.log1p(spec * 10))
            frames.append(np.stack(feats).astype(np.float32))
        length = max(f.shape[0] for f in frames)
        out = np.zeros((len(frames), length, self.dim), np.float32)
        mask = np.zeros((len(frames), length), bool)
        for i, f in enumerate(frames):
            out[i, : len(f)] = f
            mask[i, : len(f)] = True
        emb = np.stack([f.mean(0) for f in frames])
        return {"embedding": emb, "frames": out, "frames_mask": mask}


class FakeTextEncoder:
    """16-d hashed bag of words; deterministic and instant."""

    name = "fake-text"
    dim = 16

    def settings(self):
        return {"name": self.name, "dim": self.dim}

    def _word(self, word: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, texts, *, batch_size=32, show_progress_bar=False, convert_to_numpy=True, normalize_embeddings=False):
        toks = [[self._word(w) for w in (t.split() or [""])] for t in texts]
        length = max(len(t) for t in toks)
        out = np.zeros((len(texts), length, self.dim), np.float32)
        mask = np.zeros((len(texts), length), bool)
        for i, t in enumerate(toks):
            out[i, : len(t)] = np.stack(t)
            mask[i, : len(t)] = True
        emb = np.stack([np.stack(t).mean(0) for t in toks])
        return {"embedding": emb, "tokens": out, "tokens_mask": mask}


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """sonalign's default cache folder ($SONALIGN_CACHE) in a temporary folder, not the user's home."""
    os.environ["SONALIGN_CACHE"] = str(tmp_path_factory.mktemp("sonalign-cache"))
    yield Path(os.environ["SONALIGN_CACHE"])


@pytest.fixture(scope="session", autouse=True)
def fake_encoders():
    """Register ``fake-audio`` / ``fake-text`` so pipeline tests need no model weights."""
    from sonalign.encoders import base

    base._AUDIO["fake-audio"] = FakeAudioEncoder
    base._TEXT["fake-text"] = FakeTextEncoder
    yield
