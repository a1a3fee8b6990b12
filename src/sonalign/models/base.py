"""The contract every alignment model keeps, so the trainer, evaluator and index treat them alike.

A model works on *cached features* of frozen encoders, never on raw audio (CALM's SpecTran is the
exception: it reads ``audio_mel``). A batch is a dict of tensors; a model reads only the keys it
needs and ``required_inputs`` names them so the data loader can skip the rest.

Batch keys (B = batch, all masks are bool with True = valid position):

===================== ============== ===================================================
key                   shape          meaning
===================== ============== ===================================================
audio_embedding       (B, Da)        clip-level pooled frozen-encoder embedding
audio_segments        (B, S, Da)     one pooled embedding per segment/window of the clip
audio_segments_mask   (B, S)
audio_frames          (B, T, Da)     frame sequence (all windows' frames, in time order)
audio_frames_mask     (B, T)
audio_frames_block2   (B, T, D2)     aisfx conv block 2 / 3 outputs on the same frames (max
audio_frames_block3   (B, T, D3)     over the block's time pairs, mean over frequency); mask
                                     ``audio_frames_mask``; cached only with ``with_levels``
audio_mel             (B, T, M)      log-mel frames (CALM/SpecTran only), M mel bins
audio_mel_mask        (B, T)
text_embedding        (B, Dt)        pooled sentence embedding of the caption
text_tokens           (B, L, Dt)     token states of the caption
text_tokens_mask      (B, L)
text_tokens_layer2    (B, L, Dt)     MiniLM hidden states after layer 2 / 4 of 6, same tokens
text_tokens_layer4    (B, L, Dt)     (mask ``text_tokens_mask``); cached only with ``with_levels``
text_segments         (B, S', Dt)    one embedding per sentence of the text
text_segments_mask    (B, S')
labels                (B,)           int class ids (classification sets, CALM emotion head)
groups                (B,)           int: rows with equal ids are positives of each other
                                     (same class or same caption); contrastive losses use it
text_from_label       (B,)           bool: the row's text was rendered from its class label
                                     (a prompt, not a caption or transcript): a classifier
                                     head must never read it, it carries the answer
===================== ============== ===================================================

``encode_audio`` / ``encode_text`` return dicts whose ``"embedding"`` is (B, E), L2-normalised,
usable in a flat vector index. ``similarity(a, t)`` takes two such dicts and returns an (Na, Nt)
score matrix; the default is the cosine matrix, methods with richer matching (HADE's
confidence-weighted factor pairs, MGA-CLAP's frame-level scores) override it. ``forward(batch)``
returns ``{"audio": ..., "text": ..., "loss": scalar, "losses": {name: scalar}}``: ``loss`` is the
sum of ``compute_loss``'s terms; ``losses`` holds those terms plus, under names starting with
``diag_``, the detached values of ``diagnostics()`` (e.g. MGA-CLAP's codebook support size), which
the trainer logs per epoch like the loss terms but which never enter ``loss`` or its gradient.

Models with a classifier head (CALM's emotion head, HILBERT's document classifier) expose
``classify(batch) -> logits`` on audio-only batches and set ``probe_output`` to the encode-output
key the evaluator's linear probe reads (default ``"embedding"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class AlignmentModel(nn.Module):
    """Base class. Subclasses set ``required_inputs`` and implement the two encoders and ``compute_loss``."""

    #: Batch keys this model reads (masks are implied).
    required_inputs: tuple[str, ...] = ("audio_embedding", "text_embedding")
    #: Keys used when present (e.g. ``labels`` for a classifier head).
    optional_inputs: tuple[str, ...] = ()
    #: Prefix of diagnostic entries in ``forward()["losses"]`` (detached, not part of the loss).
    DIAGNOSTIC_PREFIX = "diag_"
    #: ``encode_audio`` output the evaluator's linear probe reads.
    probe_output = "embedding"

    #: The method's whole configuration, declared once: every key it reads with its default. A key
    #: not listed here is a mistake (``ConfigError``); a value of another type than its default's too.
    defaults: dict[str, Any] = {}

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = resolve_config(config.get("method", type(self).__name__), self.defaults, config)

    def encode_audio(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode_text(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def similarity(self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor]) -> torch.Tensor:
        return audio["embedding"] @ text["embedding"].T

    def compute_loss(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Return named loss terms (already weighted); their sum is the training loss."""
        raise NotImplementedError

    def diagnostics(
        self, audio: dict[str, torch.Tensor], text: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Scalars worth logging per epoch that are not loss terms (default: none)."""
        return {}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        audio = self.encode_audio(batch)
        text = self.encode_text(batch)
        losses = self.compute_loss(audio, text, batch)
        total = torch.stack([v for v in losses.values()]).sum()
        with torch.no_grad():
            diagnostics = {f"{self.DIAGNOSTIC_PREFIX}{k}": v.detach().reshape(()).to(total.dtype) for k, v in self.diagnostics(audio, text, batch).items()}
        return {"audio": audio, "text": text, "loss": total, "losses": {**losses, **diagnostics}}


#: Defaults most methods share: the frozen encoders' widths, the joint space, dropout, temperature.
FROZEN_ENCODER_DEFAULTS: dict[str, Any] = {"audio_dim": 512, "text_dim": 384, "embed_dim": 256, "dropout": 0.1, "init_temperature": 0.07}
#: ... and the methods with transformer blocks of their own.
TRANSFORMER_DEFAULTS: dict[str, Any] = {**FROZEN_ENCODER_DEFAULTS, "dim": 256, "num_heads": 4, "ff_mult": 4}

#: Keys a config may hold besides the method's own: its name, what it is, and feature settings.
META_KEYS = frozenset({"method", "name", "description", "features"})


def resolve_config(method: str, defaults: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``config``; a mistyped key or a value of the wrong type raises ConfigError
    naming it (nested dicts such as loss ``weights`` are checked key by key)."""
    from sonalign.errors import ConfigError

    unknown = sorted(set(config) - set(defaults) - META_KEYS)
    if unknown:
        raise ConfigError(f"{method}: unknown config keys {unknown}; known: {sorted(defaults)}")
    out = {**defaults, **{k: v for k, v in config.items() if k in META_KEYS}}
    for key, value in config.items():
        if key in META_KEYS:
            continue
        default = defaults[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{method}: '{key}' must be a mapping, got {value!r}")
            value = resolve_config(f"{method}.{key}", default, value)
        elif not _same_kind(default, value):
            raise ConfigError(f"{method}: '{key}' must be {type(default).__name__} like its default {default!r}, got {value!r}")
        out[key] = value
    return out


def _same_kind(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, list | tuple):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))
