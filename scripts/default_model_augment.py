"""Augmented training clips for scripts/train_default_model.py, written as audio files + manifest rows.

``augmented_rows(rows, out, kind, per_clip)`` makes ``per_clip`` variants of every *train* row
(validation rows are never augmented) with :mod:`sonalign.data.augment`:

* ``crop``: a random part of the clip, same captions;
* ``pair``: the clip mixed with another clip of another label, captions "A and B";
* ``ambience``: the clip placed in a background recording (a train clip whose label names an
  ambience, rain, wind, water, crowd, traffic or engine sound) at 0-20 dB SNR and cut out again
  by the indexer's segmenter, same captions.

A variant's licence is its sources' licences joined with AND (each must allow shipped weights).
Files are written once (a rerun reuses them); the seed fixes every choice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from sonalign.audio.io import load_audio
from sonalign.data.augment import compose_caption, cut_like_indexer, in_ambience, mix_pair, random_crop

SR = 44100
MAX_SECONDS = 10.0
BED_WORDS = ("ambience", "rain", "wind", "river", "stream", "waterfall", "crowd", "traffic", "waves", "machinery", "engine running", "crackling", "cicadas", "crickets")


def augmented_rows(rows: list[dict], out: Path, kind: str, per_clip: int, *, seed: int = 0) -> list[dict]:
    train = [r for r in rows if r["split"] == "train"]
    stream = int(hashlib.sha256(kind.encode()).hexdigest()[:8], 16)
    beds = [r for r in train if r["label"] and any(w in r["label"] for w in BED_WORDS)]
    waves: dict[str, np.ndarray] = {}

    def wave(row: dict) -> np.ndarray:
        if row["id"] not in waves:
            waves[row["id"]] = load_audio(row["audio"], SR, allow_silent=True)[0][: int(MAX_SECONDS * SR)]
        return waves[row["id"]]

    made = []
    for i, row in enumerate(train):
        for n in range(per_clip):
            rng = np.random.default_rng([seed, stream, i, n])  # one generator per variant: a rerun makes the same choices
            path = out / kind / f"{row['id'].replace('/', '__')}-{n}.flac"
            other = train[int(rng.integers(len(train)))] if kind == "pair" else beds[int(rng.integers(len(beds)))] if kind == "ambience" else None
            if other is not None and (other["id"] == row["id"] or (kind == "pair" and other["label"] == row["label"])):
                continue
            captions, licence = row["captions"], row["license"]
            if kind == "pair":
                captions = [compose_caption(a, b) for a, b in zip(row["captions"], other["captions"][1:] + other["captions"][:1])]
            if other is not None:
                licence = f"{row['license']} AND {other['license']}"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, _variant(kind, wave(row), None if other is None else wave(other), rng), SR)
            made.append({**row, "id": f"aug-{kind}/{row['id']}-{n}", "audio": str(path), "captions": captions, "license": licence,
                         "source": f"{row['source']} ({kind} augmentation)", "label": row["label"] if kind != "pair" else f"{row['label']} + {other['label']}"})
    return made


def _variant(kind: str, event: np.ndarray, other: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    if kind == "crop":
        return random_crop(event, SR, rng)
    if kind == "pair":
        return mix_pair(event, other, rng)
    mixture, span = in_ambience(event, other, SR, float(rng.uniform(0, 20)), rng)
    start, end = cut_like_indexer(mixture, SR, span)
    return mixture[int(start * SR) : int(end * SR)]
