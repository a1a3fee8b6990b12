"""``energy``: silence-aware chunking for general audio (a Robust-ATR style front end).

1. While streaming the file at its own rate, the RMS level of 25 ms frames every 10 ms is
   computed (frame mean removed, so a DC offset does not count as sound) and only those levels are
   kept (8 bytes per 10 ms: 5.8 MB for 2 hours).
2. The threshold adapts to the recording. With ``p = floor_percentile`` (default 5):

       floor  = p-th percentile of the frame levels that are not digital silence (> -100 dBFS),
                or -120 dBFS if at least p % of all frames are digital silence
       spread = floor - (p/10-th percentile)          (width of the noise's lower tail, dB)
       margin = min(max_margin_db, max(margin_db, spread_factor * spread))
       on     = max(min_level_db, floor + margin)
       off    = on - hysteresis_db

   (defaults: margin_db 4, spread_factor 8, max_margin_db 20, hysteresis_db 2, min_level_db
   -60 dBFS). A frame run is an event when it stays above ``off`` and reaches ``on`` somewhere
   (double threshold: the run extends backwards and forwards while above ``off``).
   Why these numbers: a steady noise floor measured with 25 ms frames fluctuates by well under
   0.5 dB (white noise: ~0.3 dB at 16 kHz) and its 5th percentile sits ~0.3-0.7 dB below its
   mean, so ``on`` is ~3.5 dB and ``off`` ~1.5 dB above the noise's mean level: stationary noise
   does not trigger, while an event at 5 dB SNR raises the frame level by ~6.2 dB (10 dB SNR:
   ~10.4 dB) and is found with its edges within about a frame (tests: +-50 ms at 5-15 dB SNR).
   The spread term matters for fluctuating noise (rumble, wind, traffic): its frame levels swing
   upwards by ~4-10 times its lower-tail width (measured on white/pink/brown noise), so the
   margin grows to stay above the swings (white: spread ~0.3 dB -> margin 4 dB; pink: ~0.6 dB
   -> ~5 dB; brown: ~2.5 dB -> 20 dB); the cap keeps events 20 dB above the floor detectable
   whatever the tail looks like. Short swings that still cross are removed by ``min_duration``.
   The absolute floor keeps clean recordings (digital silence or faint dither between sounds)
   from triggering on the dither.
   Limitation: the floor estimate needs some background: at least ``floor_percentile`` % of the
   recording must be free of events (6 minutes of a 2-hour file). A recording that is one
   continuous sound yields only its loudest parts; use ``fixed`` for such material.
3. The shared post-processing (see ``base``): merge gaps < ``merge_gap`` (0.3 s: the decay and
   pauses inside one sound event), drop runs < ``min_duration`` (0.1 s: clicks and glitches), pad
   by ``padding`` (0.1 s: attack and decay tails below the threshold), split runs longer than
   ``max_duration`` (10 s: the longest window common audio encoders take, e.g. CLAP) at the
   quietest frame within ``split_search`` (1 s) of each near-equal cut.

``custom={"kind": "sound", "rms_db": level of the segment, "snr_db": level minus noise floor}``.
Deterministic: plain numpy on the decoded samples, no randomness.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from sonalign.errors import ConfigError
from sonalign.segmenters.base import (
    DEFAULT_BLOCK_SECONDS,
    SILENCE_DB,
    FrameEnergies,
    Segmenter,
    check_positive,
    to_db,
)
from sonalign.segmenters.postprocess import (
    frame_range,
    hysteresis,
    make_segments,
)
from sonalign.segments import Segment

#: Frames below this level are digital silence and are left out of the noise-floor estimate.
DIGITAL_SILENCE_DB = -100.0


class EnergySegmenter(Segmenter):
    name = "energy"
    description = (
        "Sound events by frame RMS (25 ms / 10 ms) against an adaptive threshold (noise-floor percentile + margin, "
        "hysteresis); merges short gaps, drops blips, pads, splits runs longer than max_duration (default 10 s)."
    )
    version = 1

    def __init__(
        self,
        *,
        frame_length: float = 0.025,
        frame_hop: float = 0.010,
        floor_percentile: float = 5.0,
        margin_db: float = 4.0,
        spread_factor: float = 8.0,
        max_margin_db: float = 20.0,
        hysteresis_db: float = 2.0,
        min_level_db: float = -60.0,
        merge_gap: float = 0.3, min_duration: float = 0.1, max_duration: float | None = 10.0,
        padding: float = 0.1, short: str = "drop", split_search: float = 1.0,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
    ):
        self.frame_length = check_positive("frame_length", frame_length)
        self.frame_hop = check_positive("frame_hop", frame_hop)
        if self.frame_hop > self.frame_length:
            raise ConfigError(f"frame_hop ({frame_hop}) must not exceed frame_length ({frame_length})")
        self.floor_percentile = check_positive("floor_percentile", floor_percentile, allow_zero=True)
        if self.floor_percentile > 100:
            raise ConfigError(f"floor_percentile must be in [0, 100], got {floor_percentile}")
        self.margin_db = check_positive("margin_db", margin_db, allow_zero=True)
        self.spread_factor = check_positive("spread_factor", spread_factor, allow_zero=True)
        self.max_margin_db = check_positive("max_margin_db", max_margin_db, allow_zero=True)
        if self.max_margin_db < self.margin_db:
            raise ConfigError(f"max_margin_db ({max_margin_db}) must be at least margin_db ({margin_db})")
        self.hysteresis_db = check_positive("hysteresis_db", hysteresis_db, allow_zero=True)
        try:
            self.min_level_db = float(min_level_db)
        except (TypeError, ValueError):
            raise ConfigError(f"min_level_db must be a number, got {min_level_db!r}") from None
        self.set_activity_options(merge_gap, min_duration, max_duration, padding, short, split_search)
        self.block_seconds = check_positive("block_seconds", block_seconds)

    def settings(self) -> dict[str, Any]:
        return {
            "segmenter": self.name,
            "version": self.version,
            "frame_length": self.frame_length,
            "frame_hop": self.frame_hop,
            "floor_percentile": self.floor_percentile,
            "margin_db": self.margin_db,
            "spread_factor": self.spread_factor,
            "max_margin_db": self.max_margin_db,
            "hysteresis_db": self.hysteresis_db,
            "min_level_db": self.min_level_db,
            **self.activity_options(),
        }

    def thresholds(self, levels_db: np.ndarray) -> tuple[float, float, float]:
        """(noise floor, on, off) in dBFS for a recording's frame levels (see the module docstring)."""
        levels_db = np.asarray(levels_db, dtype=np.float64)
        usable = levels_db[levels_db > DIGITAL_SILENCE_DB]
        if not usable.size or 100.0 * (levels_db.size - usable.size) >= self.floor_percentile * levels_db.size:
            floor, spread = SILENCE_DB, 0.0
        else:
            floor, low = (float(v) for v in np.percentile(usable, [self.floor_percentile, self.floor_percentile / 10.0]))
            spread = floor - low
        margin = min(self.max_margin_db, max(self.margin_db, self.spread_factor * spread))
        on = max(self.min_level_db, floor + margin)
        return floor, on, on - self.hysteresis_db

    def _segment_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int, recording_id: str) -> list[Segment]:
        hop = max(1, int(round(self.frame_hop * sample_rate)))
        length = max(hop, int(round(self.frame_length * sample_rate)))
        energies = FrameEnergies(length, hop)
        for block in blocks:
            energies.push(block)
        ms, total = energies.finish()
        if total == 0:
            return []
        levels = to_db(ms)
        floor, on, off = self.thresholds(levels)
        active = hysteresis(levels, on, off)
        hop_s = hop / sample_rate
        offset = (length - hop) / 2.0 / sample_rate
        spans = self.activity_spans(active, frame_hop=hop_s, frame_offset=offset, total_duration=total / sample_rate, scores=levels)

        def custom(s: float, e: float) -> dict[str, Any]:
            level = float(to_db(ms[frame_range(s, e, hop_s, offset, ms.size)].mean()))
            return {"kind": "sound", "rms_db": round(level, 2), "snr_db": round(level - floor, 2)}

        return make_segments(spans, recording_id, custom)
