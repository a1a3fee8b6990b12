"""Tiny deterministic encoders for tests (no weights), and their registration.

The test session registers them (``conftest.py``); processes a test spawns call
:func:`register_fake_encoders` after ``sys.path.insert(0, TESTS)``.
"""

from __future__ import annotations

import hashlib

import numpy as np


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


def register_fake_encoders() -> None:
    """Make ``fake-audio`` / ``fake-text`` available to ``get_audio_encoder`` / ``get_text_encoder``."""
    from sonalign.encoders import base

    base._AUDIO["fake-audio"] = FakeAudioEncoder
    base._TEXT["fake-text"] = FakeTextEncoder


def as_torchrun_rank(rank: int, world: int, port: int) -> None:
    """Set what torchrun sets for one worker (gloo on loopback only: no dependence on the host name
    resolving), so a spawned test process joins a process group like a torchrun child."""
    import os
    from pathlib import Path

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "SONALIGN_NO_PROGRESS": "1"})
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
