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


class RunEmbedder:
    """A trained alignment model on its frozen encoders. Each indexed segment is one 'clip'.

    Features are made and batched by the same code as the feature cache and the evaluator
    (:func:`sonalign.cache.features.encode_segments`, :mod:`sonalign.batches`, an in-memory
    text store), so a segment's vector equals what ``sonalign evaluate`` scores for that audio.
    """

    def __init__(self, run_dir: str | Path, *, name: str | None = None):
        from sonalign.cache.features import FeatureSettings, encoder_levels
        from sonalign.cache.text_store import TextFeatureStore
        from sonalign.encoders import get_audio_encoder, get_text_encoder
        from sonalign.models.factory import create_model

        run_dir = Path(run_dir)
        if not (run_dir / "config.json").exists() or not (run_dir / "model.safetensors").exists():
            raise ConfigError(f"{run_dir}: not a trained run (needs config.json and model.safetensors)")
        self.run_dir = run_dir
        self.resolved = json.loads((run_dir / "config.json").read_text())
        self.features = FeatureSettings(**self.resolved.get("data", {}).get("features", {}))
        self.audio_encoder = get_audio_encoder(self.features.audio_encoder)
        self.text_encoder = get_text_encoder(self.features.text_encoder)
        self.audio_levels, text_levels = encoder_levels(self.features, self.audio_encoder, self.text_encoder)
        self.texts = TextFeatureStore(None, self.text_encoder, text_levels)
        self.model = create_model(run_dir)
        self.model.eval()
        self.name = name or str(run_dir)
        self.sample_rate = self.audio_encoder.sample_rate
        self.dim = int(self.embed_text(["probe"]).shape[1])

    def settings(self) -> dict[str, Any]:
        from sonalign.utils.hashing import file_sha256

        return {"model": self.name, "weights_sha256": file_sha256(self.run_dir / "model.safetensors", across_processes=True)[:16],
                "audio_encoder": self.audio_encoder.settings(), "text_encoder": self.text_encoder.settings()}

    def embed_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Vectors for a recording's segments given its features in the cache layout."""
        from sonalign.batches import encode_audio_items, segment_items

        items = segment_items(features)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        return _as_rows(encode_audio_items(self.model, items)["embedding"])

    def embed_segments(self, waves: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        from sonalign.cache.features import encode_segments

        return self.embed_features(encode_segments(self.audio_encoder, waves, len(waves), levels=self.audio_levels,
                                                   with_mel=self.features.with_mel, batch_size=batch_size))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        from sonalign.batches import encode_texts

        return _as_rows(encode_texts(self.model, self.texts, list(texts))["embedding"])


def _as_rows(embedding: torch.Tensor) -> np.ndarray:
    """L2-normalised float32 rows (the vector index's contract), with the library's one normalise."""
    from sonalign.utils.vectors import normalize

    return normalize(embedding.float().numpy())


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
        from sonalign.utils.vectors import normalize

        return normalize(self.pair.encode_audio(waves, batch_size=batch_size))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        from sonalign.utils.vectors import normalize

        return normalize(self.pair.encode_text(list(texts)))


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
