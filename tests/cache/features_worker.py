"""Worker side of tests/cache/test_distributed_features.py: one rank of ``sonalign features`` under torchrun's environment."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def register_fake_encoders() -> None:
    spec = importlib.util.spec_from_file_location("_sonalign_tests_conftest", TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    from sonalign.encoders import base

    base._AUDIO["fake-audio"] = module.FakeAudioEncoder
    base._TEXT["fake-text"] = module.FakeTextEncoder


def run(rank: int, world: int, port: int, source: str, out: str, result_dir: str) -> None:
    # what torchrun sets for each worker
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "SONALIGN_NO_PROGRESS": "1"})
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only: no dependence on the host name resolving
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
