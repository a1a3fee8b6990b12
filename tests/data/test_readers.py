import json

import pytest

from sonalign.data.readers import load_clips
from sonalign.errors import ManifestError


def _write(path, text):
    path.write_text(text)
    return path


def test_jsonl_manifest_resolves_audio_and_fields(tmp_path):
    m = _write(tmp_path / "manifest.jsonl", json.dumps({"id": "a", "audio": "audio/a.wav", "split": "test", "label": 3, "captions": ["x", "y"], "speaker": 7, "extra": 1}) + "\n\n")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.wav").write_bytes(b"")
    (clip,) = load_clips(m)
    assert clip.audio == str((tmp_path / "audio" / "a.wav").resolve())
    assert clip.label == "3" and clip.speaker == "7" and clip.captions == ["x", "y"]
    assert clip.custom == {"extra": 1}
    assert clip.texts == ["x", "y"]


@pytest.mark.parametrize(
    "line, field",
    [
        ('{"audio": "a.wav"}', "id"),
        ('{"id": "a"}', "audio"),
        ('{"id": "a", "audio": "a.wav", "captions": "nope"}', "captions"),
        ('{"id": "a", "audio": "a.wav", "duration": "long"}', "duration"),
    ],
)
def test_jsonl_manifest_errors_name_line_and_field(tmp_path, line, field):
    m = _write(tmp_path / "m.jsonl", '{"id": "ok", "audio": "ok.wav"}\n' + line + "\n")
    (tmp_path / "ok.wav").write_bytes(b"")
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(ManifestError) as err:
        load_clips(m, strict=True)
    assert err.value.line == 2 and err.value.field == field
    assert "m.jsonl:2" in str(err.value)


def test_jsonl_bad_json_and_duplicates(tmp_path):
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_clips(_write(tmp_path / "a.jsonl", "{oops\n"), strict=True)
    dup = '{"id": "a", "audio": "a.wav"}\n' * 2
    (tmp_path / "a.wav").write_bytes(b"")
    with pytest.raises(ManifestError, match="duplicate id"):
        load_clips(_write(tmp_path / "b.jsonl", dup), strict=True)


def test_split_filter(tmp_path):
    rows = [{"id": str(i), "audio": f"{i}.wav", "split": s} for i, s in enumerate(["train", "test", "test"])]
    m = _write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    for i in range(3):
        (tmp_path / f"{i}.wav").write_bytes(b"")
    assert [c.id for c in load_clips(m, split="test")] == ["1", "2"]


def test_clotho_csv(tmp_path):
    (tmp_path / "evaluation").mkdir()
    csv = _write(tmp_path / "clotho_captions_evaluation.csv", 'file_name,caption_1,caption_2,caption_3,caption_4,caption_5\nA b.wav,one,two,"three, with comma",four,five\n')
    (clip,) = load_clips(csv)
    assert clip.id == "A b" and clip.split == "test"
    assert clip.audio == str(tmp_path / "evaluation" / "A b.wav")
    assert clip.captions[2] == "three, with comma" and len(clip.captions) == 5


def test_audiocaps_groups_captions_and_finds_files(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "abc_30.wav").write_bytes(b"")
    csv = _write(tmp_path / "test.csv", "audiocap_id,youtube_id,start_time,caption\n1,abc,30,a dog\n2,abc,30,a dog barks\n3,xyz,0,rain\n")
    clips = load_clips(csv)
    assert [c.id for c in clips] == ["abc_30", "xyz_0"]
    assert clips[0].captions == ["a dog", "a dog barks"] and clips[0].split == "test"
    assert clips[0].audio.endswith("abc_30.wav") and clips[0].start == 0.0


def test_audiocaps_missing_caption(tmp_path):
    csv = _write(tmp_path / "train.csv", "audiocap_id,youtube_id,start_time,caption\n1,abc,30,\n")
    with pytest.raises(ManifestError, match="caption"):
        load_clips(csv, strict=True)


def test_unknown_csv(tmp_path):
    with pytest.raises(ManifestError, match="unrecognised CSV header"):
        load_clips(_write(tmp_path / "x.csv", "a,b\n1,2\n"))


def test_folder_per_class_and_plain_folder(tmp_path, make_wav):
    import numpy as np

    w = np.zeros(100, np.float32)
    make_wav("classes/dog/1.wav", w)
    make_wav("classes/cat/2.flac", w)
    labels = {c.id: c.label for c in load_clips(tmp_path / "classes")}
    assert labels == {"cat/2.flac": "cat", "dog/1.wav": "dog"}
    make_wav("plain/x.wav", w)
    make_wav("plain/sub/y.wav", w)
    assert {c.label for c in load_clips(tmp_path / "plain")} == {None}


def test_real_manifests_load(shared_data):
    for name, n in [("nonverbal", 727), ("asterisk", 568), ("fsdd", 3000), ("emodb", 535)]:
        clips = load_clips(shared_data / name / "manifest.jsonl")
        assert len(clips) == n
    clotho = load_clips(shared_data / "clotho_sample" / "clotho_captions_evaluation.csv")
    assert len(clotho) == 7 and all(len(c.captions) == 5 for c in clotho)
    from pathlib import Path

    assert all(Path(c.audio).exists() for c in clotho)


def test_bad_rows_are_reported_by_line_and_the_rest_loads(tmp_path):
    """The sfx manifest's shape: captions lists, label, license, source; a bad row never stops the load."""
    (tmp_path / "a.ogg").write_bytes(b"")
    good = {"id": "ok", "audio": "a.ogg", "split": "train", "label": "dog barking", "captions": ["dog barking", "a dog barks"], "license": "CC0-1.0", "source": "x"}
    rows = [
        good,
        {**good, "id": "no-captions", "captions": []},
        {**good, "id": "bad-licence", "license": 7},
        {**good, "id": "missing-file", "audio": "gone.ogg"},
        {**good, "id": "ok2", "license": "GPL-2.0-or-later OR CC-BY-SA-2.0"},
    ]
    m = _write(tmp_path / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    clips = load_clips(m)
    assert [c.id for c in clips] == ["ok", "ok2"]
    assert clips[0].captions == ["dog barking", "a dog barks"] and clips[0].license == "CC0-1.0" and clips[0].source == "x"
    assert [(p.line, p.field) for p in clips.problems] == [(2, "captions"), (3, "license"), (4, "audio"), (6, None)]
    assert all(str(p).startswith(f"{m}:") for p in clips.problems)


def test_real_sfx_manifest_loads_with_licences(shared_data):
    from sonalign.data.licences import allows_shipped_weights

    clips = load_clips(shared_data / "sfx" / "manifest.jsonl")
    assert len(clips) == 1638 and not clips.problems
    assert {c.split for c in clips} == {"train", "val", "test", "zeroshot"}
    assert all(len(c.captions) >= 2 and c.license for c in clips)
    shippable = [c for c in clips if allows_shipped_weights(c.license)]
    assert 0 < len(shippable) < len(clips)
    assert not any(allows_shipped_weights(c.license) for c in clips if c.license.startswith(("GPL", "GFDL")) and " OR " not in c.license.upper())
