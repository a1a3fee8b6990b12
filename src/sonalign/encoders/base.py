"""The encoder protocol and the name registry.

Every encoder is frozen (eval mode, no grad) and deterministic: no random crops, no dropout, so the
same input gives the same vectors twice.

``AudioEncoder.encode(waves)`` takes a list of mono float32 arrays at ``encoder.sample_rate`` and
returns ``{"embedding": (B, D), "frames": (B, T, D), "frames_mask": (B, T) bool}`` as numpy arrays
(``convert_to_numpy=False`` gives torch tensors). ``TextEncoder.encode(texts)`` returns
``{"embedding": (B, D), "tokens": (B, L, D), "tokens_mask": (B, L)}``. Both follow
sentence-transformers' keyword conventions: ``batch_size``, ``show_progress_bar``,
``convert_to_numpy``, ``normalize_embeddings``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sonalign.errors import ConfigError


@runtime_checkable
class AudioEncoder(Protocol):
    name: str
    sample_rate: int
    dim: int

    def encode(self, waves: list[np.ndarray], *, batch_size: int = 16, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False) -> dict[str, Any]: ...

    def settings(self) -> dict[str, Any]:
        """Everything that changes the output (name, weights hash, rates, windows): part of cache keys."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str], *, batch_size: int = 32, show_progress_bar: bool = False, convert_to_numpy: bool = True,
               normalize_embeddings: bool = False) -> dict[str, Any]: ...

    def settings(self) -> dict[str, Any]: ...


_AUDIO: dict[str, Callable[..., AudioEncoder]] = {}
_TEXT: dict[str, Callable[..., TextEncoder]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_audio_encoder(name: str, description: str):
    def deco(factory):
        _AUDIO[name] = factory
        _DESCRIPTIONS[f"audio:{name}"] = description
        return factory

    return deco


def register_text_encoder(name: str, description: str):
    def deco(factory):
        _TEXT[name] = factory
        _DESCRIPTIONS[f"text:{name}"] = description
        return factory

    return deco


def _load_builtins() -> None:
    # Imported lazily so `sonalign --help` does not pay for torch/transformers imports.
    from sonalign.encoders import aisfx_cnn, hf, minilm, pocketsphinx_asr  # noqa: F401


def list_encoders() -> dict[str, str]:
    """``{"audio:NAME" | "text:NAME": description}`` for every registered encoder."""
    _load_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


_CACHE: dict[tuple[str, str], Any] = {}


def get_audio_encoder(name: str, **kwargs: Any) -> AudioEncoder:
    """Look up ``name`` (``aisfx-cnn``, ``pocketsphinx``, ``hf:PATH``); instances are cached per process."""
    return _get("audio", name, _AUDIO, kwargs)


def get_text_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """Look up ``name`` (``minilm-l6``, ``hf:PATH``); instances are cached per process."""
    return _get("text", name, _TEXT, kwargs)


def _get(kind: str, name: str, table: dict, kwargs: dict) -> Any:
    _load_builtins()
    key = (kind, name + repr(sorted(kwargs.items())))
    if key in _CACHE:
        return _CACHE[key]
    if name.startswith("hf:"):
        factory, arg = table["hf"], name[3:]
        encoder = factory(arg, **kwargs)
    elif name in table:
        encoder = table[name](**kwargs)
    else:
        known = sorted(n for n in table if n != "hf") + ["hf:PATH"]
        raise ConfigError(f"unknown {kind} encoder '{name}'; known: {', '.join(known)}")
    _CACHE[key] = encoder
    return encoder
