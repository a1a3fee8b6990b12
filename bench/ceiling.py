"""How fast indexing can be on this machine: each stage's cost alone, the ceiling, and the real run.

Indexing without transcripts is three kinds of work per file: preparation (decode, energy gate,
resampling to 16 kHz, cutting the segments out at 44.1 kHz), silero-vad, and the aisfx CNN with
its mel spectrogram (plus the small alignment head). The index workers run one single-threaded
process per core, so what bounds them is the sum of the three stages' *core-seconds* per second
of audio. This benchmark measures, in one run on the same files:

1. each stage alone on one thread, over the same groups of files the indexer forms;
2. the fp32 matrix-multiply peak of one core and of all cores (``torch.mm``, 2048^3), and the
   CNN's own GFLOP/s (FLOPs counted from the convolution shapes of every window it ran);
3. ``build_index`` with worker processes (the default) on the same files, end to end.

From (1) it prints the ceiling: cores / (core-seconds per audio second), i.e. the speed with
perfect overlap and no overhead, and what the CNN alone would have to reach for 100x real time,
as a fraction of the measured matmul peak.

    python bench/ceiling.py [--files 300] [--sets asterisk nonverbal]

Writes bench/results/ceiling.json (the figures go into docs/performance.md through
bench/performance_report.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_shared, write_results  # noqa: E402

GOAL_X = 100.0


def conv_flops(frames: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of the aisfx trunk's eight 3x3 convolutions on one window of ``frames`` spectrogram frames."""
    from sonalign.encoders.aisfx_cnn import N_MELS

    channels = [(1, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    t, f, total = frames, N_MELS, 0.0
    for block in range(4):
        for cin, cout in channels[2 * block : 2 * block + 2]:
            total += 2.0 * 9 * cin * cout * t * f
        if block < 3:  # 2x2 max-pool after blocks 1-3
            t, f = t // 2, f // 2
    return total


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of ``torch.mm`` on ``n x n`` matrices with ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
        return 2.0 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def window_frames_of(waves) -> list[int]:
    """Spectrogram frames of every window the CNN runs for these 44.1 kHz waves (see aisfx_cnn._fit_window)."""
    from sonalign.encoders.aisfx_cnn import HOP_LENGTH, SPEC_FRAMES_PER_FRAME, WINDOW_FRAMES

    out = []
    for w in waves:
        n_spec = 1 + len(w) // HOP_LENGTH
        for start in range(0, n_spec, WINDOW_FRAMES):
            n = min(WINDOW_FRAMES, n_spec - start)
            out.append(WINDOW_FRAMES if n > WINDOW_FRAMES - SPEC_FRAMES_PER_FRAME else -(-n // SPEC_FRAMES_PER_FRAME) * SPEC_FRAMES_PER_FRAME)
    return out


def stage_costs(files: list[Path]) -> dict:
    """Each stage alone on one thread, over the indexer's groups: seconds and windows."""
    import torch

    from sonalign.audio.io import load_audio, resample
    from sonalign.cache.features import GROUP_SEGMENTS
    from sonalign.index.indexer import Indexer, merge_chunks, plan_groups, span_of
    from sonalign.index.workers import WORKER_CNN_BATCH

    torch.set_num_threads(1)
    indexer = Indexer(None, "default", transcripts=False, asr_process=False, cnn_batch=WORKER_CNN_BATCH)
    embedder, energy, speech = indexer.embedder, indexer.segmenters["energy"], indexer.segmenters["speech"]
    # weights and models loaded before timing
    speech.segment_waves([load_audio(files[0], 16000)[0]], ["warm"])
    embedder.embed_segments([load_audio(files[0], embedder.sample_rate)[0]])

    t = {"prepare": 0.0, "vad": 0.0, "cnn": 0.0}
    audio_s, windows = 0.0, []
    for group in plan_groups(files):
        started = time.perf_counter()
        loaded = []
        for i in group:
            wave, sr = load_audio(files[i])
            loaded.append((f"r{i}", wave, sr, energy.segment_wave(wave, sr, f"r{i}"), resample(wave, sr, 16000)))
            audio_s += len(wave) / sr
        t["prepare"] += time.perf_counter() - started

        started = time.perf_counter()
        speech_lists = speech.segment_waves([x[4] for x in loaded], [x[0] for x in loaded])
        t["vad"] += time.perf_counter() - started

        started = time.perf_counter()
        waves = []
        for (rid, wave, sr, sounds, _), speech_segs in zip(loaded, speech_lists):
            segments = merge_chunks(sounds, speech_segs, rid) or Indexer._whole_file(rid, len(wave) / sr)
            waves += [span_of(wave, sr, seg, embedder.sample_rate) for seg in segments]
        t["prepare"] += time.perf_counter() - started

        started = time.perf_counter()
        for lo in range(0, len(waves), GROUP_SEGMENTS):
            embedder.embed_segments(waves[lo : lo + GROUP_SEGMENTS], batch_size=WORKER_CNN_BATCH)
        t["cnn"] += time.perf_counter() - started
        windows += window_frames_of(waves)
    indexer.close()
    return {"seconds": t, "audio_s": audio_s, "windows": len(windows), "cnn_gflop": sum(conv_flops(n) for n in windows) / 1e9}


def end_to_end(files: list[Path]) -> dict:
    from sonalign.index.build import build_index

    work = Path(tempfile.mkdtemp(prefix="sonalign-bench-ceiling-"))
    try:
        folder = work / "audio"
        folder.mkdir()
        for i, f in enumerate(files):
            (folder / f"{i:05d}{f.suffix}").symlink_to(f.resolve())
        started = time.perf_counter()
        report = build_index(folder, work / "idx", transcripts=False)
        wall = time.perf_counter() - started
        return {"wall_s": wall, "workers": report.workers, "failed": len(report.failures), "audio_s": report.audio_seconds}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=300, help="files taken from each set, in sorted order")
    parser.add_argument("--sets", nargs="+", default=["asterisk", "nonverbal"])
    args = parser.parse_args()

    from sonalign.audio.io import find_audio_files
    from sonalign.utils.device import DEVICE_ENV

    os.environ[DEVICE_ENV] = "cpu"  # a ceiling of the CPU cores, also on a machine with a GPU (workers inherit it)
    files = [f for s in args.sets for f in sorted(find_audio_files(require_shared(s) / "audio"))[: args.files]]
    cores = os.cpu_count() or 1
    print(f"{len(files)} files from {args.sets}; {cores} cores")

    peak1, peak_all = matmul_peak(1), matmul_peak(cores)
    print(f"fp32 matmul peak: {peak1:.1f} GFLOP/s on 1 core, {peak_all:.1f} on {cores}")

    costs = stage_costs(files)
    audio_s, sec = costs["audio_s"], costs["seconds"]
    per_audio_s = {k: v / audio_s for k, v in sec.items()}  # core-seconds per second of audio
    total = sum(per_audio_s.values())
    ceiling = cores / total
    cnn_gflops = costs["cnn_gflop"] / sec["cnn"]
    gflop_per_audio_s = costs["cnn_gflop"] / audio_s
    # GFLOP/s per core (each worker is one single-threaded process) the CNN needs for GOAL_X:
    # with every other stage free, and with the other stages costing what they were measured at
    # (they leave ``left`` core-seconds per audio second to the CNN).
    needed_cnn_gflops = GOAL_X * gflop_per_audio_s / cores
    left = cores / GOAL_X - per_audio_s["prepare"] - per_audio_s["vad"]
    needed_with_rest = gflop_per_audio_s / left if left > 0 else float("inf")
    for k in sec:
        print(f"  {k:8s} {sec[k]:7.2f} core-s  {audio_s / sec[k]:7.1f}x real time on one core")
    print(f"audio {audio_s:.1f} s, {costs['windows']} CNN windows, {gflop_per_audio_s:.2f} GFLOP per audio second, CNN at {cnn_gflops:.1f} GFLOP/s on one core "
          f"({cnn_gflops / peak1:.0%} of the matmul peak)")
    print(f"ceiling with perfect overlap on {cores} cores: {ceiling:.1f}x real time")
    print(f"{GOAL_X:.0f}x needs the CNN at {needed_cnn_gflops:.0f} GFLOP/s per core if nothing else cost anything ({needed_cnn_gflops / peak1:.0%} of the "
          f"one-core matmul peak), {needed_with_rest:.0f} GFLOP/s per core ({needed_with_rest / peak1:.0%}) with the other stages as measured")

    run = end_to_end(files)
    measured = audio_s / run["wall_s"]
    print(f"build_index, {run['workers']} workers, same files: {measured:.1f}x real time ({measured / ceiling:.0%} of the ceiling)")

    path = write_results("ceiling", {
        "files": len(files), "sets": args.sets, "audio_s": audio_s, "cores": cores,
        "matmul_peak_gflops": {"1": peak1, str(cores): peak_all},
        "stage_core_seconds": sec, "stage_x_real_time_one_core": {k: audio_s / v for k, v in sec.items()},
        "cnn_windows": costs["windows"], "cnn_gflop_per_audio_s": gflop_per_audio_s, "cnn_gflops_one_core": cnn_gflops,
        "ceiling_x_real_time": ceiling, "goal_x_real_time": GOAL_X,
        "needed_cnn_gflops_per_core_alone": needed_cnn_gflops, "needed_cnn_gflops_per_core_with_other_stages": needed_with_rest,
        "end_to_end": {**run, "x_real_time": measured},
        "command": " ".join(["python bench/ceiling.py", *sys.argv[1:]]),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
