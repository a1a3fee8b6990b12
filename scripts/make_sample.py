"""Build the small real sample shipped in ``src/sonalign/assets/sample`` from ../shared/data.

Two recordings made of real clips separated by silences, with their ground-truth spans:
* ``phone_prompts.flac``: Asterisk core sound prompts (CC BY-SA 3.0, voice: Allison Smith) and tones.
* ``spoken_digits.flac``: Free Spoken Digit Dataset recordings (CC BY-SA 4.0).
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
    (OUT / "spans.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spans))
    print(f"wrote {len(spans)} spans to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
