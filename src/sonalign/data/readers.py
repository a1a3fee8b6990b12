"""Readers for the dataset layouts users bring.

* JSONL manifests as in ``../shared/data`` (``id``, ``audio`` relative to the manifest's folder,
  ``duration``, ``sample_rate``, ``split``, optional ``label``/``text``/``captions``/``speaker``).
* Clotho captions CSVs (``file_name, caption_1..caption_5``); audio beside the CSV in a folder
  named after the split (``evaluation/``, ``development/``, ``validation/``) or given explicitly.
* AudioCaps CSVs (``audiocap_id, youtube_id, start_time, caption``); audio files named
  ``{youtube_id}.wav`` or ``{youtube_id}_{start_time}.wav`` (common download layouts), captions
  of the same clip grouped.
* A folder per class (``root/CLASS/*.wav``) or a plain folder of audio.

``load_clips(source, split=None)`` detects the layout; rows that cannot be used are skipped and
reported in the result's ``problems`` (``strict=True`` raises instead).
"""

from __future__ import annotations

import csv
import json
from collections import OrderedDict
from pathlib import Path

from sonalign.audio.io import AUDIO_EXTENSIONS, find_audio_files
from sonalign.data.clips import Clip
from sonalign.errors import ManifestError
from sonalign.segments import recording_id_for

CLOTHO_SPLITS = {"evaluation": "test", "development": "train", "validation": "val"}


class ClipList(list):
    """The clips read from a source (a plain list) and ``problems``: the rows that were skipped,
    each a :class:`ManifestError` naming the file, line and field."""

    def __init__(self, clips=(), problems: list[ManifestError] | None = None):
        super().__init__(clips)
        self.problems: list[ManifestError] = list(problems or [])


def problem_report(clips) -> list[tuple[str, str]]:
    """``(file:line, what is wrong)`` for each row :func:`load_clips` skipped, for a batch job's report."""
    out = []
    for problem in getattr(clips, "problems", []):
        where = problem.path + (f":{problem.line}" if problem.line is not None else "")
        out.append((where, str(problem)[len(where) :].lstrip(": ").strip()))
    return out


class _Problems:
    """Collects row problems; ``strict`` raises the first one instead."""

    def __init__(self, strict: bool):
        self.strict, self.items = strict, []

    def add(self, error: ManifestError) -> None:
        if self.strict:
            raise error
        self.items.append(error)


def load_clips(source: str | Path, split: str | None = None, *, audio_dir: str | Path | None = None, strict: bool = False) -> ClipList:
    """Read ``source`` (JSONL manifest, Clotho CSV, AudioCaps CSV or folder) into clips, optionally one split.

    A row that cannot be used (bad JSON, a missing or mistyped field, a duplicate id, an empty
    caption list, a bad licence field, an audio file that does not exist) is skipped and listed in
    the result's ``problems``; the rest loads. ``strict=True`` raises the first problem instead.
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    problems = _Problems(strict)
    if path.is_dir():
        clips = read_folder(path)
    elif path.suffix == ".jsonl":
        clips = read_jsonl_manifest(path, problems)
    elif path.suffix == ".csv":
        header = _csv_header(path)
        if "file_name" in header and "caption_1" in header:
            clips = read_clotho_csv(path, audio_dir=audio_dir, problems=problems)
        elif {"youtube_id", "caption"} <= set(header):
            clips = read_audiocaps_csv(path, audio_dir=audio_dir, problems=problems)
        else:
            raise ManifestError(path, f"unrecognised CSV header {header}; expected Clotho (file_name, caption_1..5) or AudioCaps (audiocap_id, youtube_id, start_time, caption)")
    elif path.suffix.lower() in AUDIO_EXTENSIONS:
        clips = [Clip(id=path.stem, audio=str(path))]
    else:
        raise ManifestError(path, "unsupported source: give a folder, a .jsonl manifest or a Clotho/AudioCaps .csv")
    first: dict[str, str] = {}
    unique = []
    for clip in clips:
        if first.setdefault(clip.id, clip.audio) != clip.audio:
            problems.add(ManifestError(path, f"two clips share the id {clip.id!r} ({first[clip.id]} and {clip.audio}); give each a distinct id", field="id"))
            continue
        unique.append(clip)
    if split is not None:
        unique = [c for c in unique if c.split == split]
    return ClipList(unique, problems.items)


_KNOWN = {"id", "audio", "split", "label", "captions", "text", "speaker", "duration", "sample_rate", "start", "license", "source"}


def read_jsonl_manifest(path: str | Path, problems: _Problems | None = None) -> list[Clip]:
    path = Path(path)
    problems = problems or _Problems(strict=True)
    clips: list[Clip] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                clip = _jsonl_row(path, number, line, seen)
            except ManifestError as exc:
                problems.add(exc)
                continue
            seen.add(clip.id)
            clips.append(clip)
    return clips


def _jsonl_row(path: Path, number: int, line: str, seen: set[str]) -> Clip:
    """One manifest line as a clip; ManifestError naming the line and field otherwise."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(path, f"not valid JSON ({exc.msg})", line=number) from None
    if not isinstance(row, dict):
        raise ManifestError(path, "each line must be a JSON object", line=number)
    for key in ("id", "audio"):
        if not row.get(key):
            raise ManifestError(path, "missing or empty", line=number, field=key)
    clip_id = str(row["id"])
    if clip_id in seen:
        raise ManifestError(path, f"duplicate id '{clip_id}'", line=number, field="id")
    captions = row.get("captions", [])
    if not isinstance(captions, list) or not all(isinstance(c, str) and c.strip() for c in captions):
        raise ManifestError(path, "must be a list of non-empty strings", line=number, field="captions")
    if "captions" in row and not captions:
        raise ManifestError(path, "is an empty list (give at least one caption, or leave the field out)", line=number, field="captions")
    licence = row.get("license")
    if "license" in row and (not isinstance(licence, str) or not licence.strip()):
        raise ManifestError(path, f"must be a licence name or SPDX expression, got {licence!r}", line=number, field="license")
    audio = (path.parent / str(row["audio"])).resolve()
    if not audio.is_file():
        raise ManifestError(path, f"audio file {audio} does not exist", line=number, field="audio")
    label = row.get("label")
    return Clip(
        id=clip_id,
        audio=str(audio),
        split=row.get("split"),
        label=None if label is None else str(label),
        captions=[c.strip() for c in captions],
        text=row.get("text"),
        speaker=None if row.get("speaker") is None else str(row["speaker"]),
        duration=_optional_float(row.get("duration"), path, number, "duration"),
        sample_rate=row.get("sample_rate"),
        start=_optional_float(row.get("start"), path, number, "start") or 0.0,
        license=None if licence is None else licence.strip(),
        source=None if row.get("source") is None else str(row["source"]),
        custom={k: v for k, v in row.items() if k not in _KNOWN},
    )


def read_clotho_csv(path: str | Path, *, audio_dir: str | Path | None = None, split: str | None = None, problems: _Problems | None = None) -> list[Clip]:
    path = Path(path)
    problems = problems or _Problems(strict=True)
    stem_split = next((name for name in CLOTHO_SPLITS if name in path.stem), None)
    if audio_dir is None:
        candidates = [path.parent / name for name in ([stem_split] if stem_split else []) + list(CLOTHO_SPLITS)]
        audio_dir = next((c for c in candidates if c.is_dir()), path.parent)
    split = split or (CLOTHO_SPLITS[stem_split] if stem_split else None)
    clips = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        caption_keys = sorted((k for k in reader.fieldnames or [] if k.startswith("caption_")), key=lambda k: int(k.split("_")[1]))
        for number, row in enumerate(reader, start=2):
            name = (row.get("file_name") or "").strip()
            captions = [row[k].strip() for k in caption_keys if row.get(k) and row[k].strip()]
            if not name or not captions:
                problems.add(ManifestError(path, "missing or empty" if not name else "no caption", line=number, field="file_name" if not name else "caption_1"))
                continue
            clips.append(Clip(id=Path(name).stem, audio=str(Path(audio_dir) / name), split=split, captions=captions))
    return clips


def read_audiocaps_csv(path: str | Path, *, audio_dir: str | Path | None = None, split: str | None = None, problems: _Problems | None = None) -> list[Clip]:
    path = Path(path)
    problems = problems or _Problems(strict=True)
    audio_dir = Path(audio_dir) if audio_dir is not None else path.parent / path.stem
    if not audio_dir.is_dir():
        audio_dir = path.parent
    split = split or {"train": "train", "val": "val", "test": "test"}.get(path.stem)
    grouped: OrderedDict[str, Clip] = OrderedDict()
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for number, row in enumerate(reader, start=2):
            youtube_id = (row.get("youtube_id") or "").strip()
            caption = (row.get("caption") or "").strip()
            if not youtube_id or not caption:
                problems.add(ManifestError(path, "missing or empty", line=number, field="youtube_id" if not youtube_id else "caption"))
                continue
            try:
                start = _optional_float(row.get("start_time"), path, number, "start_time") or 0.0
            except ManifestError as exc:
                problems.add(exc)
                continue
            key = f"{youtube_id}_{int(start)}"
            if key not in grouped:
                audio = _first_existing(audio_dir, [f"{youtube_id}_{int(start)}", f"{youtube_id}_{int(start) * 1000}", youtube_id, f"Y{youtube_id}"])
                # Files cut to the 10 s clip start at 0; a full video file starts at start_time.
                offset = start if Path(audio).stem in (youtube_id, f"Y{youtube_id}") else 0.0
                grouped[key] = Clip(id=key, audio=audio, split=split, start=offset, duration=10.0, custom={"audiocap_ids": []})
            grouped[key].captions.append(caption)
            grouped[key].custom["audiocap_ids"].append(row.get("audiocap_id"))
    return list(grouped.values())


def read_folder(root: str | Path) -> list[Clip]:
    """A folder per class (``root/CLASS/file``) gives labelled clips; otherwise unlabelled ones."""
    root = Path(root)
    files = find_audio_files(root)
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    per_class = bool(subdirs) and all(f.parent.parent == root for f in files) and not any(f.parent == root for f in files)
    return [Clip(id=recording_id_for(f, root), audio=str(f), label=f.parent.name if per_class else None) for f in files]


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [h.strip() for h in next(csv.reader(handle), [])]


def _first_existing(folder: Path, stems: list[str]) -> str:
    for stem in stems:
        for ext in AUDIO_EXTENSIONS:
            candidate = folder / f"{stem}{ext}"
            if candidate.exists():
                return str(candidate)
    return str(folder / f"{stems[0]}.wav")  # reported as missing when read


def _optional_float(value, path: Path, line: int, field: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ManifestError(path, f"must be a number, got {value!r}", line=line, field=field) from None
