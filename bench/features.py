"""Feature-extraction throughput on ../shared/data/nonverbal (727 real clips, 16 kHz WAV).

Measures the whole ``sonalign features`` pipeline (hash, decode, resample to 44.1 kHz, chunk,
encode with aisfx-cnn, write safetensors + view) as seconds of audio per wall second, with peak
RSS, into a fresh cache folder. The reference, measured in the same run on the same files, is
decode + resample alone (the I/O floor): the ratio says how much the encoder costs on top.

    python bench/features.py [--limit N] [--encoder aisfx-cnn] [--batch-size 32]

Writes bench/results/features.json. Goal (issue 2): >= 50x real time on 2 cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, require_shared, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument("--encoder", default="aisfx-cnn")
    parser.add_argument("--segmenter", default="fixed")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from sonalign.audio.io import load_audio
    from sonalign.cache.features import FeatureCache, FeatureSettings
    from sonalign.data.readers import load_clips

    data = require_shared("nonverbal")
    clips = load_clips(data / "manifest.jsonl")[: args.limit]
    settings = FeatureSettings(audio_encoder=args.encoder, segmenter=args.segmenter)
    workdir = Path(tempfile.mkdtemp(prefix="sonalign-bench-"))
    try:
        cache = FeatureCache(workdir / "cache", settings)
        sr = cache.audio_encoder.sample_rate
        cache.audio_encoder.encode([load_audio(clips[0].audio, sr)[0]])  # load weights outside the timing
        started = time.perf_counter()
        report = cache.extract(clips, batch_size=args.batch_size, show_progress=True)
        wall = time.perf_counter() - started
        audio_seconds = sum(c.duration or 0 for c in clips)
        started = time.perf_counter()
        for clip in clips:
            load_audio(clip.audio, sr, allow_silent=True)
        floor = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    speed = audio_seconds / wall
    floor_speed = audio_seconds / floor
    result = {
        "data": str(data / "manifest.jsonl"),
        "split": "all",
        "clips": len(clips),
        "failures": len(report.failures),
        "audio_seconds": round(audio_seconds, 1),
        "encoder": args.encoder,
        "segmenter": args.segmenter,
        "batch_size": args.batch_size,
        "wall_seconds": round(wall, 2),
        "x_realtime": round(speed, 1),
        "reference_decode_resample_x_realtime": round(floor_speed, 1),
        "ratio_pipeline_to_decode_floor": round(speed / floor_speed, 3),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "goal_x_realtime": 50,
    }
    path = write_results("features", result)
    for key, value in result.items():
        print(f"{key:40s} {value}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
