"""HTTP API and web page over an index (FastAPI).

Endpoints (all JSON unless said otherwise; errors are ``{"detail": "readable message"}``):

* ``GET /health`` - liveness, never needs the key.
* ``GET /search?q=TEXT&k=10&group=segment|file&path=FILTER`` - hits.
* ``POST /search`` - multipart upload, field ``file`` (WAV/FLAC/OGG...), form or query fields
  ``k``, ``group``, ``path``: query by example. Bodies over ``max_upload_bytes`` get 413.
* ``GET /segments/{segment_id}/audio`` - exactly that segment's span as a 16-bit WAV. The file is
  looked up by segment id in the index; the client never names a path.
* ``GET /recordings/{recording_id}/timeline?q=TEXT`` - similarity over time within one recording.
* ``GET /stats`` - counts, model, dims, index type.
* ``GET /`` - the web page; ``/static/*`` its files; ``/openapi.json`` and ``/docs`` - the schema.

API key: when ``api_key`` is set, every endpoint but ``/health``, the page, its static files and the
schema needs header ``X-API-Key: KEY`` (or ``?api_key=KEY``), else 401. The page takes the key from its
own URL (``http://host:port/?api_key=KEY``, then kept in the tab's sessionStorage and removed from the
address bar) or asks for it when the server answers 401, and sends it as the header.
"""

from __future__ import annotations

import hmac
import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonalign.audio.io import load_audio
from sonalign.errors import AudioError, ConfigError, IndexCorruptError
from sonalign.index.query import MAX_QUERY_CHARS, Searcher
from sonalign.index.store import IndexStore

log = logging.getLogger("sonalign.serve")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
#: Longest span /segments/{id}/audio will decode (seconds); segments are seconds long in practice.
MAX_SPAN_SECONDS = 600.0
_PUBLIC = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/favicon.ico")


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
) -> FastAPI:
    """Build the app. ``searcher``: a :class:`Searcher`, or a factory called once, lazily, with the
    store (or with no argument) - so encoders load on the first query, not at import."""
    state = _State(searcher, store)
    app = FastAPI(
        title="sonalign",
        description="Search audio collections by text; answers are files and time spans.",
        version=_version(),
    )
    app.add_middleware(_BodyLimit, limit=max_upload_bytes)

    if api_key:
        app.add_middleware(_ApiKey, key=api_key)  # added last = outermost: runs before the body is read

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
    @app.get("/health", tags=["meta"])
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/stats", tags=["meta"])
    def stats() -> dict[str, Any]:
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

    @app.get("/search", tags=["search"])
    def search_text(
        q: str = Query("", description=f"text query, 1..{MAX_QUERY_CHARS} characters"),
        k: int = Query(10, description=f"number of hits, 1..{max_k}"),
        group: str = Query("segment", description="'segment': best spans; 'file': best span per file"),
        path: str | None = Query(None, max_length=1000, description="only files whose path contains this (or matches it as a glob)"),
    ) -> dict[str, Any]:
        group_by_file = _group(group)
        _check_k(k, max_k)
        t0 = time.perf_counter()
        try:
            hits = state.searcher.search(q, k=k, group_by_file=group_by_file, path_filter=path or None)
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None
        return {"query": " ".join(q.split()), "k": k, "group": group, "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": [h.to_dict() for h in hits]}

    @app.post("/search", tags=["search"])
    async def search_audio(request: Request) -> dict[str, Any]:
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
        try:
            wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception:
            raise _ApiError(400, "could not decode the uploaded audio (send WAV, FLAC or OGG)") from None
        wave = wave.mean(axis=1)
        t0 = time.perf_counter()
        searcher = state.searcher
        if searcher.embed_audio is None:
            raise _ApiError(501, "query by audio is not available: this server has no audio encoder")
        try:
            hits = await _run_sync(lambda: searcher.search_audio(wave, int(sr), k=k, group_by_file=group_by_file, path_filter=path))
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None
        return {"query": getattr(upload, "filename", None) or "upload", "k": k, "group": group, "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": [h.to_dict() for h in hits]}

    @app.get("/segments/{segment_id:path}/audio", tags=["audio"], response_class=Response, responses={200: {"content": {"audio/wav": {}}}})
    def segment_audio(segment_id: str) -> Response:
        if len(segment_id) > 512:
            raise _ApiError(404, "no such segment")
        row = state.store.segment(segment_id)
        if row is None:
            raise _ApiError(404, f"no segment {segment_id!r} in the index")
        if row.duration > MAX_SPAN_SECONDS:
            raise _ApiError(413, f"segment is {row.duration:.0f} s long; at most {MAX_SPAN_SECONDS:.0f} s can be played")
        try:
            wave, sr = load_audio(row.path, start=row.start, duration=row.duration, allow_silent=True)
        except AudioError as exc:
            log.warning("audio for segment %s unavailable: %s", segment_id, exc)
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

    @app.get("/recordings/{recording_id:path}/timeline", tags=["search"])
    def timeline(recording_id: str, q: str = Query("", description="the text query")) -> dict[str, Any]:
        rec = state.store.recording(recording_id)
        if rec is None:
            raise _ApiError(404, f"no recording {recording_id!r} in the index")
        try:
            points = state.searcher.timeline(recording_id, q)
        except ValueError as exc:
            raise _ApiError(400, str(exc)) from None
        except KeyError:
            raise _ApiError(404, f"no recording {recording_id!r} in the index") from None
        scores = [p[2] for p in points]
        duration = rec.duration if rec.duration else (max((p[1] for p in points), default=0.0))
        return {
            "recording_id": recording_id,
            "path": rec.path,
            "duration": round(float(duration), 3),
            "min": round(min(scores), 5) if scores else None,
            "max": round(max(scores), 5) if scores else None,
            "points": [{"start": round(s, 3), "end": round(e, 3), "score": round(float(v), 5)} for s, e, v in points],
        }

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.sonalign = state
    return app


class _State:
    """Holds the store and the (lazily built) searcher."""

    def __init__(self, searcher: Any, store: IndexStore | None):
        self._lock = threading.Lock()
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


async def _run_sync(fn: Callable[[], Any]) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn)


def _is_public(path: str) -> bool:
    return path == "/" or path.startswith("/static/") or path in _PUBLIC


def _check_k(k: int, max_k: int) -> None:
    if not 1 <= k <= max_k:
        raise _ApiError(400, f"k must be between 1 and {max_k}, got {k}")


def _group(group: str) -> bool:
    if group not in ("segment", "file"):
        raise _ApiError(400, f"group must be 'segment' or 'file', got {group!r}")
    return group == "file"


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
) -> None:
    """Serve the index ``idx`` (a directory, opened read-only, or an open store) with uvicorn.

    ``searcher_factory(store) -> Searcher`` builds the searcher with the index's encoders (called on
    the first query); a ``"module:function"`` string is imported. Binds to localhost unless ``host``
    says otherwise; serving beyond it without ``api_key`` logs a warning.
    """
    import uvicorn

    if searcher_factory is None:
        raise ConfigError("run_server needs a searcher_factory(store) -> Searcher that embeds queries with the index's model")
    store = idx if isinstance(idx, IndexStore) else IndexStore.open(idx, readonly=True)
    factory = _resolve_factory(searcher_factory)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can search and play the audio", host)
    app = create_app(factory, store=store, api_key=api_key, max_upload_bytes=max_upload_bytes, max_k=max_k)
    uvicorn.run(app, host=host, port=int(port), log_level=log_level)


__all__ = ["create_app", "run_server"]
