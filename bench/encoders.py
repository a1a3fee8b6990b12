"""Speed against the anchor: sonalign's aisfx-cnn pipeline vs. the CLAP-HTSAT audio tower.

On the same ~10 minutes of real audio (the first clips of ../shared/data/nonverbal, manifest
order), measures seconds of audio embedded per wall second and peak RSS for

  (a) sonalign's default feature pipeline: decode, resample to 44.1 kHz, fixed 5 s segments,
      aisfx-cnn, write the cache (``FeatureCache.extract``);
  (b) ``transformers.ClapModel``'s audio tower built with the architecture of
      laion/clap-htsat-unfused (HTSAT Swin transformer, depths 2-2-6-2, 768-d, no fusion) with random
      weights (speed does not depend on their values): decode, resample to 48 kHz,
      ClapFeatureExtractor (10 s inputs, repeat-padded), forward.

Same batch size and torch threads for both; each part runs in its own process so peak RSS is
its own. Prints the ratio a/b and writes bench/results/encoders.json. Where CUDA is available the
same is measured on the GPU.

    python bench/encoders.py [--seconds 600] [--batch-size 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mib, require_shared, write_results  # noqa: E402


def pick_clips(seconds: float):
    from sonalign.data.readers import load_clips

    clips, total = [], 0.0
    for clip in load_clips(require_shared("nonverbal") / "manifest.jsonl"):
        if total >= seconds:
            break
        clips.append(clip)
        total += clip.duration or 0.0
    return clips, total


def run_sonalign(clips, batch_size: int, device: str) -> float:
    import os

    from sonalign.cache.features import FeatureCache, FeatureSettings
    from sonalign.utils.device import DEVICE_ENV

    os.environ[DEVICE_ENV] = device  # the encoders' default device (this part runs in its own process)

    workdir = Path(tempfile.mkdtemp(prefix="sonalign-bench-enc-"))
    try:
        cache = FeatureCache(workdir, FeatureSettings(audio_encoder="aisfx-cnn", segmenter="fixed"))
        from sonalign.audio.io import load_audio

        cache.audio_encoder.encode([load_audio(clips[0].audio, cache.audio_encoder.sample_rate)[0]])  # weights loaded before timing
        started = time.perf_counter()
        cache.extract(clips, batch_size=batch_size, show_progress=False)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_clap(clips, batch_size: int, device: str) -> float:
    import numpy as np
    import torch
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

    from sonalign.audio.io import load_audio

    torch.manual_seed(0)
    config = ClapAudioConfig(enable_fusion=False)  # = laion/clap-htsat-unfused's audio config
    model = ClapAudioModelWithProjection(config).eval().to(device)
    extractor = ClapFeatureExtractor(sampling_rate=48000, max_length_s=10, truncation="rand_trunc", padding="repeatpad")
    sr, window = 48000, 48000 * 10

    def chunks(wave):
        return [wave[i : i + window] for i in range(0, max(len(wave), 1), window)]

    with torch.inference_mode():
        model(**{k: v.to(device) for k, v in extractor([np.zeros(sr, np.float32)], sampling_rate=sr, return_tensors="pt").items()})
        started = time.perf_counter()
        pending = []
        for clip in clips:
            pending.extend(chunks(load_audio(clip.audio, sr)[0]))
            while len(pending) >= batch_size:
                batch, pending = pending[:batch_size], pending[batch_size:]
                inputs = extractor(batch, sampling_rate=sr, return_tensors="pt")
                model(**{k: v.to(device) for k, v in inputs.items()}).audio_embeds.cpu()
        if pending:
            inputs = extractor(pending, sampling_rate=sr, return_tensors="pt")
            model(**{k: v.to(device) for k, v in inputs.items()}).audio_embeds.cpu()
        return time.perf_counter() - started


def part(name: str, seconds: float, batch_size: int, threads: int, device: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    clips, total = pick_clips(seconds)
    wall = (run_sonalign if name == "sonalign" else run_clap)(clips, batch_size, device)
    return {"part": name, "device": device, "clips": len(clips), "audio_seconds": round(total, 1), "wall_seconds": round(wall, 2),
            "x_realtime": round(total / wall, 2), "peak_rss_mib": round(peak_rss_mib(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=["sonalign", "clap"], help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(part(args.part, args.seconds, args.batch_size, args.threads, args.device)))
        return
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for name in ("sonalign", "clap"):
            cmd = [sys.executable, __file__, "--part", name, "--seconds", str(args.seconds), "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", device]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{device:5s} {name:9s} {row['audio_seconds']:7.1f} s audio in {row['wall_seconds']:7.2f} s = {row['x_realtime']:7.2f}x real time, peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)
    ratios = {}
    for device in devices:
        a = next(r for r in rows if r["device"] == device and r["part"] == "sonalign")
        b = next(r for r in rows if r["device"] == device and r["part"] == "clap")
        ratios[device] = round(a["x_realtime"] / b["x_realtime"], 2)
        print(f"{device}: sonalign / CLAP-HTSAT throughput ratio = {ratios[device]:.2f}x (goal >= 2x)")
    path = write_results("encoders", {"data": "nonverbal manifest order, first clips", "batch_size": args.batch_size, "threads": args.threads,
                                      "rows": rows, "ratio_sonalign_over_clap": ratios, "goal_ratio": 2.0})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
