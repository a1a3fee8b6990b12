"""Small end-to-end helpers shared by the CLI verbs (chunking folders, demo)."""

from __future__ import annotations

from pathlib import Path

from sonalign.audio.io import find_audio_files
from sonalign.errors import AudioError
from sonalign.segments import Segment, recording_id_for, write_segments
from sonalign.utils.progress import progress


def chunk_files(
    audio: str | Path, out_path: str | Path, segmenter: str = "energy", options: dict | None = None, *, show_progress: bool = True
) -> tuple[list[Segment], list[tuple[str, str]]]:
    """Segment every audio file under ``audio`` and write one JSONL manifest; returns (segments, failures)."""
    from sonalign.segmenters import get_segmenter

    seg = get_segmenter(segmenter, **(options or {}))
    root = Path(audio)
    files = find_audio_files(root)
    base = root if root.is_dir() else None
    segments: list[Segment] = []
    failures: list[tuple[str, str]] = []
    with progress(len(files), "chunking", disable=not show_progress) as bar:
        for f in files:
            try:
                for s in seg.segment_file(f, recording_id_for(f, base)):
                    s.custom.setdefault("audio", str(f))
                    segments.append(s)
            except AudioError as exc:
                failures.append((str(f), exc.reason))
            bar.update(1)
    write_segments(segments, out_path)
    return segments, failures
