"""From a feature-cache view to model batches (the keys listed in ``sonalign.models.base``).

A :class:`PairedFeatures` holds, for one split, every clip's cached audio features and every text
describing it (captions, transcript, or a label rendered with a prompt template). Training draws
one (clip, text) pair per item; evaluation encodes clips and texts separately and keeps the
``text_to_clip`` map for the several-captions-per-clip protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from sonalign.cache.features import FeatureCache
from sonalign.data.clips import Clip
from sonalign.train.prompts import render

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


def text_batch(cache: FeatureCache, texts: list[str], keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    want = keys or {"text_embedding", "text_tokens", "text_segments"}
    needed = list(texts) + ([s for t in texts for s in split_sentences(t)] if "text_segments" in want else [])
    cache.text_store.ensure(needed)
    feats = [cache.text_store.get(t) for t in texts]
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
        sents = [np.stack([cache.text_store.get(s)["embedding"] for s in split_sentences(t)]) for t in texts]
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
