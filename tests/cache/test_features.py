"""Feature cache: resumable, idempotent, bit-identical, reports bad files and goes on."""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from sonalign.cache.features import FeatureCache, FeatureSettings, extract_features
from sonalign.data.readers import load_clips

SETTINGS = FeatureSettings(audio_encoder="fake-audio", text_encoder="fake-text", segmenter="fixed")


def _source(tmp_path, make_wav, n=4):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        wave = (0.2 * rng.standard_normal(8000 * (2 + 4 * i))).astype(np.float32)
        make_wav(f"src/audio/c{i}.wav", wave, 8000)
        rows.append({"id": f"c{i}", "audio": f"audio/c{i}.wav", "split": "train", "captions": [f"caption {i} a", f"caption {i} b"]})
    manifest = tmp_path / "src" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_extract_then_nothing_to_do_and_bit_identical(tmp_path, make_wav):
    manifest = _source(tmp_path, make_wav)
    out = tmp_path / "cache"
    first = extract_features(manifest, out, SETTINGS, show_progress=False)
    assert (first.encoded, first.cached, first.failures) == (4, 0, [])
    assert first.texts_encoded == 8
    files = sorted((out / "audio").rglob("*.safetensors"))
    before = {f: f.read_bytes() for f in files}
    view = {p.name: p.stat().st_mtime_ns for p in (out / "views").rglob("*")}
    second = extract_features(manifest, out, SETTINGS, show_progress=False)
    assert second.nothing_done and second.cached == 4
    assert {f: f.read_bytes() for f in files} == before  # per-recording files untouched
    assert {p.name: p.stat().st_mtime_ns for p in (out / "views").rglob("*")} == view  # nothing rewritten
    # a fresh cache folder gives bit-identical vectors
    third = extract_features(manifest, tmp_path / "cache2", SETTINGS, show_progress=False)
    assert third.encoded == 4
    again = sorted((tmp_path / "cache2" / "audio").rglob("*.safetensors"))
    for a, b in zip(files, again):
        ta, tb = load_file(str(a)), load_file(str(b))
        assert ta.keys() == tb.keys()
        for key in ta:
            assert np.array_equal(ta[key], tb[key])


def test_view_is_row_aligned(tmp_path, make_wav):
    manifest = _source(tmp_path, make_wav)
    report = extract_features(manifest, tmp_path / "cache", SETTINGS, show_progress=False)
    view = tmp_path / "cache" / "views"
    (vdir,) = list(view.iterdir())
    segs = [json.loads(l) for l in (vdir / "segments.jsonl").open()]
    emb = np.load(vdir / "segment_embeddings.npy")
    assert len(segs) == emb.shape[0] > 4
    cache = FeatureCache(tmp_path / "cache", SETTINGS)
    first = cache.load_audio_features(segs[0]["content_hash"])
    assert np.array_equal(first["embedding"][0], emb[0])
    assert report.view == str(vdir)


def test_resume_after_partial_run_does_only_the_rest(tmp_path, make_wav):
    manifest = _source(tmp_path, make_wav)
    clips = load_clips(manifest)
    cache = FeatureCache(tmp_path / "cache", SETTINGS)
    cache.extract(clips[:2], show_progress=False)  # as if killed after two files
    report = extract_features(manifest, tmp_path / "cache", SETTINGS, show_progress=False)
    assert (report.encoded, report.cached) == (2, 2)
    assert len(list((tmp_path / "cache" / "audio").rglob("*.safetensors"))) == 4


def test_leftover_temp_file_from_a_kill_is_ignored(tmp_path, make_wav):
    manifest = _source(tmp_path, make_wav, n=2)
    cache = FeatureCache(tmp_path / "cache", SETTINGS)
    h = cache.memo.hash(load_clips(manifest)[0].audio)
    target = cache.audio_path(h)
    target.parent.mkdir(parents=True)
    (target.parent / f".{target.name}.abc.tmp").write_bytes(b"torn")
    report = extract_features(manifest, tmp_path / "cache", SETTINGS, show_progress=False)
    assert report.encoded == 2 and target.exists()


def test_bad_files_are_reported_and_the_rest_processed(tmp_path, make_wav):
    manifest = _source(tmp_path, make_wav, n=2)
    (tmp_path / "src" / "audio" / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    (tmp_path / "src" / "audio" / "empty.wav").write_bytes(b"")
    make_wav("src/audio/silent.wav", np.zeros(16000, np.float32), 8000)
    extra = [{"id": n, "audio": f"audio/{n}.wav", "captions": ["x"]} for n in ("corrupt", "empty", "silent", "missing")]
    with manifest.open("a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in extra))
    report = extract_features(manifest, tmp_path / "cache", SETTINGS, show_progress=False)
    assert report.encoded == 2
    failed = {p.rsplit("/", 1)[-1]: why for p, why in report.failures}
    assert set(failed) == {"corrupt.wav", "empty.wav", "silent.wav", "manifest.jsonl:6"}  # a missing file: its manifest line
    assert "empty" in failed["empty.wav"] and "silent" in failed["silent.wav"] and "missing.wav does not exist" in failed["manifest.jsonl:6"]
    errors = (tmp_path / "cache" / "views").rglob("errors.jsonl")
    assert sum(1 for _ in next(errors).open()) == 3  # the files that failed to decode


def test_changing_segmenter_settings_changes_the_key(tmp_path):
    a = FeatureCache(tmp_path / "cache", SETTINGS)
    b = FeatureCache(tmp_path / "cache", FeatureSettings(audio_encoder="fake-audio", text_encoder="fake-text", segmenter="energy"))
    assert a.audio_key != b.audio_key


def test_features_from_wave_matches_file_path_for_one_segment(tmp_path, make_wav):
    cache = FeatureCache(tmp_path / "cache", SETTINGS)
    wave = (0.3 * np.sin(np.arange(8000 * 2) / 5)).astype(np.float32)
    data = cache.features_from_wave(wave, 8000, "r")
    assert data["embedding"].shape[1] == 16 and data["segments"][0]["id"] == "r-00000"
    np.testing.assert_array_equal(data["frame_offsets"][-1], data["frames"].shape[0])


def test_real_nonverbal_subset(shared_data, tmp_path):
    clips = load_clips(shared_data / "nonverbal" / "manifest.jsonl", split="val")[:10]
    report = FeatureCache(tmp_path / "c", SETTINGS).extract(clips, show_progress=False)
    assert report.encoded == 10 and not report.failures


def test_long_recordings_are_encoded_in_bounded_groups(tmp_path, make_wav, monkeypatch):
    import sonalign.cache.features as features

    monkeypatch.setattr(features, "EAGER_SECONDS", 5.0)  # treat this 30 s file as "long"
    monkeypatch.setattr(features, "GROUP_SEGMENTS", 2)
    wave = (0.2 * np.random.default_rng(0).standard_normal(8000 * 30)).astype(np.float32)
    make_wav("long/a.wav", wave, 8000)
    cache = FeatureCache(tmp_path / "c", FeatureSettings(audio_encoder="fake-audio", text_encoder="fake-text", segmenter="fixed", segmenter_options={"window": 5.0}))
    sizes = []
    original = cache.audio_encoder.encode
    monkeypatch.setattr(cache.audio_encoder, "encode", lambda waves, **kw: sizes.append(len(waves)) or original(waves, **kw))
    waves, segments = cache._load_segments(load_clips(tmp_path / "long")[0])
    assert isinstance(waves, features.SegmentWaves)  # nothing decoded yet
    data = cache.encode_segments(waves, segments)
    assert sizes == [2, 2, 2] and data["embedding"].shape[0] == 6
    eager = cache.encode_segments([waves[i] for i in range(6)], segments)
    np.testing.assert_array_equal(data["embedding"], eager["embedding"])


def test_separate_runs_write_byte_identical_files(tmp_path, make_wav):
    """Tools that hash outputs (DVC, make, rsync) must see an unchanged cache as unchanged: each
    process orders safetensors' metadata map its own way, so every run is its own process here."""
    import os
    import subprocess
    import sys

    manifest = _source(tmp_path, make_wav, n=6)
    script = (
        "import sys, importlib.util\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[1])!r}); from fakes import register_fake_encoders; register_fake_encoders()\n"
        "from sonalign.cache.features import FeatureSettings, extract_features\n"
        "extract_features(sys.argv[1], sys.argv[2], FeatureSettings(audio_encoder='fake-audio', text_encoder='fake-text'), show_progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for out in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", script, str(manifest), str(tmp_path / out)], check=True, env=env)
    trees = [{p.relative_to(tmp_path / out): p.read_bytes() for p in sorted((tmp_path / out).rglob("*.safetensors"))} for out in ("a", "b", "c")]
    assert len(trees[0]) == 7 and trees[0] == trees[1] == trees[2]  # 6 recordings + 1 text shard
