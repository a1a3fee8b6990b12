"""Encode a split's clips and texts with a model, and score them (shared by trainer, evaluator, index)."""

from __future__ import annotations

import numpy as np
import torch

from sonalign.cache.features import FeatureCache
from sonalign.train.data import PairedFeatures, audio_batch, model_keys, text_batch


def _concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate encode outputs along the batch; sequence outputs are padded to a common length."""
    out: dict[str, torch.Tensor] = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        if values[0].dim() >= 2 and len({v.shape[1] for v in values}) > 1:
            length = max(v.shape[1] for v in values)
            values = [torch.nn.functional.pad(v, [0, 0] * (v.dim() - 2) + [0, length - v.shape[1]]) for v in values]
        out[key] = torch.cat(values)
    return out


@torch.inference_mode()
def encode_audio_items(model, items: list[dict[str, np.ndarray]], batch_size: int = 64) -> dict[str, torch.Tensor]:
    keys = model_keys(model)
    parts = [model.encode_audio(audio_batch(items[i : i + batch_size], keys)) for i in range(0, len(items), batch_size)]
    return _concat(parts)


@torch.inference_mode()
def encode_texts(model, cache: FeatureCache, texts: list[str], batch_size: int = 128) -> dict[str, torch.Tensor]:
    keys = model_keys(model)
    parts = [model.encode_text(text_batch(cache, texts[i : i + batch_size], keys)) for i in range(0, len(texts), batch_size)]
    return _concat(parts)


def _rows(d: dict[str, torch.Tensor], lo: int, hi: int) -> dict[str, torch.Tensor]:
    return {k: v[lo:hi] for k, v in d.items()}


@torch.inference_mode()
def score_matrix(model, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], chunk: int = 512) -> np.ndarray:
    """(n_audio, n_text) similarities via ``model.similarity``, in row chunks to bound memory."""
    n = audio["embedding"].shape[0]
    rows = [model.similarity(_rows(audio, i, i + chunk), text) for i in range(0, n, chunk)]
    return torch.cat(rows).float().numpy()


def split_scores(model, cache: FeatureCache, data: PairedFeatures) -> np.ndarray:
    model.eval()
    audio = encode_audio_items(model, data.audio)
    text = encode_texts(model, cache, data.texts)
    return score_matrix(model, audio, text)
