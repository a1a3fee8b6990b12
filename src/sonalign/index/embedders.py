"""What turns audio segments and text queries into vectors of one shared space, for the index.

* :class:`RunEmbedder`: a sonalign run (or the packaged default model): the run's frozen encoders,
  then the trained alignment model's ``encode_audio`` / ``encode_text``.
* :class:`ClapPairEmbedder`: a local Hugging Face CLAP checkpoint (``hf:PATH``), already aligned.

``get_embedder("default" | RUN_DIR | "hf:PATH")`` picks one. Every embedder has ``name``,
``dim``, ``sample_rate``, ``settings()``, ``embed_segments(waves)`` and ``embed_text(texts)``,
returning L2-normalised float32 rows.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonalign.errors import ConfigError

DEFAULT_MODEL = "default"


def default_model_dir() -> Path:
    return Path(str(resources.files("sonalign") / "assets" / "default_model"))


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class RunEmbedder:
    """A trained alignment model on its frozen encoders. Each indexed segment is one 'clip'."""

    def __init__(self, run_dir: str | Path, *, name: str | None = None):
        from sonalign.encoders import get_audio_encoder, get_text_encoder
        from sonalign.models.factory import create_model

        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists() or not (run_dir / "model.safetensors").exists():
            raise ConfigError(f"{run_dir}: not a trained run (needs config.json and model.safetensors)")
        self.run_dir = run_dir
        self.resolved = json.loads((run_dir / "config.json").read_text())
        features = self.resolved.get("data", {}).get("features", {})
        self.audio_encoder = get_audio_encoder(features.get("audio_encoder", "aisfx-cnn"))
        self.text_encoder = get_text_encoder(features.get("text_encoder", "minilm-l6"))
        self.model = create_model(run_dir)
        self.model.eval()
        self.name = name or str(run_dir)
        self.sample_rate = self.audio_encoder.sample_rate
        with torch.inference_mode():
            probe = self.embed_text(["probe"])
        self.dim = int(probe.shape[1])
        self._needs = set(getattr(self.model, "required_inputs", ()))
        if "audio_mel" in self._needs:
            raise ConfigError(f"{run_dir}: models that read log-mels (CALM) are not supported for indexing yet")

    def settings(self) -> dict[str, Any]:
        from sonalign.utils.hashing import file_sha256

        return {"model": self.name, "weights_sha256": file_sha256(self.run_dir / "model.safetensors")[:16],
                "audio_encoder": self.audio_encoder.settings(), "text_encoder": self.text_encoder.settings()}

    @torch.inference_mode()
    def embed_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Vectors for segments given the cache layout (embedding, frames, frame_offsets)."""
        from sonalign.train.data import audio_batch, model_keys

        items = []
        offsets = features["frame_offsets"]
        for i, emb in enumerate(features["embedding"]):
            items.append({"embedding": emb[None, :], "frames": features["frames"][offsets[i] : offsets[i + 1]]})
        out = []
        for start in range(0, len(items), 64):
            batch = audio_batch(items[start : start + 64], model_keys(self.model))
            out.append(self.model.encode_audio(batch)["embedding"].float().numpy())
        return _normalize(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def embed_segments(self, waves: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        enc = self.audio_encoder.encode(waves, batch_size=batch_size)
        mask = np.asarray(enc["frames_mask"], bool)
        frames = [np.asarray(enc["frames"][i][mask[i]], np.float32) for i in range(len(waves))]
        features = {
            "embedding": np.asarray(enc["embedding"], np.float32),
            "frames": np.concatenate(frames),
            "frame_offsets": np.concatenate([[0], np.cumsum([len(f) for f in frames])]).astype(np.int64),
        }
        return self.embed_features(features)

    @torch.inference_mode()
    def embed_text(self, texts: list[str]) -> np.ndarray:
        from sonalign.train.data import MAX_TOKENS, _pad, split_sentences

        enc = self.text_encoder.encode(list(texts))
        mask = np.asarray(enc["tokens_mask"], bool)
        tokens, tmask = _pad([np.asarray(enc["tokens"][i][mask[i]], np.float32) for i in range(len(texts))], MAX_TOKENS)
        batch = {"text_embedding": torch.from_numpy(np.asarray(enc["embedding"], np.float32)), "text_tokens": tokens, "text_tokens_mask": tmask}
        if "text_segments" in getattr(self.model, "required_inputs", ()):
            sents = [split_sentences(t) for t in texts]
            flat = self.text_encoder.encode([s for group in sents for s in group])["embedding"]
            groups, i = [], 0
            for group in sents:
                groups.append(np.asarray(flat[i : i + len(group)], np.float32))
                i += len(group)
            batch["text_segments"], batch["text_segments_mask"] = _pad(groups, 256)
        return _normalize(self.model.encode_text(batch)["embedding"].float().numpy())


class ClapPairEmbedder:
    """A local CLAP checkpoint: both towers already share one space."""

    def __init__(self, path: str):
        from sonalign.encoders.hf import load_clap_pair

        self.pair = load_clap_pair(path)
        self.name = f"hf:{path}" if not str(path).startswith("hf:") else str(path)
        self.sample_rate = self.pair.sample_rate
        self.dim = int(self.pair.dim)

    def settings(self) -> dict[str, Any]:
        return {"model": self.name, **self.pair.settings()}

    def embed_segments(self, waves: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
        return _normalize(self.pair.encode_audio(waves, batch_size=batch_size))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return _normalize(self.pair.encode_text(list(texts)))


_EMBEDDERS: dict[str, Any] = {}


def get_embedder(model: str = DEFAULT_MODEL) -> RunEmbedder | ClapPairEmbedder:
    """``default`` (the packaged model), a run folder, or ``hf:PATH`` (a local CLAP checkpoint)."""
    if model in _EMBEDDERS:
        return _EMBEDDERS[model]
    if model == DEFAULT_MODEL:
        embedder = RunEmbedder(default_model_dir(), name=DEFAULT_MODEL)
    elif model.startswith("hf:"):
        embedder = ClapPairEmbedder(model[3:])
    elif Path(model).is_dir():
        embedder = RunEmbedder(model)
    else:
        raise ConfigError(f"unknown model '{model}': use 'default', a run folder from `sonalign train`, or hf:PATH")
    _EMBEDDERS[model] = embedder
    return embedder
