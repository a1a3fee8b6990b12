"""End-to-end indexing speed: ``sonalign index`` on real recordings, and on one long file.

1. ``folder``: every file of ../shared/data/<set>/audio (default: asterisk and nonverbal), indexed
   from scratch with the default model (energy + speech segmentation, embedding, transcripts of
   speech segments, SQLite + faiss writes). Then the same folder again: the incremental no-op.
2. ``long``: one recording of at least ``--hours`` (default 1) built from those recordings
   separated by 0.5-3 s silences (16 kHz FLAC, written in blocks), indexed alone.

Each is run in its own process so its peak RSS is its own (``peak_rss_mib``: the indexing process;
``worker_peak_rss_mib``: the largest of its worker processes, when it started any). Speed = seconds
of audio per wall second. References measured in the same run: decoding alone (the I/O floor), as
a ratio, and the folder indexed again with ``workers=1`` (one process: the CNN on every core, VAD
in a thread beside it), which gives the speed-up of the default worker processes.
With ``--no-transcripts`` the pocketsphinx cascade is skipped (it dominates on speech).

    python bench/index.py [--sets asterisk nonverbal] [--hours 1] [--no-transcripts] [--workers N]

Writes bench/results/index.json.
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
from _common import SHARED, peak_rss_mib, require_shared, write_results  # noqa: E402


def build_long_file(sets: list[str], hours: float, out: Path, seed: int = 0) -> float:
    import numpy as np
    import soundfile as sf

    from sonalign.audio.io import find_audio_files, load_audio

    rng = np.random.default_rng(seed)
    files = [f for s in sets for f in find_audio_files(require_shared(s) / "audio")]
    total, target, sr = 0.0, hours * 3600.0, 16000
    with sf.SoundFile(out, "w", samplerate=sr, channels=1, subtype="PCM_16", format="FLAC") as handle:
        while total < target:
            for i in rng.permutation(len(files)):
                wave, _ = load_audio(files[i], sr, allow_silent=True)
                gap = np.zeros(int(rng.uniform(0.5, 3.0) * sr), np.float32)
                handle.write(np.concatenate([wave, gap]))
                total += (len(wave) + len(gap)) / sr
                if total >= target:
                    break
    return total


def index_part(source: str, transcripts: bool, workers: int | None) -> dict:
    import resource

    from sonalign.audio.io import find_audio_files, stream_audio
    from sonalign.index.build import build_index

    workdir = Path(tempfile.mkdtemp(prefix="sonalign-bench-idx-"))
    try:
        started = time.perf_counter()
        first = build_index(source, workdir / "idx", transcripts=transcripts, show_progress=False, workers=workers)
        wall = time.perf_counter() - started
        started = time.perf_counter()
        again = build_index(source, workdir / "idx", transcripts=transcripts, show_progress=False, workers=workers)
        noop = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    started = time.perf_counter()
    for f in find_audio_files(source):
        for _ in stream_audio(f, 16000, allow_silent=True):
            pass
    decode = time.perf_counter() - started
    return {"files": first.files, "segments": first.segments, "failures": len(first.failures), "audio_seconds": round(first.audio_seconds, 1),
            "wall_seconds": round(wall, 2), "x_realtime": round(first.audio_seconds / wall, 2), "rerun_seconds": round(noop, 2),
            "rerun_unchanged": again.unchanged, "decode_floor_x_realtime": round(first.audio_seconds / decode, 1),
            "ratio_to_decode_floor": round(decode / wall, 4), "workers": first.workers, "peak_rss_mib": round(peak_rss_mib(), 1),
            "worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["asterisk", "nonverbal"])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--no-transcripts", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="build_index(workers=...); default: one per core")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    transcripts = not args.no_transcripts
    if args.part:
        print(json.dumps(index_part(args.part, transcripts, args.workers)))
        return

    def run(source: Path, workers: int | None = args.workers) -> dict:
        cmd = [sys.executable, __file__, "--part", str(source)] + (["--no-transcripts"] if not transcripts else [])
        cmd += ["--workers", str(workers)] if workers is not None else []
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    results: dict = {"transcripts": transcripts, "sets": args.sets}
    with tempfile.TemporaryDirectory(prefix="sonalign-bench-src-") as tmp:
        folder = Path(tmp) / "folder"
        folder.mkdir()
        for s in args.sets:
            (folder / s).symlink_to(require_shared(s) / "audio", target_is_directory=True)
        results["folder"] = run(folder)
        print("folder:", results["folder"], flush=True)
        if results["folder"]["workers"] > 1:
            one = run(folder, 1)
            results["folder_one_process"] = one
            results["workers_speedup"] = round(results["folder"]["x_realtime"] / one["x_realtime"], 2)
            print("folder, workers=1:", one, f"-> speed-up of {results['folder']['workers']} workers: {results['workers_speedup']}x", flush=True)
        if not args.skip_long:
            long_dir = Path(tmp) / "long"
            long_dir.mkdir()
            seconds = build_long_file(args.sets, args.hours, long_dir / "long.flac")
            results["long"] = {"built_seconds": round(seconds, 1), **run(long_dir)}
            print("long:", results["long"], flush=True)
    results["data"] = f"{SHARED} sets {args.sets}"
    results["command"] = "python bench/index.py" + (" --no-transcripts" if not transcripts else "") + (f" --workers {args.workers}" if args.workers else "")
    path = write_results("index" if transcripts else "index_no_transcripts", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
