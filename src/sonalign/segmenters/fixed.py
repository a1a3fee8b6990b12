"""``fixed``: windows of ``window`` seconds every ``hop`` seconds, blind to the content.

The windows start at ``k * hop``. The last window is cut at the end of the file and kept if it is
at least ``min_duration`` long; a file shorter than one window gives one segment of its whole
length. With ``hop < window`` windows overlap; once a window reaches the end of the file no later
(wholly contained) window is made.

Defaults: 5 s windows, 5 s hop. Five seconds is long enough for an audio encoder to recognise a
sound and short enough to localise a search hit; no overlap keeps each moment in exactly one
segment (the cheapest index). ``min_duration=1.0`` drops a tail too short to embed meaningfully.

The file is streamed at its own rate (no resampling); per 10 ms cell energies are kept so each
segment reports its level: ``custom={"kind": "window", "rms_db": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from sonalign.segmenters.base import (
    DEFAULT_BLOCK_SECONDS,
    FrameEnergies,
    Segmenter,
    check_positive,
    to_db,
)
from sonalign.segmenters.postprocess import frame_range, make_segments
from sonalign.segments import Segment

CELL_SECONDS = 0.010


class FixedSegmenter(Segmenter):
    name = "fixed"
    description = "Fixed windows of `window` s every `hop` s (default 5 s / 5 s); last partial window kept if >= `min_duration`."
    version = 1

    def __init__(self, *, window: float = 5.0, hop: float | None = None, min_duration: float = 1.0, block_seconds: float = DEFAULT_BLOCK_SECONDS):
        self.window = check_positive("window", window)
        self.hop = self.window if hop is None else check_positive("hop", hop)
        self.min_duration = check_positive("min_duration", min_duration, allow_zero=True)
        self.block_seconds = check_positive("block_seconds", block_seconds)

    def settings(self) -> dict[str, Any]:
        return {"segmenter": self.name, "version": self.version, "window": self.window, "hop": self.hop, "min_duration": self.min_duration}

    def spans(self, duration: float, sample_rate: int) -> list[tuple[float, float]]:
        """The window spans for a recording of ``duration`` seconds."""
        tol = 0.5 / sample_rate
        out: list[tuple[float, float]] = []
        k = 0
        while True:
            start = k * self.hop
            if start >= duration - tol:
                break
            end = start + self.window
            if end >= duration - tol:
                if k == 0 or duration - start >= self.min_duration - 1e-9:
                    out.append((start, duration))
                break
            out.append((start, end))
            k += 1
        return out

    def _segment_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int, recording_id: str) -> list[Segment]:
        cell = max(1, int(round(CELL_SECONDS * sample_rate)))
        energies = FrameEnergies(cell, cell)
        for block in blocks:
            energies.push(block)
        ms, total = energies.finish()
        duration = total / sample_rate
        hop_s = cell / sample_rate

        def custom(s: float, e: float) -> dict[str, Any]:
            sl = frame_range(s, e, hop_s, 0.0, ms.size)
            return {"kind": "window", "rms_db": round(float(to_db(ms[sl].mean())), 2)}

        return make_segments(self.spans(duration, sample_rate), recording_id, custom)
