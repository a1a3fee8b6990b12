import pytest

from sonalign.errors import ManifestError
from sonalign.segments import Segment, read_segments, segment_id, write_segments


def test_roundtrip_and_ids(tmp_path):
    segs = [Segment(segment_id("rec", i), "rec", i * 1.5, 1.25, text="hi" if i else None, custom={"kind": "speech"}) for i in range(3)]
    write_segments(segs, tmp_path / "s.jsonl")
    back = list(read_segments(tmp_path / "s.jsonl"))
    assert back == segs
    assert back[2].id == "rec-00002" and back[2].end == pytest.approx(4.25)


def test_bad_segment_lines_name_the_field(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"id": "a", "recording_id": "r", "start": 0, "duration": -1}\n')
    with pytest.raises(ManifestError) as err:
        list(read_segments(p))
    assert err.value.field == "duration" and err.value.line == 1
    p.write_text('{"id": "a", "start": 0, "duration": 1}\n')
    with pytest.raises(ManifestError, match="recording_id"):
        list(read_segments(p))
