"""Build the small real sample shipped in ``src/sonalign/assets/sample`` from ../shared/data.

Two recordings made of real clips separated by silences, with their ground-truth spans:
* ``phone_prompts.flac``: Asterisk core sound prompts (CC BY-SA 3.0, voice: Allison Smith) and tones.
* ``spoken_digits.flac``: Free Spoken Digit Dataset recordings (CC BY-SA 4.0).
And ``sounds/``: a few everyday sound effects (CC0) from ../shared/data/sfx's test and zeroshot
splits, which the packaged default model never trained on, one file each, at their own rate.
Deterministic: same inputs give the same files.  Usage: python scripts/make_sample.py [SHARED_DATA]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "sonalign" / "assets" / "sample"
SR = 16000

PROMPTS = [
    "vm-goodbye", "conf-onlyperson", "vm-password", "beep", "pbx-invalid", "agent-loginok",
    "vm-nomore", "queue-thankyou", "ascending-2tone", "conf-locked", "vm-intro", "hello-world",
    "tt-weasels", "dir-welcome", "call-waiting", "demo-congrats",
]


#: sfx clip id -> demo query. CC0 clips of the test / zeroshot splits (never trained on), chosen
#: among those the packaged model finds first for their label in the bundled sample's index.
SOUNDS: dict[str, str] = {
    "antum-6e10ca027f": "seagulls calling",
    "sonicpi-fd1c35c981": "a bell ringing",
    "antum-237d64e179": "a vehicle engine idling",
    "openclonk-2f5dfe1c4a": "a burning fuse",
    "sonicpi-ca6fd45d4c": "a splash cymbal",
}


def _read(path: Path) -> np.ndarray:
    import soxr

    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    wave = wave.mean(1)
    return soxr.resample(wave, sr, SR).astype(np.float32) if sr != SR else wave


def _build(items: list[tuple[str, Path, dict]], gap: float, name: str) -> list[dict]:
    pieces, spans, t = [np.zeros(int(gap * SR), np.float32)], [], gap
    for item_id, path, extra in items:
        wave = _read(path)
        spans.append({"recording": name, "source_id": item_id, "start": round(t, 3), "end": round(t + len(wave) / SR, 3), **extra})
        pieces += [wave, np.zeros(int(gap * SR), np.float32)]
        t += len(wave) / SR + gap
    sf.write(OUT / f"{name}.flac", np.concatenate(pieces), SR, subtype="PCM_16")
    return spans


def _sounds(shared: Path) -> list[dict]:
    rows = {json.loads(l)["id"]: json.loads(l) for l in (shared / "sfx" / "manifest.jsonl").open()}
    (OUT / "sounds").mkdir(exist_ok=True)
    spans = []
    for clip_id, query in SOUNDS.items():
        row = rows[clip_id]
        assert row["split"] in ("test", "zeroshot") and row["license"] in ("CC0-1.0", "public-domain"), clip_id
        wave, sr = sf.read(shared / "sfx" / row["audio"], dtype="float32", always_2d=True)
        name = f"sounds/{row['label'].replace(' ', '_')}"
        sf.write(OUT / f"{name}.flac", wave.mean(1), sr, subtype="PCM_16")
        spans.append({"recording": name, "source_id": clip_id, "start": 0.0, "end": round(len(wave) / sr, 3), "label": row["label"], "query": query,
                      "license": row["license"], "attribution": row["attribution"], "origin": row["origin"]})
    return spans


def main(shared: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = {json.loads(l)["id"]: json.loads(l) for l in (shared / "asterisk" / "manifest.jsonl").open()}
    ids = [p for p in PROMPTS if p in rows]
    prompts = [(i, shared / "asterisk" / rows[i]["audio"], {"text": rows[i]["text"]}) for i in ids]
    spans = _build(prompts, 1.5, "phone_prompts")
    fsdd = [json.loads(l) for l in (shared / "fsdd" / "manifest.jsonl").open()]
    digits = [r for r in fsdd if r["speaker"] == "jackson" and r["id"].endswith("_0")]
    digits.sort(key=lambda r: r["label"])
    spans += _build([(r["id"], shared / "fsdd" / r["audio"], {"text": str(r["label"])}) for r in digits], 1.0, "spoken_digits")
    spans += _sounds(shared)
    (OUT / "spans.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spans))
    print(f"wrote {len(spans)} spans to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
