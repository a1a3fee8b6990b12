"""The shared machinery: post-processing on synthetic activity arrays, framing, registry, contract."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import soundfile as sf

from sonalign.audio.io import stream_audio
from sonalign.errors import AudioError, ConfigError
from sonalign.segmenters import SEGMENTERS, get_segmenter, list_segmenters
from sonalign.segmenters.base import (
    FrameEnergies,
    Framer,
    frame_mean_square,
    wave_blocks,
)
from sonalign.segmenters.postprocess import (
    hysteresis,
    make_segments,
    postprocess_activity,
    runs,
    split_span,
)

HOP = 0.01


def activity(total_frames: int, *ranges: tuple[float, float]) -> np.ndarray:
    """Boolean activity (10 ms frames) with the given second ranges active."""
    a = np.zeros(total_frames, dtype=bool)
    for s, e in ranges:
        a[int(round(s / HOP)) : int(round(e / HOP))] = True
    return a


def post(a, **kw):
    kw.setdefault("frame_hop", HOP)
    kw.setdefault("total_duration", a.size * HOP)
    return postprocess_activity(a, **kw)


def approx_spans(got, want, tol=1e-6):
    assert len(got) == len(want), (got, want)
    for (gs, ge), (ws, we) in zip(got, want):
        assert abs(gs - ws) <= tol and abs(ge - we) <= tol, (got, want)


# ----------------------------------------------------------------------------- runs / hysteresis


def test_runs_finds_start_and_end_exclusive():
    s, e = runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=bool))
    assert s.tolist() == [1, 4, 7] and e.tolist() == [3, 5, 8]
    s, e = runs(np.zeros(5, dtype=bool))
    assert s.size == 0 and e.size == 0


def test_hysteresis_needs_onset_and_holds_until_offset():
    scores = np.array([0.0, 0.4, 0.6, 0.45, 0.4, 0.1, 0.4, 0.45, 0.3, 0.9])
    got = hysteresis(scores, on=0.5, off=0.35)
    # first bump reaches 0.6 -> active while >= 0.35 (extends back to 0.4); second never reaches 0.5
    assert got.tolist() == [False, True, True, True, True, False, False, False, False, True]
    with pytest.raises(ValueError):
        hysteresis(scores, on=0.3, off=0.5)


# ----------------------------------------------------------------------------- post-processing


def test_runs_become_spans_in_seconds():
    a = activity(1000, (1.0, 2.0), (5.0, 5.5))
    approx_spans(post(a), [(1.0, 2.0), (5.0, 5.5)])


def test_frame_offset_shifts_cells_and_edges_extend_to_file_bounds():
    a = activity(100, (0.0, 0.2), (0.5, 0.6), (0.9, 1.0))
    got = post(a, frame_offset=0.0075, total_duration=1.003)
    approx_spans(got, [(0.0, 0.2075), (0.5075, 0.6075), (0.9075, 1.003)])


def test_gaps_shorter_than_merge_gap_are_merged():
    a = activity(1000, (1.0, 2.0), (2.2, 3.0), (3.5, 4.0))
    approx_spans(post(a, merge_gap=0.3), [(1.0, 3.0), (3.5, 4.0)])
    approx_spans(post(a, merge_gap=0.6), [(1.0, 4.0)])
    approx_spans(post(a, merge_gap=0.1), [(1.0, 2.0), (2.2, 3.0), (3.5, 4.0)])


def test_short_runs_dropped_after_merging():
    a = activity(1000, (1.0, 1.05), (1.1, 1.15), (3.0, 3.05), (5.0, 6.0))
    # the two 50 ms blips 50 ms apart merge into 150 ms (kept); the lone one is dropped
    approx_spans(post(a, merge_gap=0.1, min_duration=0.1), [(1.0, 1.15), (5.0, 6.0)])


def test_short_runs_extended_symmetrically_and_clipped():
    a = activity(500, (0.0, 0.05), (2.0, 2.1), (4.97, 5.0))
    got = post(a, min_duration=0.5, short="extend")
    approx_spans(got, [(0.0, 0.5), (1.8, 2.3), (4.5, 5.0)])
    for s, e in got:
        assert e - s >= 0.5 - 1e-9


def test_padding_clipped_to_file_and_overlaps_merged():
    a = activity(1000, (0.05, 1.0), (1.3, 2.0), (9.9, 10.0))
    got = post(a, padding=0.2)
    approx_spans(got, [(0.0, 2.2), (9.7, 10.0)])


def test_long_runs_split_into_near_equal_pieces_within_max():
    a = activity(3000, (2.0, 27.0))
    got = post(a, max_duration=10.0)
    assert len(got) == 3
    lengths = [e - s for s, e in got]
    assert max(lengths) <= 10.0 + 1e-9
    assert max(lengths) - min(lengths) < 1e-6  # no scores: exact equal split
    assert got[0][0] == pytest.approx(2.0) and got[-1][1] == pytest.approx(27.0)
    for (s0, e0), (s1, e1) in zip(got, got[1:]):
        assert e0 == pytest.approx(s1)


def test_split_moves_cut_to_lowest_score_nearby():
    a = activity(2200, (1.0, 21.0))
    scores = np.full(a.size, -20.0)
    scores[1160:1170] = -50.0  # a quiet dip at 11.6-11.7 s, 0.6 s after the ideal cut (11.0)
    got = post(a, max_duration=12.0, scores=scores, split_search=1.0)
    assert len(got) == 2
    assert 11.6 <= got[0][1] <= 11.7
    assert got[0][1] == got[1][0]
    # out of reach: a search radius of 0.3 s cannot get there -> cut at the lowest frame within reach
    got = post(a, max_duration=12.0, scores=scores, split_search=0.3)
    assert abs(got[0][1] - 11.0) <= 0.3 + 1e-9


def test_split_never_exceeds_max_even_when_dip_is_far():
    # run of 19.9 s, max 10 -> 2 pieces of 9.95, slack 0.05: the cut may move at most 0.025 s
    scores = np.zeros(2000)
    scores[100:200] = -100.0
    pieces = split_span(0.0, 19.9, 10.0, scores=scores, frame_hop=HOP, search=5.0)
    assert len(pieces) == 2
    assert all(e - s <= 10.0 + 1e-9 for s, e in pieces)


def test_postprocess_invariants_on_random_activity():
    rng = np.random.default_rng(7)
    for trial in range(50):
        n = int(rng.integers(1, 3000))
        a = rng.random(n) < rng.uniform(0.05, 0.95)
        a = np.repeat(a[: max(1, n // 10)], 10)[:n]  # runs of >= 10 frames
        total = n * HOP
        kw = dict(
            merge_gap=float(rng.uniform(0, 0.5)),
            min_duration=float(rng.uniform(0, 0.5)),
            max_duration=float(rng.uniform(0.5, 5.0)),
            padding=float(rng.uniform(0, 0.3)),
            short=str(rng.choice(["drop", "extend"])),
            scores=rng.normal(size=n),
        )
        got = post(a, **kw)
        assert got == post(a, **kw)  # deterministic
        for s, e in got:
            assert 0.0 <= s < e <= total + 1e-9
            assert e - s <= kw["max_duration"] + 1e-9
        for (s0, e0), (s1, e1) in zip(got, got[1:]):
            assert e0 <= s1 + 1e-9
        if not a.any():
            assert got == []


def test_bad_short_policy_rejected():
    with pytest.raises(ConfigError):
        post(activity(10, (0, 0.05)), short="merge-everything")


# ----------------------------------------------------------------------------- segments


def test_make_segments_ids_in_time_order_and_rounded_times():
    segs = make_segments([(0.1, 0.30000000000000004), (1.0 / 3, 2.0)], "rec", lambda s, e: {"kind": "sound"})
    assert [s.id for s in segs] == ["rec-00000", "rec-00001"]
    assert segs[0].start == 0.1 and segs[0].duration == 0.2
    assert segs[1].start == 0.333333 and segs[1].duration == pytest.approx(1.666667)
    assert all(s.channel == 0 and s.recording_id == "rec" and s.custom == {"kind": "sound"} for s in segs)


# ----------------------------------------------------------------------------- framing


def test_framer_is_independent_of_block_boundaries():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_007).astype(np.float32)
    whole = Framer(400, 160)
    ref = [whole.push(x)]
    ref_tail = whole.tail()
    ref_frames = np.concatenate(ref)
    for sizes in ([1] * 50 + [10_000], [399, 1, 160, 5000], [4447] * 3):
        f = Framer(400, 160)
        parts, pos = [], 0
        for size in sizes + [len(x)]:
            parts.append(f.push(x[pos : pos + size]))
            pos += size
            if pos >= len(x):
                break
        frames = np.concatenate(parts)
        assert np.array_equal(frames, ref_frames)
        tail = f.tail()
        assert [t.tolist() for t in tail] == [t.tolist() for t in ref_tail]
    assert len(ref_frames) + len(ref_tail) == -(-len(x) // 160)  # ceil(total / hop) frames


def test_frame_energies_equal_any_split_and_ignore_dc():
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    a = FrameEnergies(400, 160)
    a.push(x)
    ms_a, total = a.finish()
    b = FrameEnergies(400, 160)
    for i in range(0, x.size, 777):
        b.push(x[i : i + 777])
    ms_b, _ = b.finish()
    assert total == x.size and np.array_equal(ms_a, ms_b)
    assert np.allclose(frame_mean_square(x[:400] + 0.3), frame_mean_square(x[:400]), rtol=1e-5)
    assert ms_a[:50].mean() == pytest.approx(0.01, rel=0.1)


def test_wave_blocks_mirror_stream_audio(tmp_path):
    rng = np.random.default_rng(2)
    x = (0.2 * rng.standard_normal(44_100 * 3 + 123)).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, x, 44_100, subtype="FLOAT")
    for target in (44_100, 16_000):
        from_file = list(stream_audio(path, target, 0.7))
        from_wave = list(wave_blocks(x, 44_100, target, 0.7))
        assert [b.size for b in from_file] == [b.size for b in from_wave]
        assert all(np.array_equal(a, b) for a, b in zip(from_file, from_wave))


# ----------------------------------------------------------------------------- registry and contract


def test_registry_lists_all_with_descriptions():
    assert set(SEGMENTERS) == {"fixed", "energy", "speech"}
    desc = list_segmenters()
    assert set(desc) == set(SEGMENTERS) and all(isinstance(d, str) and len(d) > 20 for d in desc.values())
    for name in SEGMENTERS:
        seg = get_segmenter(name)
        assert seg.name == name


def test_get_segmenter_rejects_unknown_names_options_and_values():
    with pytest.raises(ConfigError, match="unknown segmenter"):
        get_segmenter("vad9000")
    with pytest.raises(ConfigError, match="wndow"):
        get_segmenter("fixed", wndow=3)
    for name, opts in [
        ("fixed", {"window": 0}),
        ("fixed", {"hop": -1}),
        ("energy", {"min_duration": 5, "max_duration": 2}),
        ("energy", {"frame_hop": 0.05, "frame_length": 0.025}),
        ("energy", {"short": "keep"}),
        ("speech", {"threshold": 1.5}),
        ("speech", {"threshold": 0.3, "neg_threshold": 0.5}),
        ("speech", {"padding": -0.1}),
    ]:
        with pytest.raises(ConfigError):
            get_segmenter(name, **opts)


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_settings_cover_every_output_changing_option(name):
    cls = SEGMENTERS[name]
    settings = cls().settings()
    json.dumps(settings)  # usable in cache keys
    assert settings["segmenter"] == name and "version" in settings
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "block_seconds")]
    for p in params:
        assert p in settings, f"{name}: option {p} missing from settings()"
    assert cls().settings() == settings
    # changing an option changes the settings
    first = params[0]
    changed = cls(**{first: (settings[first] or 0.5) * 0.9}).settings()
    assert changed != settings


@pytest.mark.parametrize("name", ["fixed", "energy"])
def test_segment_wave_rejects_unusable_audio(name):
    seg = get_segmenter(name)
    with pytest.raises(AudioError, match="rec7"):
        seg.segment_wave(np.zeros(0, dtype=np.float32), 16000, "rec7")
    with pytest.raises(AudioError, match="silent"):
        seg.segment_wave(np.zeros(16000, dtype=np.float32), 16000, "rec7")
    bad = np.ones(16000, dtype=np.float32)
    bad[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        seg.segment_wave(bad, 16000, "rec7")
