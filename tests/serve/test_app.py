"""HTTP API: every endpoint, bad input (4xx with a JSON message), path traversal, uploads, API key."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from sonalign.index.query import Searcher
from sonalign.index.store import IndexStore, RecordingInfo
from sonalign.index.vectors import normalize
from sonalign.segments import Segment
from sonalign.serve.app import create_app

DIM = 16
SR = 8000


def hashed(text: str, dim: int = DIM) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"{dim}:{text}".encode()).digest()[:8], "little")
    return normalize(np.random.default_rng(seed).standard_normal(dim))[0]


def fake_text(texts):
    return np.stack([hashed(t) for t in texts])


def fake_audio(wave, sr):
    spec = np.abs(np.fft.rfft(wave))
    freq = int(round(np.argmax(spec) * sr / len(wave) / 100.0) * 100)
    return hashed(f"tone {freq}")[None, :]


def tone(freq: float, seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def build_store(root):
    """Two real WAV files: a.wav (6 s: 1 s segments, 'tone 400' at 2-3 s) and b.wav (4 s)."""
    audio = root / "audio"
    audio.mkdir()
    # a.wav: 400 Hz between 2 and 3 s, 1000 Hz elsewhere: the span's content is recognisable
    wave_a = tone(1000, 6.0)
    wave_a[2 * SR : 3 * SR] = tone(400, 1.0)
    sf.write(audio / "a.wav", wave_a, SR)
    sf.write(audio / "b.wav", tone(700, 4.0), SR)
    store = IndexStore.open(root / "idx", create=True, model="fake")
    rng = np.random.default_rng(0)
    for name, seconds in (("a", 6), ("b", 4)):
        segs = [Segment(f"{name}-{i:05d}", name, float(i), 1.0, custom={"kind": "speech" if (name, i) == ("b", 1) else "audio"}) for i in range(seconds)]
        vecs = rng.standard_normal((seconds, DIM)).astype(np.float32)
        if name == "a":
            vecs[2] = hashed("tone 400")
        transcripts = ["a man says hello" if s.custom["kind"] == "speech" else None for s in segs]
        store.upsert_recording(RecordingInfo(str(audio / f"{name}.wav"), f"h{name}", float(seconds), SR, id=name), segs, vecs, transcripts)
    store.commit()
    return store, wave_a


def local_client(app) -> TestClient:
    """A test client that calls the app as http://localhost (the app refuses other Host names)."""
    return TestClient(app, base_url="http://localhost")


@pytest.fixture
def setup(tmp_path):
    store, wave_a = build_store(tmp_path)
    searcher = Searcher(store, fake_text, embed_audio=fake_audio)
    yield store, searcher, wave_a, tmp_path
    store.close()


@pytest.fixture
def client(setup):
    store, searcher, _, _ = setup
    return local_client(create_app(searcher, store, max_upload_bytes=200_000, max_k=50))


def wav_bytes(wave: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV")
    return buf.getvalue()


def test_health_stats_page_and_schema(client):
    assert client.get("/health").json() == {"status": "ok"}
    stats = client.get("/stats").json()
    assert stats["recordings"] == 2 and stats["segments"] == 10 and stats["model"] == "fake" and stats["dim"] == DIM
    assert stats["index_type"] == "flat" and stats["limits"]["max_k"] == 50
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and 'id="q"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/segments/{segment_id}/audio", "/recordings/{recording_id}/timeline", "/stats", "/health"} <= set(schema["paths"])


def test_text_search(client):
    r = client.get("/search", params={"q": "tone 400", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "tone 400" and body["k"] == 3 and len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["segment_id"] == "a-00002" and top["start"] == 2.0 and top["end"] == 3.0 and top["recording_id"] == "a"
    assert top["path"].endswith("a.wav") and top["score"] > 0.99
    grouped = client.get("/search", params={"q": "tone 400", "k": 5, "group": "file"}).json()["hits"]
    assert [h["recording_id"] for h in grouped][0] == "a" and len(grouped) == 2
    filtered = client.get("/search", params={"q": "tone 400", "path": "b.wav"}).json()["hits"]
    assert {h["recording_id"] for h in filtered} == {"b"}
    speech = [h for h in client.get("/search", params={"q": "x", "k": 10}).json()["hits"] if h["kind"] == "speech"]
    assert speech[0]["transcript"] == "a man says hello"


@pytest.mark.parametrize(
    ("params", "status", "match"),
    [
        ({}, 400, "empty"),
        ({"q": "   "}, 400, "empty"),
        ({"q": "x" * 501}, 400, "too long"),
        ({"q": "dog", "k": 0}, 400, "k must be between 1 and 50"),
        ({"q": "dog", "k": 51}, 400, "k must be between 1 and 50"),
        ({"q": "dog", "k": "ten"}, 422, "k"),
        ({"q": "dog", "group": "folder"}, 400, "group"),
        ({"q": "dog", "path": "p" * 1001}, 422, "path"),
    ],
)
def test_search_bad_input(client, params, status, match):
    r = client.get("/search", params=params)
    assert r.status_code == status
    detail = r.json()["detail"]
    assert isinstance(detail, str) and match in detail


def test_segment_audio_is_exactly_the_span(client, setup):
    _, _, wave_a, _ = setup
    r = client.get("/segments/a-00002/audio")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.headers["x-segment-start"] == "2.000" and r.headers["x-segment-end"] == "3.000"
    wave, sr = sf.read(io.BytesIO(r.content), dtype="float32")
    assert sr == SR and len(wave) == SR
    np.testing.assert_allclose(wave, wave_a[2 * SR : 3 * SR], atol=1e-3)
    # the span's content: a 400 Hz tone (its neighbours are 1000 Hz)
    assert abs(np.argmax(np.abs(np.fft.rfft(wave))) * sr / len(wave) - 400) < 5


@pytest.mark.parametrize(
    "url",
    [
        "/segments/..%2F..%2Fetc%2Fpasswd/audio",
        "/segments/../../etc/passwd/audio",
        "/segments/%2Fetc%2Fpasswd/audio",
        "/segments/..%5C..%5Cwindows/audio",
        "/segments/a-00002%00/audio",
        "/segments/nope/audio",
        "/segments/" + "x" * 600 + "/audio",
        "/static/../app.py",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/%2e%2e/index/store.py",
    ],
)
def test_path_traversal_and_unknown_segments_are_404(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert b"import" not in r.content and b"root:" not in r.content


def test_ids_with_slashes_work(setup):
    """Recording ids may contain '/' (e.g. relative paths); they are database keys, never file paths."""
    store, searcher, _, root = setup
    segs = [Segment("field/c-00000", "field/c", 0.0, 1.0)]
    store.upsert_recording(RecordingInfo(str(root / "audio" / "a.wav") + "#copy", "hc", 6.0, SR, id="field/c"), segs, hashed("tone 900")[None, :])
    store.commit()
    # the copy's path does not exist on disk: the audio endpoint must say so, not read anything else
    client = local_client(create_app(searcher, store))
    assert client.get("/segments/field%2Fc-00000/audio").status_code == 404
    tl = client.get("/recordings/field%2Fc/timeline", params={"q": "tone 900"})
    assert tl.status_code == 200 and tl.json()["recording_id"] == "field/c"
    hit = client.get("/search", params={"q": "tone 900", "k": 1}).json()["hits"][0]
    assert hit["segment_id"] == "field/c-00000"


def test_segment_whose_file_vanished_is_404_with_message(client, setup):
    _, _, _, root = setup
    (root / "audio" / "b.wav").unlink()
    r = client.get("/segments/b-00001/audio")
    assert r.status_code == 404 and "not available" in r.json()["detail"]


def test_timeline(client):
    r = client.get("/recordings/a/timeline", params={"q": "tone 400"})
    assert r.status_code == 200
    body = r.json()
    assert body["recording_id"] == "a" and body["duration"] == 6.0 and len(body["points"]) == 6
    assert max(body["points"], key=lambda p: p["score"])["start"] == 2.0
    assert body["max"] == max(p["score"] for p in body["points"])
    assert client.get("/recordings/zzz/timeline", params={"q": "x"}).status_code == 404
    bad = client.get("/recordings/a/timeline", params={"q": ""})
    assert bad.status_code == 400 and "empty" in bad.json()["detail"]
    assert client.get("/recordings/..%2F..%2Fetc/timeline", params={"q": "x"}).status_code == 404


def test_audio_upload_search(client):
    query = wav_bytes(tone(400, 1.0))
    r = client.post("/search", files={"file": ("q.wav", query, "audio/wav")}, data={"k": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["segment_id"] == "a-00002" and len(body["hits"]) == 2 and body["query"] == "q.wav"
    r = client.post("/search?k=1&group=file", files={"file": ("q.wav", query, "audio/wav")})
    assert r.status_code == 200 and len(r.json()["hits"]) == 1


def test_audio_upload_bad_input(client):
    too_big = wav_bytes(np.zeros(150_000, np.float32))  # 300 kB > 200 kB limit
    r = client.post("/search", files={"file": ("big.wav", too_big, "audio/wav")})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    r = client.post("/search", files={"file": ("x.wav", b"not audio at all", "audio/wav")})
    assert r.status_code == 400 and "decode" in r.json()["detail"]
    r = client.post("/search", files={"file": ("x.wav", b"", "audio/wav")})
    assert r.status_code == 400
    r = client.post("/search", data={"k": "3"})
    assert r.status_code == 400 and "file" in r.json()["detail"]
    r = client.post("/search", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400
    r = client.post("/search", files={"file": ("q.wav", wav_bytes(tone(400, 1.0)), "audio/wav")}, data={"k": "500"})
    assert r.status_code == 400 and "k must" in r.json()["detail"]


def test_upload_without_content_length_is_cut_at_the_limit(setup):
    store, searcher, _, _ = setup
    client = local_client(create_app(searcher, store, max_upload_bytes=1000))

    def chunks():
        for _ in range(100):
            yield b"x" * 100

    r = client.post("/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413


def test_audio_search_without_audio_encoder_is_501(setup):
    store, _, _, _ = setup
    client = local_client(create_app(Searcher(store, fake_text), store))
    r = client.post("/search", files={"file": ("q.wav", wav_bytes(tone(400, 1.0)), "audio/wav")})
    assert r.status_code == 501 and "not available" in r.json()["detail"]


def test_api_key(setup):
    store, searcher, _, _ = setup
    client = local_client(create_app(searcher, store, api_key="s3cret"))
    # public: health, page, static files, schema
    for url in ("/health", "/", "/static/app.js", "/openapi.json"):
        assert client.get(url).status_code == 200, url
    for url in ("/search?q=x", "/stats", "/segments/a-00002/audio", "/recordings/a/timeline?q=x"):
        r = client.get(url)
        assert r.status_code == 401 and "API key" in r.json()["detail"], url
        assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.get(url, headers={"X-API-Key": "s3cret"}).status_code == 200, url
    sep = "&"
    assert client.get("/search?q=x" + sep + "api_key=s3cret").status_code == 200
    assert client.post("/search", files={"file": ("q.wav", wav_bytes(tone(400, 1.0)), "audio/wav")}).status_code == 401


def test_searcher_factory_is_called_lazily_once(setup):
    store, searcher, _, _ = setup
    calls = []

    def factory(s):
        calls.append(s)
        return searcher

    client = local_client(create_app(factory, store))
    assert client.get("/stats").status_code == 200 and calls == []
    assert client.get("/search?q=tone 400").status_code == 200
    assert client.get("/search?q=tone 400").status_code == 200
    assert calls == [store]
    with pytest.raises(TypeError):
        create_app(lambda s: searcher)  # a factory needs the store
