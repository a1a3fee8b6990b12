"""Where indexing time goes: ``build_index`` on real files under pyinstrument.

Runs the default model on the first ``--files`` files of a ../shared/data set (default: asterisk,
short telephone prompts, the hardest case for per-file overheads), once with transcripts and once
without, and records the main thread's wall time in the stages that matter. The prefetch thread
(decode, energy gate, silero VAD) and the pocketsphinx worker process run beside the main thread
(``workers=1``: the single-process pipeline, whose stages this can see):
their cost shows up in the main thread only as waiting (``wait for prepared group``,
``wait for transcripts``). Model loading is outside the measured call (start-up is separate).

    python bench/profile_index.py [--set asterisk] [--files 200]

Writes bench/results/profile_index.json and, for reading, profile_index_{transcripts,no_transcripts}.txt.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, require_shared, write_results  # noqa: E402

#: (label, function names whose time is summed; the first frame matching on a path counts once)
STAGES = [
    ("CNN (aisfx trunk + mel)", {"AisfxCNN.encode"}),
    ("alignment head", {"RunEmbedder.embed_features"}),
    ("wait for prepared group (decode, energy, VAD in the prefetch thread)", {"Future.result"}),
    ("wait for transcripts (pocketsphinx worker process)", {"PendingTranscripts.result"}),
    ("transcript embedding (MiniLM)", {"Indexer._transcript_vectors"}),
    ("store writes (SQLite + faiss)", {"IndexStore.upsert_recording", "IndexStore.commit"}),
    ("content hashing", {"HashMemo.hash"}),
]


def stage_times(frame, out: dict[str, float], inside: frozenset = frozenset()) -> None:
    name = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
    hit = None if inside else next((label for label, names in STAGES if name in names), None)
    if hit:  # outermost stage only: a stage's own waits are part of it
        out[hit] = out.get(hit, 0.0) + frame.time
        inside = inside | {hit}
    for child in frame.children:
        stage_times(child, out, inside)


def profile_once(files: list[Path], transcripts: bool, text_out: Path) -> dict:
    from pyinstrument import Profiler

    from sonalign.index.build import build_index
    from sonalign.index.embedders import get_embedder

    get_embedder("default")  # start-up outside the measurement
    work = Path(tempfile.mkdtemp(prefix="sonalign-prof-"))
    try:
        folder = work / "audio"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f)
        profiler = Profiler(interval=0.002)
        started = time.perf_counter()
        profiler.start()
        report = build_index(folder, work / "idx", transcripts=transcripts, show_progress=False, workers=1)  # the in-process pipeline: worker processes would leave the main thread waiting
        profiler.stop()
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    session = profiler.last_session
    text_out.write_text(profiler.output_text(unicode=True, color=False, show_all=False))
    stages: dict[str, float] = {}
    stage_times(session.root_frame(), stages)
    return {"transcripts": transcripts, "files": report.files, "segments": report.segments, "audio_seconds": round(report.audio_seconds, 1),
            "wall_seconds": round(wall, 2), "x_realtime": round(report.audio_seconds / wall, 1), "cpu_seconds": round(session.cpu_time, 2),
            "main_thread_seconds": {k: round(v, 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
            "failures": len(report.failures)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="asterisk")
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    from sonalign.audio.io import find_audio_files

    files = find_audio_files(require_shared(args.set) / "audio")[: args.files]
    runs = []
    for transcripts in (True, False):
        name = "transcripts" if transcripts else "no_transcripts"
        r = profile_once(files, transcripts, RESULTS / f"profile_index_{name}.txt")
        runs.append(r)
        print(f"{name}: {r['files']} files, {r['audio_seconds']} s in {r['wall_seconds']} s = {r['x_realtime']}x real time")
        for k, v in r["main_thread_seconds"].items():
            print(f"  {v:8.2f} s  {100 * v / r['wall_seconds']:5.1f}%  {k}")
    path = write_results("profile_index", {"command": "python " + " ".join(sys.argv), "set": args.set, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
