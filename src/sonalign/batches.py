"""Encoder features -> model batches -> embeddings and scores: the one path every caller takes.

Training, evaluation and the index all turn features into batches (the keys listed in
``sonalign.models.base``) here, so a clip embedded at index time and the same clip scored by
``sonalign evaluate`` go through the same code (a test checks that they are equal).

* Audio items are dicts in the feature cache's per-recording layout (``embedding`` (S, D) per
  segment, ``frames``, ``frames_{level}``, ``mel``...): :func:`audio_batch`;
  :func:`segment_items` splits a recording into one item per segment (how the index embeds).
* Texts come from a text-feature source with ``ensure(texts)`` / ``get(text)`` (the cache's
  :class:`~sonalign.cache.text_store.TextFeatureStore`, on disk or in memory): :func:`text_batch`.
* A :class:`PairedFeatures` holds, for one split, every clip's cached audio features and every text
  describing it (captions, transcript, or a label rendered with a prompt template). Training draws
  one (clip, text) pair per item (:func:`make_batch`); evaluation encodes clips and texts
  separately (:func:`encode_audio_items`, :func:`encode_texts`, :func:`score_matrix`) and keeps
  the ``text_to_clip`` map for the several-captions-per-clip protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sonalign.cache.features import FeatureCache
from sonalign.data.clips import Clip
from sonalign.data.prompts import render

#: Caps that keep memory bounded on long recordings (frames beyond are dropped, deterministically).
MAX_FRAMES = 512
MAX_SEGMENTS = 256
MAX_MEL_FRAMES = 1024
MAX_TOKENS = 64

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE.split(text.strip()) if p.strip()]
    return parts or [text.strip() or text]


@dataclass
class PairedFeatures:
    clips: list[Clip]
    audio: list[dict[str, np.ndarray]]
    texts: list[str]
    text_to_clip: np.ndarray
    labels: np.ndarray | None = None
    label_names: list[str] = field(default_factory=list)
    template: str | None = None
    #: per text row: pairs with the same id are positives of each other (same label, else same text)
    groups: np.ndarray | None = None
    #: per text row: True when the text was rendered from the clip's label with the template
    text_from_label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)


def clip_texts(clip: Clip, template: str | None) -> list[str]:
    if clip.texts:
        return clip.texts
    if clip.label is not None and template:
        return [render(template, clip.label)]
    return []


def build_paired(cache: FeatureCache, clips: list[Clip], template: str | None, label_names: list[str] | None = None) -> PairedFeatures:
    """Load cached audio features for ``clips`` and make sure every text (and sentence) is cached."""
    texts, owner, kept, audio, from_label = [], [], [], [], []
    for clip in clips:
        h = cache.memo.hash(clip.audio)
        if not cache.has_audio(h):
            continue  # failed extraction: reported by `features`
        ctexts = clip_texts(clip, template)
        if not ctexts:
            continue
        audio.append(cache.load_audio_features(h))
        for t in ctexts:
            texts.append(t)
            owner.append(len(kept))
            from_label.append(not clip.texts)
        kept.append(clip)
    sentences = sorted({s for t in texts for s in split_sentences(t)})
    cache.text_store.ensure(sorted(set(texts)) + sentences)
    labels = None
    if label_names is None and all(c.label is not None for c in kept):
        label_names = sorted({c.label for c in kept}, key=_label_key)
    if label_names:
        index = {name: i for i, name in enumerate(label_names)}
        labels = np.array([index.get(c.label, -1) for c in kept], dtype=np.int64)
    return PairedFeatures(kept, audio, texts, np.array(owner, dtype=np.int64), labels, list(label_names or []), template, positive_groups(kept, texts, owner),
                          np.array(from_label, dtype=bool))


def positive_groups(clips: list[Clip], texts: list[str], owner: list[int]) -> np.ndarray:
    """One id per text row: rows of clips with the same label, or with the same caption text, share
    an id (both describe each other's clips equally well)."""
    ids: dict[tuple[str, str], int] = {}
    keys = [("label", clips[o].label) if clips[o].label is not None else ("text", t) for t, o in zip(texts, owner)]
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def _label_key(name: str):
    return (0, int(name)) if str(name).isdigit() else (1, str(name))


def _pad(seqs: list[np.ndarray], cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = [s[:cap] for s in seqs]
    length = max(1, max(s.shape[0] for s in seqs))
    dim = seqs[0].shape[1]
    out = np.zeros((len(seqs), length, dim), dtype=np.float32)
    mask = np.zeros((len(seqs), length), dtype=bool)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
        mask[i, : s.shape[0]] = True
    return torch.from_numpy(out), torch.from_numpy(mask)


def audio_batch(items: list[dict[str, np.ndarray]], keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Collate cached audio features; ``keys`` limits work to what a model reads."""
    want = keys or {"audio_embedding", "audio_segments", "audio_frames", "audio_mel"}
    batch: dict[str, torch.Tensor] = {}
    if "audio_embedding" in want:
        batch["audio_embedding"] = torch.from_numpy(np.stack([i["embedding"].mean(0) for i in items]).astype(np.float32))
    if "audio_segments" in want:
        batch["audio_segments"], batch["audio_segments_mask"] = _pad([i["embedding"] for i in items], MAX_SEGMENTS)
    if "audio_frames" in want:
        batch["audio_frames"], batch["audio_frames_mask"] = _pad([i["frames"] for i in items], MAX_FRAMES)
    for key in sorted(k for k in want if k.startswith("audio_frames_")):  # encoder levels on the frame grid
        name = key.removeprefix("audio_")
        if all(name in i for i in items):  # absent: a model that needs them says so (features with_levels)
            batch[key] = _pad([i[name] for i in items], MAX_FRAMES)[0]
    if "audio_mel" in want:
        if any("mel" not in i for i in items):
            raise ValueError("this model reads log-mels: extract features with --with-mel")
        batch["audio_mel"], batch["audio_mel_mask"] = _pad([i["mel"] for i in items], MAX_MEL_FRAMES)
    return batch


def text_batch(source: Any, texts: list[str], keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Collate text features from ``source``: a text store, or anything with one (a :class:`FeatureCache`)."""
    store = getattr(source, "text_store", source)
    want = keys or {"text_embedding", "text_tokens", "text_segments"}
    needed = list(texts) + ([s for t in texts for s in split_sentences(t)] if "text_segments" in want else [])
    store.ensure(needed)
    feats = [store.get(t) for t in texts]
    batch: dict[str, torch.Tensor] = {}
    if "text_embedding" in want:
        batch["text_embedding"] = torch.from_numpy(np.stack([f["embedding"] for f in feats]).astype(np.float32))
    if "text_tokens" in want:
        batch["text_tokens"], batch["text_tokens_mask"] = _pad([f["tokens"] for f in feats], MAX_TOKENS)
    for key in sorted(k for k in want if k.startswith("text_tokens_")):  # encoder levels on the same tokens
        name = key.removeprefix("text_")
        if all(name in f for f in feats):
            batch[key] = _pad([f[name] for f in feats], MAX_TOKENS)[0]
    if "text_segments" in want:
        sents = [np.stack([store.get(s)["embedding"] for s in split_sentences(t)]) for t in texts]
        batch["text_segments"], batch["text_segments_mask"] = _pad(sents, MAX_SEGMENTS)
    return batch


def model_keys(model) -> set[str]:
    return set(getattr(model, "required_inputs", ())) | {"audio_embedding", "text_embedding"}


def make_batch(cache: FeatureCache, data: PairedFeatures, text_indices: np.ndarray, keys: set[str]) -> dict[str, torch.Tensor]:
    """Batch of (clip, text) pairs for the given text rows."""
    clip_rows = data.text_to_clip[text_indices]
    batch = audio_batch([data.audio[i] for i in clip_rows], keys)
    batch.update(text_batch(cache, [data.texts[i] for i in text_indices], keys))
    if data.labels is not None:
        batch["labels"] = torch.from_numpy(data.labels[clip_rows])
    if data.groups is not None:
        batch["groups"] = torch.from_numpy(data.groups[text_indices])
    if data.text_from_label is not None:
        batch["text_from_label"] = torch.from_numpy(data.text_from_label[text_indices])
    return batch


def segment_items(features: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """A recording's features (cache layout) as one audio item per segment: the index embeds each
    segment as a clip of its own."""
    offsets = features["frame_offsets"]
    frame_keys = [k for k in features if k == "frames" or k.startswith("frames_")]
    items = []
    for i, emb in enumerate(features["embedding"]):
        item = {"embedding": emb[None, :], **{k: features[k][offsets[i] : offsets[i + 1]] for k in frame_keys}}
        if "mel" in features:
            item["mel"] = features["mel"][features["mel_offsets"][i] : features["mel_offsets"][i + 1]]
        items.append(item)
    return items


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
def encode_texts(model, source: Any, texts: list[str], batch_size: int = 128) -> dict[str, torch.Tensor]:
    keys = model_keys(model)
    parts = [model.encode_text(text_batch(source, texts[i : i + batch_size], keys)) for i in range(0, len(texts), batch_size)]
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
