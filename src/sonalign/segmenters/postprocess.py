"""Shared post-processing (:func:`postprocess_activity`), used by ``energy`` and ``speech``. It takes a
per-frame boolean activity array (frame ``i`` stands for the hop-long cell
``[offset + i*hop, offset + (i+1)*hop)`` around its centre) and, in this order:

1. turns runs of active frames into spans (a run touching the first/last frame is extended to the
   file's start/end);
2. merges neighbouring spans whose gap is shorter than ``merge_gap``;
3. handles spans shorter than ``min_duration``: ``short="drop"`` discards them (default: VAD/energy
   blips), ``short="extend"`` grows them symmetrically to ``min_duration`` (keeps short transients
   such as a knock). Joining a short span to a neighbour is deliberately not offered: after step 2
   every remaining gap is at least ``merge_gap`` long, so joining would put silence in a segment;
4. adds ``padding`` seconds on both sides, clipped to the file; spans that then touch or overlap
   are merged;
5. splits spans longer than ``max_duration`` into ``ceil(length / max_duration)`` near-equal pieces;
   each cut moves to the lowest-score frame (lowest energy / speech probability) within
   ``split_search`` seconds of the ideal cut, but never so far that a piece exceeds ``max_duration``.

So the final segments respect ``max_duration`` exactly (padding included), and are at least
``min_duration`` long except where the file itself is shorter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from sonalign.errors import ConfigError
from sonalign.segments import Segment, segment_id

#: What happens to a span shorter than ``min_duration``.
SHORT_POLICIES = ("drop", "extend")


def hysteresis(scores: np.ndarray, on: float, off: float) -> np.ndarray:
    """Double-threshold activity: runs of ``scores >= off`` that contain at least one ``>= on``.

    Equivalent to a Schmitt trigger (enter at ``on``, leave below ``off``) that also extends each
    run backwards while the score stays above ``off``, so onsets are not clipped by the rise time.
    """
    if off > on:
        raise ValueError(f"off threshold {off} above on threshold {on}")
    scores = np.asarray(scores)
    active = np.zeros(scores.size, dtype=bool)
    if scores.size == 0:
        return active
    starts, ends = runs(scores >= off)
    counts = np.concatenate([[0], np.cumsum(scores >= on)])
    for s, e in zip(starts, ends):
        if counts[e] > counts[s]:
            active[s:e] = True
    return active


def runs(active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) frame indices of the runs of True in a boolean array."""
    a = np.asarray(active, dtype=bool).astype(np.int8)
    d = np.diff(np.concatenate([[0], a, [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def postprocess_activity(
    active: np.ndarray,
    *,
    frame_hop: float,
    total_duration: float,
    frame_offset: float = 0.0,
    merge_gap: float = 0.0,
    min_duration: float = 0.0,
    max_duration: float | None = None,
    padding: float = 0.0,
    short: str = "drop",
    scores: np.ndarray | None = None,
    split_search: float = 1.0,
) -> list[tuple[float, float]]:
    """Per-frame activity -> sorted, non-overlapping ``(start, end)`` spans in seconds.

    See the module docstring for the steps. ``scores`` (one per frame, lower = better place to
    cut) guides where long spans are split; without it cuts fall at the exact near-equal points.
    """
    if short not in SHORT_POLICIES:
        raise ConfigError(f"short must be one of {SHORT_POLICIES}, got {short!r}")
    active = np.asarray(active, dtype=bool)
    n = active.size
    total = float(total_duration)
    starts, ends = runs(active)
    spans: list[list[float]] = []
    for a, b in zip(starts, ends):
        s = 0.0 if a == 0 else frame_offset + a * frame_hop
        e = total if b == n else frame_offset + b * frame_hop
        s, e = max(0.0, s), min(total, e)
        if e > s:
            spans.append([s, e])

    # 2. merge short gaps
    merged: list[list[float]] = []
    for s, e in spans:
        if merged and s - merged[-1][1] < merge_gap:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])

    # 3. short spans
    kept: list[list[float]] = []
    for s, e in merged:
        if e - s >= min_duration:
            kept.append([s, e])
        elif short == "extend":
            grow = (min_duration - (e - s)) / 2.0
            s, e = s - grow, e + grow
            if s < 0.0:
                s, e = 0.0, min(total, e - s)
            if e > total:
                s, e = max(0.0, s - (e - total)), total
            kept.append([s, e])

    # 4. padding, then merge what touches
    padded: list[list[float]] = []
    for s, e in kept:
        s, e = max(0.0, s - padding), min(total, e + padding)
        if padded and s <= padded[-1][1]:
            padded[-1][1] = max(padded[-1][1], e)
        else:
            padded.append([s, e])

    # 5. split long spans
    out: list[tuple[float, float]] = []
    for s, e in padded:
        if max_duration is None or e - s <= max_duration:
            out.append((s, e))
            continue
        out.extend(split_span(s, e, max_duration, scores=scores, frame_hop=frame_hop, frame_offset=frame_offset, search=split_search))
    return out


def split_span(
    start: float,
    end: float,
    max_duration: float,
    *,
    scores: np.ndarray | None = None,
    frame_hop: float = 0.01,
    frame_offset: float = 0.0,
    search: float = 1.0,
) -> list[tuple[float, float]]:
    """Split ``[start, end]`` into ``ceil(length / max_duration)`` near-equal pieces, each at most
    ``max_duration``; cuts move to the lowest-score frame centre within ``search`` seconds when
    the slack allows it (ties: nearest to the ideal cut, then earliest)."""
    length = end - start
    count = max(1, math.ceil(length / max_duration - 1e-9))
    piece = length / count
    # Moving each cut by at most half the slack keeps every piece <= max_duration.
    radius = max(0.0, min(search, (max_duration - piece) / 2.0 - 1e-9))
    cuts = [start]
    for k in range(1, count):
        ideal = start + k * piece
        cut = ideal
        if scores is not None and radius >= frame_hop:
            lo = math.ceil((ideal - radius - frame_offset) / frame_hop - 0.5)
            hi = math.floor((ideal + radius - frame_offset) / frame_hop - 0.5)
            lo, hi = max(lo, 0), min(hi, len(scores) - 1)
            if hi >= lo:
                idx = np.arange(lo, hi + 1)
                centres = frame_offset + (idx + 0.5) * frame_hop
                vals = np.asarray(scores, dtype=np.float64)[lo : hi + 1]
                order = np.lexsort((idx, np.abs(centres - ideal), vals))
                cut = float(centres[order[0]])
        cuts.append(cut)
    cuts.append(end)
    return [(cuts[i], cuts[i + 1]) for i in range(count)]


def frame_range(start: float, end: float, frame_hop: float, frame_offset: float, n_frames: int) -> slice:
    """Frames whose centres lie in ``[start, end)`` (at least the nearest one)."""
    lo = max(0, math.ceil((start - frame_offset) / frame_hop - 0.5))
    hi = min(n_frames, math.ceil((end - frame_offset) / frame_hop - 0.5))
    if hi <= lo:
        mid = (start + end) / 2.0
        lo = min(max(0, math.floor((mid - frame_offset) / frame_hop)), max(0, n_frames - 1))
        hi = min(n_frames, lo + 1)
    return slice(lo, hi)


def make_segments(
    spans: Iterable[tuple[float, float]],
    recording_id: str,
    custom: Callable[[float, float], dict[str, Any]] | None = None,
) -> list[Segment]:
    """Spans (sorted) -> Segments with ids ``{recording_id}-{n:05d}`` from 0, times rounded to 1 us."""
    out: list[Segment] = []
    for s, e in spans:
        start = round(float(s), 6)
        duration = round(float(e) - start, 6)
        if duration <= 0:
            continue
        extra = custom(s, e) if custom is not None else {}
        out.append(Segment(id=segment_id(recording_id, len(out)), recording_id=recording_id, start=start, duration=duration, channel=0, custom=extra))
    return out


# --------------------------------------------------------------------------------------------
# Option validation helpers
# --------------------------------------------------------------------------------------------


__all__ = ["frame_range", "hysteresis", "make_segments", "postprocess_activity", "runs", "split_span"]
