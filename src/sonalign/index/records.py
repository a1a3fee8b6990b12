"""What an upsert brings to the store, checked: the recording, its segments and their vectors."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonalign.index.validation import check_vectors, normalize
from sonalign.segments import Segment

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass
class RecordingInfo:
    """What the store keeps about one audio file. ``id`` defaults to the segments' ``recording_id``."""

    path: str
    content_hash: str
    duration: float | None = None
    sample_rate: int | None = None
    id: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, obj: Any) -> "RecordingInfo":
        """Accept a RecordingInfo, a mapping or any object with the same attribute names."""
        if isinstance(obj, RecordingInfo):
            return obj
        get = obj.get if isinstance(obj, Mapping) else (lambda key, default=None: getattr(obj, key, default))
        path = get("path")
        content_hash = get("content_hash")
        if path is None or content_hash is None:
            raise ValueError("recording info needs 'path' and 'content_hash'")
        rid = get("id") or get("recording_id")
        duration = get("duration")
        sample_rate = get("sample_rate")
        return cls(
            path=os.fspath(path),
            content_hash=str(content_hash),
            duration=None if duration is None else float(duration),
            sample_rate=None if sample_rate is None else int(sample_rate),
            id=None if rid is None else str(rid),
            custom=dict(get("custom") or {}),
        )


@dataclass
class Upsert:
    """One recording ready to store: its id, segment rows, normalised vectors and extra vectors
    (``{name: (mask of the segments that have one, their normalised vectors)}``)."""

    info: RecordingInfo
    recording_id: str
    rows: list[tuple[str, str, float, float, str, str | None, dict[str, Any]]]
    vectors: np.ndarray
    extras: dict[str, tuple[np.ndarray, np.ndarray]]


def prepare_upsert(
    rec_info: RecordingInfo | Mapping[str, Any] | Any,
    segments: Sequence[Segment],
    vectors: np.ndarray,
    transcripts: Sequence[str | None] | None,
    extra_vectors: Mapping[str, np.ndarray] | None,
    *,
    dim: int | None,
    extra_dims: Mapping[str, int],
) -> Upsert:
    """Check an upsert against the index's dimensions (``dim``: None while unknown); ValueError naming the file."""
    info = RecordingInfo.coerce(rec_info)
    segments = list(segments)
    n = len(segments)
    vectors = np.asarray(vectors, dtype=np.float32)
    if n == 0 and vectors.size == 0:
        vectors = vectors.reshape(0, dim or 0)
    if vectors.ndim != 2 or vectors.shape[0] != n:
        raise ValueError(f"{info.path}: vectors must have shape ({n}, dim) for {n} segments, got {vectors.shape}")
    if n and dim is not None and vectors.shape[1] != dim:
        raise ValueError(f"{info.path}: vectors are {vectors.shape[1]}-d but the index holds {dim}-d vectors")
    if n:
        check_vectors(vectors, f"{info.path}: vectors", nonzero=True)
    if transcripts is not None and len(transcripts) != n:
        raise ValueError(f"{info.path}: {len(transcripts)} transcripts for {n} segments")
    extras = _check_extras(info.path, extra_vectors or {}, n, extra_dims)
    rid = info.id or (segments[0].recording_id if segments else "rec-" + hashlib.sha1(info.path.encode("utf-8")).hexdigest()[:12])
    rows = []
    for i, seg in enumerate(segments):
        if seg.recording_id != rid:
            raise ValueError(f"{info.path}: segment {seg.id!r} belongs to recording {seg.recording_id!r}, not {rid!r}")
        custom = dict(seg.custom or {})
        if seg.channel:
            custom.setdefault("channel", seg.channel)
        kind = str(custom.get("kind") or "audio")
        text = transcripts[i] if transcripts is not None else seg.text
        rows.append((seg.id, rid, float(seg.start), float(seg.duration), kind, text, custom))
    return Upsert(info, rid, rows, normalize(vectors) if n else vectors, extras)


def _check_extras(where: str, extra_vectors: Mapping[str, np.ndarray], n: int, dims: Mapping[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each extra kind's ``(mask, normalised vectors of the masked rows)``; a row that is all-NaN or
    all-zero means "this segment has none"."""
    out = {}
    for name, arr in extra_vectors.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"{where}: extra vector name {name!r} must match {_NAME_RE.pattern}")
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{where}: extra vectors {name!r} must have shape ({n}, d), got {arr.shape}")
        if name in dims and arr.shape[1] != int(dims[name]):
            raise ValueError(f"{where}: extra vectors {name!r} are {arr.shape[1]}-d, the index holds {dims[name]}-d")
        absent = np.isnan(arr).all(axis=1) | (arr == 0).all(axis=1) if n else np.zeros(0, bool)
        mask = ~absent
        if mask.any():
            check_vectors(arr[mask], f"{where}: extra vectors {name!r}", nonzero=True)
        out[name] = (mask, normalize(arr[mask]) if mask.any() else np.zeros((0, arr.shape[1]), np.float32))
    return out


__all__ = ["RecordingInfo", "Upsert", "prepare_upsert"]
