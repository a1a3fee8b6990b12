"""Worker side of tests/cache/test_distributed_features.py: one rank of ``sonalign features`` under torchrun's environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from fakes import as_torchrun_rank, register_fake_encoders  # noqa: E402




def run(rank: int, world: int, port: int, source: str, out: str, result_dir: str) -> None:
    as_torchrun_rank(rank, world, port)
    import torch

    torch.set_num_threads(1)
    register_fake_encoders()
    from sonalign.cache.features import FeatureCache, FeatureSettings, extract_features
    from sonalign.cli import app

    written: list[str] = []
    original = FeatureCache._write

    def recording_write(self, content_hash, data, source_path):
        written.append(content_hash)
        return original(self, content_hash, data, source_path)

    FeatureCache._write = recording_write
    # the CLI verb, exactly as `torchrun --nproc-per-node 2 -m sonalign features SRC --out OUT ...` runs it
    app(["features", source, "--out", out, "--audio-encoder", "fake-audio", "--text-encoder", "fake-text", "--segmenter", "fixed"], standalone_mode=False)
    views = {p.name: p.stat().st_mtime_ns for p in (Path(out) / "views").rglob("*")}
    again = extract_features(source, out, FeatureSettings(audio_encoder="fake-audio", text_encoder="fake-text", segmenter="fixed"), show_progress=False)
    unchanged = views == {p.name: p.stat().st_mtime_ns for p in (Path(out) / "views").rglob("*")}
    result = {"written": written, "again": {"encoded": again.encoded, "cached": again.cached, "nothing_done": again.nothing_done,
                                            "failures": again.failures}, "view_unchanged": unchanged}
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(result))
