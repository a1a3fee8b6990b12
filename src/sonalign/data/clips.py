"""The clip record every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Clip:
    """One audio file (or a span of one) with whatever labels/text its source gives.

    ``captions`` holds every caption (Clotho: 5); ``text`` a transcript (spoken content);
    ``label`` a class name. ``start``/``duration`` select a span (AudioCaps' 10 s clips).
    ``license`` (an SPDX-like expression, see :mod:`sonalign.data.licences`) and ``source`` say
    where the recording comes from and on which terms.
    """

    id: str
    audio: str
    split: str | None = None
    label: str | None = None
    captions: list[str] = field(default_factory=list)
    text: str | None = None
    speaker: str | None = None
    duration: float | None = None
    sample_rate: int | None = None
    start: float = 0.0
    license: str | None = None
    source: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        """The texts that describe this clip, for retrieval: captions, else the transcript."""
        if self.captions:
            return list(self.captions)
        return [self.text] if self.text else []
