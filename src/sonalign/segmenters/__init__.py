"""Segmenters: cut a recording into time spans to embed and search, looked up by name.

``get_segmenter("fixed" | "energy" | "speech", **options)`` builds one; ``SEGMENTERS`` maps each
name to its class and ``list_segmenters()`` gives ``{name: description}``. The contract (and the
shared post-processing) is documented in :mod:`sonalign.segmenters.base`.
"""

from __future__ import annotations

from typing import Any

from sonalign.errors import ConfigError
from sonalign.segmenters.base import Segmenter
from sonalign.segmenters.energy import EnergySegmenter
from sonalign.segmenters.fixed import FixedSegmenter
from sonalign.segmenters.postprocess import postprocess_activity
from sonalign.segmenters.speech import SpeechSegmenter

#: name -> class; each class carries ``description`` (torch is imported only when ``speech`` runs).
SEGMENTERS: dict[str, type[Segmenter]] = {
    FixedSegmenter.name: FixedSegmenter,
    EnergySegmenter.name: EnergySegmenter,
    SpeechSegmenter.name: SpeechSegmenter,
}


def list_segmenters() -> dict[str, str]:
    """``{name: description}`` for every registered segmenter."""
    return {name: cls.description for name, cls in SEGMENTERS.items()}


def get_segmenter(name: str, **options: Any) -> Segmenter:
    """Build the segmenter ``name`` with keyword ``options``; ConfigError for an unknown name or option."""
    try:
        cls = SEGMENTERS[name]
    except KeyError:
        raise ConfigError(f"unknown segmenter {name!r}; choose one of: {', '.join(SEGMENTERS)}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"segmenter {name!r}: {exc}".replace("__init__() ", "")) from None


__all__ = ["SEGMENTERS", "EnergySegmenter", "FixedSegmenter", "Segmenter", "SpeechSegmenter", "get_segmenter", "list_segmenters", "postprocess_activity"]
