"""Searcher: text and audio queries, fusion with transcript vectors, grouping, filters, timeline."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from sonalign.errors import ConfigError
from sonalign.index.query import Hit, Searcher
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.index.vectors import normalize
from sonalign.segments import Segment

DIM = 16
TDIM = 8


def hashed(text: str, dim: int = DIM) -> np.ndarray:
    """Deterministic text -> unit vector (the fake embedder)."""
    seed = int.from_bytes(hashlib.sha256(f"{dim}:{text}".encode()).digest()[:8], "little")
    return normalize(np.random.default_rng(seed).standard_normal(dim))[0]


def fake_text(texts: list[str]) -> np.ndarray:
    return np.stack([hashed(t) for t in texts])


def fake_transcript_text(texts: list[str]) -> np.ndarray:
    return np.stack([hashed(t, TDIM) for t in texts])


def fake_audio(wave: np.ndarray, sr: int) -> np.ndarray:
    """Audio 'embedding': the hashed vector of the wave's dominant frequency, rounded to 100 Hz."""
    spec = np.abs(np.fft.rfft(wave))
    freq = int(round(np.argmax(spec) * sr / len(wave) / 100.0) * 100)
    return hashed(f"tone {freq}")[None, :]


def noise(seed: int, dim: int = DIM, scale: float = 0.35) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32) * scale / np.sqrt(dim)


@pytest.fixture
def store(tmp_path):
    """Three recordings. 'dog barking' lives in park.wav 10-12 s (and weaker in street.wav);
    'hello world' is spoken in talk.wav 4-6 s (transcript vector only, its sound says little)."""
    s = IndexStore.open(tmp_path / "idx", create=True, model="fake")
    rng = np.random.default_rng(0)

    def add(name: str, folder: str, n: int, special: dict[int, np.ndarray], speech: dict[int, tuple[str, np.ndarray]] | None = None):
        segs, vecs = [], []
        tr = np.full((n, TDIM), np.nan, np.float32)
        transcripts = [None] * n
        for i in range(n):
            kind = "speech" if speech and i in speech else "audio"
            segs.append(Segment(f"{name}-{i:05d}", name, i * 2.0, 2.0, custom={"kind": kind}))
            vecs.append(special.get(i, rng.standard_normal(DIM).astype(np.float32)))
            if speech and i in speech:
                transcripts[i], tr[i] = speech[i][0], speech[i][1]
        info = RecordingInfo(f"{folder}/{name}.wav", f"h-{name}", duration=n * 2.0, sample_rate=16000, id=name)
        s.upsert_recording(info, segs, np.stack(vecs), transcripts, {"transcript": tr})

    dog = hashed("dog barking")
    add("park", "/data/outdoor", 20, {5: dog + noise(1), 6: 0.6 * dog + noise(2, scale=1.0)})
    add("street", "/data/outdoor", 15, {3: 0.5 * dog + noise(3, scale=1.0), 7: hashed("tone 400")})
    add("talk", "/data/indoor", 10, {2: hashed("tone 1000")}, speech={2: ("hello world, how are you", hashed("hello world", TDIM)), 3: ("the weather", hashed("weather", TDIM))})
    s.commit()
    yield s
    s.close()


def test_text_search_finds_the_span(store):
    searcher = Searcher(store, fake_text)
    hits = searcher.search("dog barking", k=5)
    assert len(hits) == 5 and all(isinstance(h, Hit) for h in hits)
    top = hits[0]
    assert (top.segment_id, top.path, top.start, top.end, top.recording_id, top.kind) == ("park-00005", "/data/outdoor/park.wav", 10.0, 12.0, "park", "audio")
    assert top.score > 0.9 and top.score == top.acoustic_score and top.transcript_score is None
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {h.segment_id for h in hits[:3]} == {"park-00005", "park-00006", "street-00003"}
    d = top.to_dict()
    assert d["segment_id"] == "park-00005" and d["start"] == 10.0 and isinstance(d["score"], float)
    # whitespace is normalised; k bounds
    assert searcher.search("  dog   barking ", k=1)[0].segment_id == "park-00005"
    assert len(searcher.search("dog barking", k=1000)) == 45


def test_group_by_file_gives_best_span_per_recording(store):
    searcher = Searcher(store, fake_text)
    hits = searcher.search("dog barking", k=3, group_by_file=True)
    assert [h.recording_id for h in hits][:2] == ["park", "street"]
    assert hits[0].segment_id == "park-00005" and hits[1].segment_id == "street-00003"
    assert len({h.recording_id for h in hits}) == len(hits) == 3
    assert len(searcher.search("dog barking", k=10, group_by_file=True)) == 3  # only three files


def test_path_filter(store):
    searcher = Searcher(store, fake_text)
    hits = searcher.search("dog barking", k=5, path_filter="street")
    assert hits[0].segment_id == "street-00003" and all(h.recording_id == "street" for h in hits)
    assert all(h.path.startswith("/data/indoor/") for h in searcher.search("dog barking", k=5, path_filter="/data/indoor/*"))
    assert searcher.search("dog barking", k=5, path_filter="no-such-folder") == []


def test_fusion_with_transcript_vectors(store):
    plain = Searcher(store, fake_text)
    fused = Searcher(store, fake_text, embed_text_for_transcripts=fake_transcript_text, fusion_weight=0.5)
    assert plain.search("hello world", k=1)[0].segment_id != "talk-00002"
    top = fused.search("hello world", k=3)[0]
    assert top.segment_id == "talk-00002" and top.kind == "speech"
    assert top.transcript == "hello world, how are you"
    assert top.transcript_score == pytest.approx(1.0, abs=1e-5)
    assert top.score == pytest.approx(0.5 * top.acoustic_score + 0.5 * top.transcript_score, abs=1e-6)
    # non-speech segments keep their acoustic score
    dog = fused.search("dog barking", k=1)[0]
    assert dog.segment_id == "park-00005" and dog.transcript_score is None
    # weight 0 disables fusion
    assert Searcher(store, fake_text, embed_text_for_transcripts=fake_transcript_text, fusion_weight=0.0).search("hello world", k=1)[0].transcript_score is None
    with pytest.raises(ValueError):
        Searcher(store, fake_text, fusion_weight=1.5)


def test_validation_errors(store):
    searcher = Searcher(store, fake_text)
    for bad, match in (("", "empty"), ("   ", "empty"), ("x" * 501, "too long")):
        with pytest.raises(ValueError, match=match):
            searcher.search(bad)
    for k in (0, -1, 1001, 2.5, "3", True):
        with pytest.raises(ValueError, match="k must"):
            searcher.search("dog", k=k)
    with pytest.raises(ValueError):
        searcher.search(None)  # type: ignore[arg-type]
    assert len(searcher.search("x" * 500, k=1)) == 1


def test_encoder_dimension_mismatch_is_a_config_error(store):
    searcher = Searcher(store, lambda texts: np.ones((len(texts), 7), np.float32))
    with pytest.raises(ConfigError, match="7-d"):
        searcher.search("dog")


def test_encoder_dict_output_is_accepted(store):
    searcher = Searcher(store, lambda texts: {"embedding": fake_text(texts)})
    assert searcher.search("dog barking", k=1)[0].segment_id == "park-00005"


def test_search_audio(store):
    searcher = Searcher(store, fake_text, embed_audio=fake_audio)
    sr = 8000
    t = np.arange(sr) / sr
    wave = (0.3 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)
    assert searcher.search_audio(wave, sr, k=2)[0].segment_id == "street-00007"
    stereo = np.stack([wave, wave], axis=1)
    assert searcher.search_audio(stereo, sr, k=1)[0].segment_id == "street-00007"
    tone_1k = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    assert searcher.search_audio(tone_1k, sr, k=1, group_by_file=True)[0].recording_id == "talk"
    with pytest.raises(ValueError, match="empty"):
        searcher.search_audio(np.zeros(0, np.float32), sr)
    with pytest.raises(ValueError, match="NaN"):
        searcher.search_audio(wave * np.nan, sr)
    with pytest.raises(ValueError, match="too long"):
        searcher.search_audio(np.ones(sr * 121, np.float32), sr)
    with pytest.raises(ValueError, match="sample rate"):
        searcher.search_audio(wave, 0)
    with pytest.raises(NotImplementedError):
        Searcher(store, fake_text).search_audio(wave, sr)


def test_timeline(store):
    searcher = Searcher(store, fake_text, embed_text_for_transcripts=fake_transcript_text)
    tl = searcher.timeline("park", "dog barking")
    assert len(tl) == 20
    assert [p[0] for p in tl] == [i * 2.0 for i in range(20)]
    assert all(e - s == pytest.approx(2.0) for s, e, _ in tl)
    best = max(range(20), key=lambda i: tl[i][2])
    assert best == 5
    # the same fused score as search
    hit = searcher.search("dog barking", k=1)[0]
    assert tl[5][2] == pytest.approx(hit.score, abs=1e-5)
    talk = searcher.timeline("talk", "hello world")
    assert max(range(10), key=lambda i: talk[i][2]) == 1 + 1  # talk-00002 (4-6 s) wins through its transcript
    with pytest.raises(KeyError):
        searcher.timeline("nope", "dog")
    with pytest.raises(ValueError):
        searcher.timeline("park", "")


def test_empty_store_returns_no_hits(tmp_path):
    s = IndexStore.open(tmp_path / "idx", create=True)
    searcher = Searcher(s, fake_text)
    assert searcher.search("anything") == []
    s.close()


def test_searcher_over_hnsw_and_deletions(tmp_path):
    s = IndexStore.open(tmp_path / "idx", create=True, hnsw_threshold=100)
    rng = np.random.default_rng(5)
    for r in range(6):
        n = 40
        segs = [Segment(f"r{r}-{i:05d}", f"r{r}", float(i), 1.0) for i in range(n)]
        vecs = rng.standard_normal((n, DIM)).astype(np.float32)
        if r == 4:
            vecs[7] = hashed("siren") + noise(9)
        s.upsert_recording(RecordingInfo(f"/x/r{r}.wav", "h", id=f"r{r}"), segs, vecs)
    s.commit()
    assert s.index().kind == "hnsw"
    searcher = Searcher(s, fake_text)
    assert searcher.search("siren", k=1)[0].segment_id == "r4-00007"
    s.remove_recording("/x/r4.wav")
    s.commit()
    hits = searcher.search("siren", k=10)
    assert "r4" not in {h.recording_id for h in hits} and len(hits) == 10
    assert len(searcher.search("siren", k=5, group_by_file=True)) == 5
    s.close()
