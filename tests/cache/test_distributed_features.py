"""`sonalign features` under torchrun: ranks shard recordings by content hash; the merged cache is bit-identical."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from sonalign.cache.features import FeatureSettings, extract_features

SETTINGS = FeatureSettings(audio_encoder="fake-audio", text_encoder="fake-text", segmenter="fixed")
WORLD = 2


def _source(tmp_path: Path, make_wav) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        make_wav(f"src/audio/c{i}.wav", (0.2 * rng.standard_normal(8000 * (1 + i % 3))).astype(np.float32), 8000)
        rows.append({"id": f"c{i}", "audio": f"audio/c{i}.wav", "split": "train", "captions": [f"caption {i}", "shared caption"]})
    (tmp_path / "src" / "audio" / "dup.wav").write_bytes((tmp_path / "src" / "audio" / "c3.wav").read_bytes())  # same content
    (tmp_path / "src" / "audio" / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    make_wav("src/audio/silent.wav", np.zeros(8000, np.float32), 8000)
    rows += [{"id": n, "audio": f"audio/{n}.wav", "captions": [f"{n} sound"]} for n in ("dup", "corrupt", "missing", "silent")]
    manifest = tmp_path / "src" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _content(name: str, data: bytes):
    """Bytes, except for safetensors files: (header as a dict, tensor bytes).

    safetensors writes its ``__metadata__`` map in a per-process random order (a Rust HashMap), so
    two single-process runs already differ in those header bytes; everything else is compared as is.
    """
    if not name.endswith(".safetensors"):
        return data
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def test_two_ranks_write_a_cache_bit_identical_to_one_process(tmp_path, make_wav, monkeypatch):
    import torch.multiprocessing as mp

    from sonalign.distributed import free_port

    manifest = _source(tmp_path, make_wav)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    import features_worker

    out = tmp_path / "cache-ddp"
    ctx = mp.start_processes(features_worker.run, args=(WORLD, free_port(), str(manifest), str(out), str(tmp_path)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("feature workers did not finish in 120 s")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]

    single = extract_features(manifest, tmp_path / "cache-1", SETTINGS, show_progress=False)
    assert single.encoded == 10 and single.cached == 1 and len(single.failures) == 3

    # each rank encoded exactly the recordings it owns; together, every recording once
    for rank, r in enumerate(results):
        assert r["written"] and all(int(h, 16) % WORLD == rank for h in r["written"])
    assert sorted(results[0]["written"] + results[1]["written"]) == sorted(p.stem for p in (tmp_path / "cache-1" / "audio").rglob("*.safetensors"))
    # the merged view and the hash memo are bit-identical; per-recording files and text shards hold
    # the same tensors (bit for bit) and metadata
    ddp_tree, single_tree = _tree(out), _tree(tmp_path / "cache-1")
    assert ddp_tree.keys() == single_tree.keys()
    views = [n for n in single_tree if n.startswith("views/")]
    assert {Path(n).name for n in views} == {"clips.jsonl", "segments.jsonl", "segment_embeddings.npy", "errors.jsonl", "settings.json"}
    for name, data in single_tree.items():
        assert _content(name, ddp_tree[name]) == _content(name, data), name
    assert not [n for n in ddp_tree if n.endswith(".tmp")]
    # a second distributed run has nothing to do, leaves the view alone and reports the same failures on every rank
    for r in results:
        assert r["again"]["nothing_done"] and r["again"]["encoded"] == 0 and r["again"]["cached"] == 11 and r["view_unchanged"]
        assert [tuple(f) for f in r["again"]["failures"]] == single.failures
