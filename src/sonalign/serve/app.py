"""HTTP API and web page over an index (FastAPI).

Endpoints (all JSON unless said otherwise; errors are ``{"detail": "readable message"}``):

* ``GET /health`` - liveness, never needs the key.
* ``GET /search?q=TEXT&k=10&group=segment|file&path=FILTER`` - hits.
* ``POST /search`` - multipart upload, field ``file`` (WAV/FLAC/OGG/MP3), form or query fields
  ``k``, ``group``, ``path``: query by example. Bodies over ``max_upload_bytes`` get 413; a clip
  longer than the searcher's ``max_audio_seconds`` gets 400 without being decoded whole.
* ``GET /segments/{segment_id}/audio`` - exactly that segment's span as a 16-bit WAV. The file is
  looked up by segment id in the index; the client never names a path.
* ``GET /recordings/{recording_id}/timeline?q=TEXT`` - similarity over time within one recording.
* ``GET /stats`` - counts, model, dims, index type.
* ``GET /`` - the web page; ``/static/*`` its files; ``/openapi.json`` - the schema; ``/docs`` - a
  page listing every endpoint, drawn from the schema by ``static/docs.js`` (no CDN, works offline).

Paths in hits and timelines: ``paths="relative"`` (the default) shows them relative to the indexed
folder (the index's meta ``root``, else the common folder of all its recordings; a file outside it
shows its name only), ``"absolute"`` as stored. Error details clip any text the client sent to
``MAX_ECHO`` characters.

API key: when ``api_key`` is set, every endpoint but ``/health``, the page, ``/docs``, their static
files and the schema needs header ``X-API-Key: KEY`` (or ``?api_key=KEY``), else 401. An empty or
blank key is a ConfigError, never "no key". The page takes the key from its own URL
(``http://host:port/?api_key=KEY``, then kept in the tab's sessionStorage and removed from the address
bar) or asks for it when the server answers 401, and sends it as the header.

Hardening: requests whose ``Host`` is not in ``allowed_hosts`` get a plain-text 400 (Starlette's
TrustedHostMiddleware; the default is the localhost names, which defeats DNS rebinding), and every
response carries ``SECURITY_HEADERS`` (a Content-Security-Policy allowing only this origin,
``nosniff``, no framing, no referrer). :func:`run_server` adds deadlines for slow clients, a
concurrency cap and an access log that prints ``api_key=***`` (see :mod:`sonalign.serve.server`).
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonalign.audio.io import load_audio, load_audio_query
from sonalign.errors import AudioError, ConfigError, IndexCorruptError
from sonalign.index.query import MAX_QUERY_CHARS, Searcher
from sonalign.index.store import IndexStore

log = logging.getLogger("sonalign.serve")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
#: Longest span /segments/{id}/audio will decode (seconds); segments are seconds long in practice.
MAX_SPAN_SECONDS = 600.0
_PUBLIC = ("/health", "/openapi.json", "/docs", "/favicon.ico")
#: Host names every server answers to (Starlette compares them without the port; IPv6 in brackets).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_ANY_INTERFACE = ("", "0.0.0.0", "::")
PATH_MODES = ("relative", "absolute")
#: Longest piece of client text (an id, a value, a file name) repeated in an error detail.
MAX_ECHO = 80
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_UPLOAD_SCHEMA = {  # POST /search reads its multipart form itself; this documents it
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the audio clip: WAV, FLAC, OGG or MP3"},
                        "k": {"type": "integer", "default": 10, "description": "number of hits"},
                        "group": {"type": "string", "enum": ["segment", "file"], "default": "segment", "description": "'segment': best spans; 'file': best span per file"},
                        "path": {"type": "string", "description": "only files whose path contains this (or matches it as a glob)"},
                    },
                }
            }
        },
    }
}


class _ApiError(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


class _BodyLimit:
    """ASGI middleware: reject request bodies over ``limit`` bytes with 413, before they are parsed."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = -1
                if size > self.limit:
                    await _send_json(send, 413, f"upload too large ({size} bytes; at most {self.limit})")
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, f"upload too large (more than {self.limit} bytes)")


class _TooLarge(Exception):
    pass


class _ApiKey:
    """ASGI middleware: 401 unless header ``X-API-Key`` or query ``api_key`` matches (public paths exempt)."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"x-api-key":
                given = value
                break
        if not given:
            from urllib.parse import parse_qs

            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key") or [""])[0].encode("utf-8")
        if not hmac.compare_digest(given, self.key):
            await _send_json(send, 401, "missing or invalid API key: send header X-API-Key (or ?api_key=)")
            return
        await self.app(scope, receive, send)


class _SecurityHeaders:
    """ASGI middleware: add ``SECURITY_HEADERS`` to every response (a response's own value wins)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_json(send: Send, status: int, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(
    searcher: Searcher | Callable[[], Searcher] | Callable[[IndexStore], Searcher],
    store: IndexStore | None = None,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    max_k: int = 100,
    *,
    allowed_hosts: Sequence[str] | None = None,
    paths: str = "relative",
) -> FastAPI:
    """Build the app. ``searcher``: a :class:`Searcher`, or a factory called once, lazily, with the
    store (or with no argument) - so encoders load on the first query, not at import.

    ``api_key``: None for no key; an empty or blank one is a ConfigError. ``allowed_hosts``: the
    ``Host`` names answered (default ``LOCAL_HOSTS``; ``"*.example.org"`` matches subdomains, ``"*"``
    any host). ``paths``: ``"relative"`` or ``"absolute"``, see the module docstring.
    """
    _check_api_key(api_key)
    _check_paths(paths)
    hosts = [_host_name(h) for h in (LOCAL_HOSTS if allowed_hosts is None else allowed_hosts)]
    state = _State(searcher, store, paths)
    app = FastAPI(
        title="sonalign",
        description="Search audio collections by text; answers are files and time spans.",
        version=_version(),
        docs_url=None,
        redoc_url=None,
    )
    # Added last = outermost: security headers, then the Host check, then the key (before any body is read).
    app.add_middleware(_BodyLimit, limit=max_upload_bytes)
    if api_key is not None:
        app.add_middleware(_ApiKey, key=api_key)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(_ApiError)
    async def api_error(_: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = list(err.get("loc", ()))
            if loc and loc[0] in ("query", "body", "path", "header"):
                loc = loc[1:]
            where = ".".join(str(p) for p in loc)
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(IndexCorruptError)
    async def corrupt(_: Request, exc: IndexCorruptError) -> JSONResponse:
        log.error("index damaged: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(ConfigError)
    async def config_error(_: Request, exc: ConfigError) -> JSONResponse:
        log.error("configuration: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    # ------------------------------------------------------------------ endpoints
    @app.get("/health", tags=["meta"], summary="Liveness")
    def health() -> dict[str, Any]:
        """Always ``{"status": "ok"}``; never needs the API key."""
        return {"status": "ok"}

    @app.get("/stats", tags=["meta"], summary="What the index holds")
    def stats() -> dict[str, Any]:
        """Counts of recordings and segments, the model, vector size, index type and the server's limits."""
        s = state.store.stats()
        return {
            "recordings": s["counts"]["recordings"],
            "segments": s["counts"]["segments"],
            "kinds": s["counts"]["kinds"],
            "model": s["model"],
            "dim": s["dim"],
            "index_type": s["index_type"],
            "index": s["index"],
            "extra": s["extra"],
            "generation": s["generation"],
            "audio_search": state.audio_search(),
            "limits": {"max_k": max_k, "max_query_chars": MAX_QUERY_CHARS, "max_upload_bytes": max_upload_bytes},
        }

    @app.get("/search", tags=["search"], summary="Search by text")
    def search_text(
        q: str = Query("", description=f"text query, 1..{MAX_QUERY_CHARS} characters"),
        k: int = Query(10, description=f"number of hits, 1..{max_k}"),
        group: str = Query("segment", description="'segment': best spans; 'file': best span per file"),
        path: str | None = Query(None, max_length=1000, description="only files whose path contains this (or matches it as a glob)"),
    ) -> dict[str, Any]:
        """The segments (or, with ``group=file``, the files) that best match the words in ``q``."""
        group_by_file = _group(group)
        _check_k(k, max_k)
        t0 = time.perf_counter()
        try:
            hits = state.searcher.search(q, k=k, group_by_file=group_by_file, path_filter=path or None)
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None
        return {"query": " ".join(q.split()), "k": k, "group": group, "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": state.hits(hits)}

    @app.post("/search", tags=["search"], summary="Search by example audio", openapi_extra=_UPLOAD_SCHEMA)
    async def search_audio(request: Request) -> dict[str, Any]:
        """The segments that sound most like the uploaded clip. ``k``, ``group`` and ``path`` may also
        be given in the query string. Clips longer than the server's limit are refused (400)."""
        try:
            form = await request.form(max_files=1, max_fields=10)
        except _TooLarge:
            raise
        except Exception as exc:  # malformed multipart body
            raise _ApiError(400, f"expected a multipart form with an audio 'file' field ({type(exc).__name__})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise _ApiError(400, "missing the audio 'file' field (multipart/form-data)")
        data = await upload.read(max_upload_bytes + 1)
        await form.close()
        if len(data) > max_upload_bytes:
            raise _ApiError(413, f"upload too large (at most {max_upload_bytes} bytes)")
        if not data:
            raise _ApiError(400, "the uploaded file is empty")
        params = {**dict(request.query_params), **{k: v for k, v in form.items() if isinstance(v, str)}}
        try:
            k = int(params.get("k", 10))
        except ValueError:
            raise _ApiError(400, "k must be an integer") from None
        _check_k(k, max_k)
        group = str(params.get("group", "segment"))
        group_by_file = _group(group)
        path = params.get("path") or None
        name = _clip(getattr(upload, "filename", None) or "upload")
        t0 = time.perf_counter()
        searcher = state.searcher
        if searcher.embed_audio is None:
            raise _ApiError(501, "query by audio is not available: this server has no audio encoder")

        def run() -> list[Any]:
            wave, sr = load_audio_query(data, searcher.max_audio_seconds, name=name)
            return searcher.search_audio(wave, sr, k=k, group_by_file=group_by_file, path_filter=path)

        try:
            hits = await _run_sync(run)
        except AudioError as exc:
            raise _ApiError(400, str(exc)) from None
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None
        return {"query": name, "k": k, "group": group, "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": state.hits(hits)}

    @app.get(
        "/segments/{segment_id:path}/audio", tags=["audio"], summary="Play a segment", response_class=Response, responses={200: {"content": {"audio/wav": {}}}}
    )
    def segment_audio(segment_id: str = PathParam(description="a hit's segment_id")) -> Response:
        """Exactly the segment's span of its recording, as a 16-bit WAV (headers ``X-Segment-Start``/``-End``)."""
        row = state.store.segment(segment_id) if len(segment_id) <= 512 else None
        if row is None:
            raise _ApiError(404, f"no segment {_clip(segment_id)!r} in the index")
        if row.duration > MAX_SPAN_SECONDS:
            raise _ApiError(413, f"segment is {row.duration:.0f} s long; at most {MAX_SPAN_SECONDS:.0f} s can be played")
        try:
            wave, sr = load_audio(row.path, start=row.start, duration=row.duration, allow_silent=True)
        except AudioError as exc:
            log.warning("audio for segment %s unavailable: %s", _clip(segment_id), exc)
            raise _ApiError(404, "the audio of this segment is not available (file moved, changed or unreadable)") from None
        buf = io.BytesIO()
        sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
        return Response(
            buf.getvalue(),
            media_type="audio/wav",
            headers={
                "Cache-Control": "private, max-age=300",
                "X-Segment-Start": f"{row.start:.3f}",
                "X-Segment-End": f"{row.end:.3f}",
                "Content-Disposition": f'inline; filename="{_safe_name(segment_id)}.wav"',
            },
        )

    @app.get("/recordings/{recording_id:path}/timeline", tags=["search"], summary="Similarity over a recording")
    def timeline(recording_id: str = PathParam(description="a hit's recording_id"), q: str = Query("", description="the text query")) -> dict[str, Any]:
        """How well every segment of one recording matches ``q``, in time order."""
        missing = _ApiError(404, f"no recording {_clip(recording_id)!r} in the index")
        rec = state.store.recording(recording_id)
        if rec is None:
            raise missing
        try:
            points = state.searcher.timeline(recording_id, q)
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None
        except KeyError:
            raise missing from None
        scores = [p[2] for p in points]
        duration = rec.duration if rec.duration else (max((p[1] for p in points), default=0.0))
        return {
            "recording_id": recording_id,
            "path": state.shown_path(rec.path),
            "duration": round(float(duration), 3),
            "min": round(min(scores), 5) if scores else None,
            "max": round(max(scores), 5) if scores else None,
            "points": [{"start": round(s, 3), "end": round(e, 3), "score": round(float(v), 5)} for s, e, v in points],
        }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.sonalign = state
    return app


class _State:
    """Holds the store, the (lazily built) searcher and how paths are shown."""

    def __init__(self, searcher: Any, store: IndexStore | None, paths: str = "relative"):
        self._lock = threading.Lock()
        self.paths = paths
        self._root: tuple[int, str | None] | None = None  # (store generation, indexed root)
        if isinstance(searcher, Searcher):
            self._searcher: Searcher | None = searcher
            self._factory = None
            self.store = store or searcher.store
        else:
            if not callable(searcher):
                raise TypeError("searcher must be a Searcher or a factory returning one")
            if store is None:
                raise TypeError("a store is needed when a searcher factory is given")
            self._searcher, self._factory, self.store = None, searcher, store

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            with self._lock:
                if self._searcher is None:
                    factory = self._factory
                    try:
                        made = factory(self.store)  # type: ignore[misc]
                    except TypeError:
                        made = factory()  # type: ignore[misc]
                    if not isinstance(made, Searcher):
                        raise ConfigError("the searcher factory did not return a Searcher")
                    self._searcher = made
        return self._searcher

    def audio_search(self) -> bool | None:
        return None if self._searcher is None else self._searcher.embed_audio is not None

    def hits(self, hits: list[Any]) -> list[dict[str, Any]]:
        """Hits as JSON objects, their paths shown as :meth:`shown_path` says."""
        return [{**h.to_dict(), "path": self.shown_path(h.path)} for h in hits]

    def shown_path(self, path: str) -> str:
        """``path`` as stored, or (``paths="relative"``) relative to the indexed root; outside it, the file name."""
        if self.paths == "absolute":
            return path
        generation = self.store.generation
        if self._root is None or self._root[0] != generation:
            self._root = (generation, _indexed_root(self.store))
        root = self._root[1]
        try:
            return str(PurePath(path).relative_to(root)) if root else PurePath(path).name
        except ValueError:
            return PurePath(path).name


def _indexed_root(store: IndexStore) -> str | None:
    """The folder the index was built from: meta ``root``, else the common folder of all recordings."""
    root = store.meta().get("root")
    if root:
        return str(root)
    folders = {os.path.dirname(p) for p in store.recordings()}
    try:
        return os.path.commonpath(sorted(folders)) if folders else None
    except ValueError:  # a mix of absolute and relative paths
        return None


async def _run_sync(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def _is_public(path: str) -> bool:
    return path == "/" or path.startswith("/static/") or path in _PUBLIC


def _check_k(k: int, max_k: int) -> None:
    if not 1 <= k <= max_k:
        raise _ApiError(400, f"k must be between 1 and {max_k}, got {_clip(str(k))}")


def _group(group: str) -> bool:
    if group not in ("segment", "file"):
        raise _ApiError(400, f"group must be 'segment' or 'file', got {_clip(group)!r}")
    return group == "file"


def _clip(text: str, limit: int = MAX_ECHO) -> str:
    """Client-supplied ``text`` cut to ``limit`` characters (ending in "…") before an error repeats it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_api_key(api_key: str | None) -> None:
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key is empty: give a non-blank key (or none, to serve without one)")


def _check_paths(paths: str) -> None:
    if paths not in PATH_MODES:
        raise ConfigError(f"paths must be 'relative' or 'absolute', got {_clip(str(paths))!r}")


def read_api_key_file(path: str | Path) -> str:
    """The API key kept in ``path``: its one line, without the trailing newline. ConfigError if the
    file is missing, unreadable, blank or holds more than one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such API key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the API key file ({getattr(exc, 'strerror', None) or exc})") from None
    key = text.rstrip("\r\n")
    if not key.strip():
        raise ConfigError(f"{path}: the API key file is empty")
    if "\n" in key or "\r" in key:
        raise ConfigError(f"{path}: the API key file must hold one line (the key)")
    return key


def trusted_hosts(host: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names a server bound to ``host`` answers: ``LOCAL_HOSTS``, ``host`` itself when it
    is a specific address, and ``extra``; bound to every interface (``0.0.0.0``, ``::``) without
    ``extra``, also this machine's host name."""
    names = list(LOCAL_HOSTS)
    if host not in _ANY_INTERFACE:
        names.append(host)
    elif not extra:
        names.append(socket.gethostname())
    return list(dict.fromkeys(_host_name(n) for n in [*names, *extra]))


def _host_name(name: str) -> str:
    """A host name or pattern as TrustedHostMiddleware compares it (lower case, IPv6 in brackets); ConfigError if malformed."""
    text = str(name).strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        if ipaddress.ip_address(text).version == 6:
            return f"[{text}]"
    except ValueError:
        pass
    bad_wildcard = "*" in text[1:] or (text.startswith("*") and text != "*" and not text.startswith("*."))
    if not text or bad_wildcard or any(ch in text for ch in "/:@[] "):
        raise ConfigError(f"allowed host {_clip(str(name))!r} is not a host name (give e.g. 'search.example.org', '*.example.org' or '*', without a port)")
    return text


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:100] or "segment"


def _version() -> str:
    try:
        from sonalign import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "0"


def _resolve_factory(spec: Any) -> Any:
    """``"module:function"`` -> the function; anything else is returned as it is."""
    if isinstance(spec, str):
        import importlib

        module, _, name = spec.partition(":")
        if not module or not name:
            raise ConfigError(f"searcher factory must look like 'package.module:function', got {spec!r}")
        return getattr(importlib.import_module(module), name)
    return spec


def run_server(
    idx: str | Path | IndexStore,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    *,
    searcher_factory: Callable[[IndexStore], Searcher] | str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    max_k: int = 100,
    log_level: str = "info",
    allowed_hosts: Sequence[str] = (),
    paths: str = "relative",
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    limit_concurrency: int | None = None,
) -> None:
    """Serve the index ``idx`` (a directory, opened read-only, or an open store) with uvicorn.

    ``searcher_factory(store) -> Searcher`` builds the searcher with the index's encoders (called on
    the first query); a ``"module:function"`` string is imported. Binds to localhost unless ``host``
    says otherwise; serving beyond it without ``api_key`` logs a warning. The server answers the
    ``Host`` names of :func:`trusted_hosts` (``host``, ``allowed_hosts``). ``header_timeout``,
    ``body_timeout`` and ``limit_concurrency`` default to those of :mod:`sonalign.serve.server`.
    """
    import uvicorn

    from sonalign.serve import server

    _check_api_key(api_key)
    _check_paths(paths)
    if searcher_factory is None:
        raise ConfigError("run_server needs a searcher_factory(store) -> Searcher that embeds queries with the index's model")
    hosts = trusted_hosts(host, allowed_hosts)
    store = idx if isinstance(idx, IndexStore) else IndexStore.open(idx, readonly=True)
    factory = _resolve_factory(searcher_factory)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can search and play the audio", host)
    app = create_app(factory, store=store, api_key=api_key, max_upload_bytes=max_upload_bytes, max_k=max_k, allowed_hosts=hosts, paths=paths)
    limits = {"header_timeout": header_timeout, "body_timeout": body_timeout, "limit_concurrency": limit_concurrency}
    config = server.server_config(app, host, port, log_level=log_level, **{k: v for k, v in limits.items() if v is not None})
    logging.getLogger("uvicorn.error").info("answering requests for hosts %s (add more with --allowed-host)", ", ".join(hosts))
    uvicorn.Server(config).run()


__all__ = ["LOCAL_HOSTS", "SECURITY_HEADERS", "create_app", "read_api_key_file", "run_server", "trusted_hosts"]
