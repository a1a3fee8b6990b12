"""Hardening of the HTTP server: long uploads, API keys, Host check, security headers, /docs offline,
slow clients, relative paths and clipped error details."""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from sonalign.errors import ConfigError
from sonalign.index.query import Searcher
from sonalign.serve import security
from sonalign.serve.app import STATIC_DIR, create_app, run_server
from sonalign.serve.security import SECURITY_HEADERS, read_api_key_file, trusted_hosts
from sonalign.serve.server import LIMIT_CONCURRENCY, RedactApiKey, redact_query, server_config

from .test_app import client, fake_audio, fake_text, local_client, setup, tone, wav_bytes  # noqa: F401 (fixtures)


def silent_flac(seconds: int, sr: int, channels: int) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=sr, channels=channels, format="FLAC") as f:
        block = np.zeros((sr * 60, channels), np.float32)
        for _ in range(seconds // 60):
            f.write(block)
    return buf.getvalue()


@pytest.fixture(scope="module")
def hour_of_silence() -> bytes:
    """The issue's upload: one hour of 48 kHz stereo silence, well under the upload cap as FLAC."""
    return silent_flac(3600, 48000, 2)


# ----------------------------------------------------------------------------- long audio uploads


def test_long_audio_upload_is_refused_without_decoding_it(setup, hour_of_silence, monkeypatch):
    """Refused from the header: no read of the clip's frames happens (the old code decoded all of it)."""
    store, _, _, _ = setup
    searcher = Searcher(store, fake_text, embed_audio=fake_audio, max_audio_seconds=120.0)
    reads: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        if frames < 0 or frames > 120 * self.samplerate + 1:
            raise AssertionError(f"decoding {frames} frames of a clip over the limit")
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    client = local_client(create_app(searcher, store, max_upload_bytes=len(hour_of_silence) + 10_000))
    r = client.post("/search", files={"file": ("hour.flac", hour_of_silence, "audio/flac")})
    assert r.status_code == 400
    assert r.json()["detail"] == "hour.flac: audio query is too long (3600 s; at most 120 s)"
    assert reads == []


def test_upload_limit_is_the_searchers_max_audio_seconds(setup):
    store, _, _, _ = setup
    client = local_client(create_app(Searcher(store, fake_text, embed_audio=fake_audio, max_audio_seconds=2.0), store))
    short = client.post("/search", files={"file": ("q.wav", wav_bytes(tone(400, 1.5)), "audio/wav")})
    assert short.status_code == 200, short.text
    long = client.post("/search", files={"file": ("q.wav", wav_bytes(tone(400, 3.0)), "audio/wav")})
    assert long.status_code == 400 and "at most 2 s" in long.json()["detail"]


# ----------------------------------------------------------------------------- API keys


@pytest.mark.parametrize("key", ["", "   ", "\n"])
def test_empty_api_key_is_refused_not_ignored(setup, key):
    store, searcher, _, _ = setup
    with pytest.raises(ConfigError, match="API key is empty"):
        create_app(searcher, store, api_key=key)
    with pytest.raises(ConfigError, match="API key is empty"):
        run_server(store, api_key=key, searcher=lambda s: searcher)


def test_api_key_file(tmp_path):
    good = tmp_path / "key"
    good.write_text("s3cret\n")
    assert read_api_key_file(good) == "s3cret"
    (tmp_path / "crlf").write_bytes(b"s3cret\r\n")
    assert read_api_key_file(tmp_path / "crlf") == "s3cret"
    for name, content, why in [("empty", "", "is empty"), ("blank", " \n", "is empty"), ("two", "a\nb\n", "one line")]:
        (tmp_path / name).write_text(content)
        with pytest.raises(ConfigError, match=why) as err:
            read_api_key_file(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name) + ": ")
    with pytest.raises(ConfigError, match="no such API key file"):
        read_api_key_file(tmp_path / "missing")


def test_redact_query():
    assert redact_query("/search?q=dog&api_key=s3cret&k=3") == "/search?q=dog&api_key=***&k=3"
    assert redact_query("/?api_key=s3cret") == "/?api_key=***"
    assert redact_query("/search?api%5Fkey=s3cret") == "/search?api%5Fkey=***"  # the server decodes names too
    assert redact_query("/search?q=api_key=x") == "/search?q=api_key=x"
    assert redact_query("/health") == "/health"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", "/?api_key=s3cret", "1.1", 200), None)
    assert RedactApiKey().filter(record) and "s3cret" not in record.getMessage() and "/?api_key=***" in record.getMessage()


# ----------------------------------------------------------------------------- Host check


@pytest.mark.parametrize(
    ("host", "status"),
    [("localhost", 200), ("localhost:8000", 200), ("127.0.0.1:1234", 200), ("[::1]:8000", 200), ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.2", 400)],
)
def test_host_header_must_be_local_by_default(client, host, status):
    assert client.get("/health", headers={"host": host}).status_code == status


def test_trusted_hosts(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "Archive-Box")
    local = ["localhost", "127.0.0.1", "[::1]"]
    assert trusted_hosts("127.0.0.1") == local
    assert trusted_hosts("192.168.1.5") == [*local, "192.168.1.5"]
    assert trusted_hosts("fe80::1") == [*local, "[fe80::1]"]
    assert trusted_hosts("0.0.0.0") == [*local, "archive-box"]
    assert trusted_hosts("::") == [*local, "archive-box"]
    assert trusted_hosts("0.0.0.0", ["Search.Example.org", "*.lab.example"]) == [*local, "search.example.org", "*.lab.example"]
    for bad in ["", "example.org:8000", "a.*.example", "*example.org", "http://example.org"]:
        with pytest.raises(ConfigError, match="not a host name"):
            trusted_hosts("127.0.0.1", [bad])


def test_allowed_hosts_option(setup):
    store, searcher, _, _ = setup
    app = create_app(searcher, store, allowed_hosts=trusted_hosts("0.0.0.0", ["search.example.org"]))
    client = local_client(app)
    assert client.get("/health", headers={"host": "search.example.org"}).status_code == 200
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400
    open_app = local_client(create_app(searcher, store, allowed_hosts=["*"]))
    assert open_app.get("/health", headers={"host": "anything.example"}).status_code == 200


# ----------------------------------------------------------------------------- headers, page, /docs


def test_security_headers_on_every_response(setup):
    store, searcher, _, _ = setup
    client = local_client(create_app(searcher, store, api_key="k", max_upload_bytes=100))
    responses = [
        client.get("/"),
        client.get("/docs"),
        client.get("/static/app.js"),
        client.get("/health"),
        client.get("/search?q=x", headers={"X-API-Key": "k"}),
        client.get("/search?q=x"),  # 401
        client.get("/nope", headers={"X-API-Key": "k"}),  # 404
        client.get("/health", headers={"host": "evil.example"}),  # 400 from the Host check
        client.post("/search", content=b"x" * 200, headers={"X-API-Key": "k"}),  # 413
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 401, 404, 400, 413]
    for r in responses:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (r.url, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp


@pytest.mark.parametrize("page", ["index.html", "docs.html"])
def test_pages_work_under_the_content_security_policy(page):
    """No inline script, style or handler (the CSP forbids them); every resource comes from /static/."""
    html = (STATIC_DIR / page).read_text()
    assert "<style" not in html and not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html)
    for tag in re.findall(r"<script[^>]*>", html):
        assert re.search(r'src="/static/[a-z]+\.js"', tag), tag
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/") or url == "data:,", url  # no CDN, works offline
    for script in STATIC_DIR.glob("*.js"):
        code = script.read_text()
        assert "innerHTML" not in code and "eval(" not in code and "setAttribute(\"style\"" not in code, script.name
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    if "createObjectURL" in (STATIC_DIR / "app.js").read_text():  # the player plays blob: URLs
        assert re.search(r"media-src [^;]*blob:", csp)


def test_docs_page_is_served_locally(setup):
    store, searcher, _, _ = setup
    client = local_client(create_app(searcher, store, api_key="k"))
    docs = client.get("/docs")  # public, like the schema it reads
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "cdn" not in docs.text.lower() and "http" not in docs.text.replace('http-equiv', '')
    assert '<script src="/static/docs.js"' in docs.text and client.get("/static/docs.js").status_code == 200
    assert "/openapi.json" in client.get("/static/docs.js").text
    assert client.get("/redoc").status_code == 401 and client.get("/redoc", headers={"X-API-Key": "k"}).status_code == 404
    schema = client.get("/openapi.json").json()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    assert operations and all(op.get("summary") and op.get("description") for op in operations)
    upload = schema["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in upload:  # a component of the schema, as docs.js resolves it
        upload = schema["components"]["schemas"][upload["$ref"].rsplit("/", 1)[-1]]
    assert upload["required"] == ["file"] and {"file", "k", "group", "path"} <= set(upload["properties"])


# ----------------------------------------------------------------------------- paths and echoed input


def test_paths_relative_to_the_indexed_root(setup):
    store, searcher, _, root = setup
    relative = local_client(create_app(searcher, store))
    absolute = local_client(create_app(searcher, store, paths="absolute"))
    q = {"q": "tone 400", "k": 1}
    assert relative.get("/search", params=q).json()["hits"][0]["path"] == "a.wav"  # common folder: root/audio
    assert relative.get("/recordings/a/timeline", params=q).json()["path"] == "a.wav"
    assert absolute.get("/search", params=q).json()["hits"][0]["path"] == str(root / "audio" / "a.wav")
    assert absolute.get("/recordings/a/timeline", params=q).json()["path"] == str(root / "audio" / "a.wav")
    store.set_meta("root", str(root))  # what `sonalign index` records
    store.commit()
    assert relative.get("/search", params=q).json()["hits"][0]["path"] == "audio/a.wav"
    store.set_meta("root", str(root / "elsewhere"))  # a file outside the root shows its name only
    store.commit()
    assert relative.get("/search", params=q).json()["hits"][0]["path"] == "a.wav"
    with pytest.raises(ConfigError, match="paths must be"):
        create_app(searcher, store, paths="full")


def test_error_details_clip_client_text(client):
    long_id = "x" * 60_000
    for url in (f"/recordings/{long_id}/timeline?q=x", f"/segments/{long_id}/audio", f"/segments/{'y' * 300}/audio"):
        r = client.get(url)
        assert r.status_code == 404 and len(r.json()["detail"]) < 200 and "…" in r.json()["detail"], url
    r = client.get("/search", params={"q": "x", "group": "g" * 10_000})
    assert r.status_code == 400 and len(r.json()["detail"]) < 200
    r = client.get("/search", params={"q": "x", "k": "9" * 1000})
    assert r.status_code in (400, 422) and len(r.json()["detail"]) < 200
    name = "n" * 1000 + ".wav"
    bad = client.post("/search", files={"file": (name, b"not audio", "audio/wav")})
    assert bad.status_code == 400 and len(bad.json()["detail"]) < 300 and "decode" in bad.json()["detail"]
    ok = client.post("/search", files={"file": (name, wav_bytes(tone(400, 1.0)), "audio/wav")})
    assert ok.status_code == 200 and len(ok.json()["query"]) <= security.MAX_ECHO


# ----------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(setup):
    """Start a real uvicorn server (the config run_server uses) on a free loopback port."""
    import uvicorn

    store, searcher, _, _ = setup
    started: list = []

    def start(**options):
        port = free_port()
        app = create_app(searcher, store, api_key=options.pop("api_key", None))
        srv = uvicorn.Server(server_config(app, "127.0.0.1", port, timeout_graceful_shutdown=1, **options))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        started.append((srv, thread))
        return port, srv

    yield start
    for srv, thread in started:
        srv.should_exit = True
        thread.join(timeout=10)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends); fails after ``seconds``."""
    sock.settimeout(seconds)
    t0 = time.monotonic()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept a slow connection open for more than {seconds} s")
    return time.monotonic() - t0


def test_slow_clients_are_disconnected(live):
    port, srv = live(header_timeout=0.5, body_timeout=0.5, log_level="warning")
    assert srv.config.limit_concurrency == LIMIT_CONCURRENCY
    with socket.create_connection(("127.0.0.1", port)) as sock:  # half a request line, then nothing
        sock.sendall(b"GET /health HT")
        closed_within(sock, 5.0)
    with socket.create_connection(("127.0.0.1", port)) as sock:  # headers, then a trickle of body
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n--b")
        closed_within(sock, 5.0)
    with socket.create_connection(("127.0.0.1", port)) as sock:  # a full request is answered; a stalled next one is cut
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sock.settimeout(5.0)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        closed_within(sock, 5.0)


def test_access_log_never_shows_the_key(live):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    port, _ = live(api_key="s3cret", log_level="info")
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    try:
        for target in ("/search?q=tone&api_key=s3cret", "/?api_key=s3cret"):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
                sock.settimeout(5.0)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
                closed_within(sock, 5.0)
    finally:
        access.removeHandler(handler)
    assert len(lines) == 2 and all("api_key=***" in line and "s3cret" not in line for line in lines), lines
