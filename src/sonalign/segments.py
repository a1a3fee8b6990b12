"""The segment record (lhotse's SupervisionSegment shape) and its JSONL manifest.

A segment is a time span of one recording in float seconds. Ids are deterministic:
``{recording_id}-{n:05d}`` in time order, so the same input always gives the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sonalign.errors import ManifestError
from sonalign.utils.atomic import atomic_write_text


@dataclass
class Segment:
    id: str
    recording_id: str
    start: float
    duration: float
    channel: int = 0
    text: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return self.start + self.duration

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["start"] = round(self.start, 6)
        d["duration"] = round(self.duration, 6)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>", line: int | None = None) -> "Segment":
        for key in ("id", "recording_id", "start", "duration"):
            if key not in d:
                raise ManifestError(source, "missing", line=line, field=key)
        try:
            start, duration = float(d["start"]), float(d["duration"])
        except (TypeError, ValueError):
            raise ManifestError(source, "start/duration must be numbers (seconds)", line=line, field="start") from None
        if start < 0 or duration <= 0:
            raise ManifestError(source, f"needs start >= 0 and duration > 0, got {start}, {duration}", line=line, field="duration")
        return cls(
            id=str(d["id"]),
            recording_id=str(d["recording_id"]),
            start=start,
            duration=duration,
            channel=int(d.get("channel", 0) or 0),
            text=d.get("text"),
            custom=dict(d.get("custom") or {}),
        )


def recording_id_for(path: Path, root: Path | None) -> str:
    """Readable, deterministic recording id, unique by construction among the files under ``root``:
    the path below ``root`` with its extension (``x/y.flac``; ``song.wav`` and ``song.flac`` differ).
    Links are not resolved, so files reached through two linked folders keep distinct ids."""
    path = Path(path)
    rel = path.relative_to(root) if root is not None and path.is_relative_to(root) else Path(path.name)
    return rel.as_posix()


def segment_id(recording_id: str, index: int) -> str:
    return f"{recording_id}-{index:05d}"


def write_segments(segments: Iterable[Segment], path: str | Path) -> None:
    """Write a JSONL manifest atomically (a reader never sees half a file)."""
    atomic_write_text(path, "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in segments))


def read_segments(path: str | Path) -> Iterator[Segment]:
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(path, f"not valid JSON ({exc.msg})", line=number) from None
            yield Segment.from_dict(record, source=str(path), line=number)
