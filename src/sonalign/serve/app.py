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

Hardening (Host check, security headers, body limit): see :mod:`sonalign.serve.security`.
:func:`run_server` adds deadlines for slow clients, a concurrency cap and an access log that prints
``api_key=***`` (see :mod:`sonalign.serve.server`).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal

import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from sonalign.audio.io import load_audio, load_audio_query
from sonalign.errors import AudioError, ConfigError, IndexCorruptError
from sonalign.index.query import MAX_QUERY_CHARS, Searcher
from sonalign.index.store import IndexStore
from sonalign.serve.security import LOCAL_HOSTS, check_api_key, clip, harden, host_name, trusted_hosts

log = logging.getLogger("sonalign.serve")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
#: Longest span /segments/{id}/audio will decode (seconds); segments are seconds long in practice.
MAX_SPAN_SECONDS = 600.0
PATH_MODES = ("relative", "absolute")
Group = Literal["segment", "file"]
GROUP_HELP = "'segment': best spans; 'file': best span per file"
PATH_HELP = "only files whose path contains this (or matches it as a glob)"
MAX_PATH_FILTER = 1000
SearcherSource = Searcher | Callable[[IndexStore], Searcher]


def create_app(
    searcher: SearcherSource,
    store: IndexStore | None = None,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    max_k: int = 100,
    *,
    allowed_hosts: Sequence[str] | None = None,
    paths: str = "relative",
) -> FastAPI:
    """Build the app. ``searcher``: a :class:`Searcher`, or a function of the store that builds one,
    called once, lazily (e.g. :meth:`Searcher.for_store`) - so encoders load on the first query, not at import.

    ``api_key``: None for no key; an empty or blank one is a ConfigError. ``allowed_hosts``: the
    ``Host`` names answered (default ``LOCAL_HOSTS``; ``"*.example.org"`` matches subdomains, ``"*"``
    any host). ``paths``: ``"relative"`` or ``"absolute"``, see the module docstring.
    """
    check_api_key(api_key)
    _check_paths(paths)
    state = _State(searcher, store, paths)
    app = FastAPI(
        title="sonalign",
        description="Search audio collections by text; answers are files and time spans.",
        version=_version(),
        docs_url=None,
        redoc_url=None,
    )
    harden(app, api_key=api_key, max_upload_bytes=max_upload_bytes,
           allowed_hosts=[host_name(h) for h in (LOCAL_HOSTS if allowed_hosts is None else allowed_hosts)])

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        refused = [_refused_value(err, max_k) for err in exc.errors()]
        parts = [text or _validation_text(err) for text, err in zip(refused, exc.errors(), strict=True)]
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=400 if any(refused) else 422)

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
        k: int = Query(10, ge=1, le=max_k, description=f"number of hits, 1..{max_k}"),
        group: Group = Query("segment", description=GROUP_HELP),
        path: str | None = Query(None, max_length=MAX_PATH_FILTER, description=PATH_HELP),
    ) -> dict[str, Any]:
        """The segments (or, with ``group=file``, the files) that best match the words in ``q``."""
        t0 = time.perf_counter()
        try:
            hits = state.searcher.search(q, k=k, group_by_file=group == "file", path_filter=path or None)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"query": " ".join(q.split()), "k": k, "group": group, "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": state.hits(hits)}

    @app.post("/search", tags=["search"], summary="Search by example audio", form_limits={"max_files": 1, "max_fields": 10})
    async def search_audio(
        file: UploadFile = File(description="the audio clip: WAV, FLAC, OGG or MP3"),
        k_form: int | None = Form(None, alias="k", ge=1, le=max_k, description=f"number of hits, 1..{max_k} (default 10)"),
        group_form: Group | None = Form(None, alias="group", description=f"{GROUP_HELP} (default 'segment')"),
        path_form: str | None = Form(None, alias="path", max_length=MAX_PATH_FILTER, description=PATH_HELP),
        k_query: int | None = Query(None, alias="k", ge=1, le=max_k, include_in_schema=False),
        group_query: Group | None = Query(None, alias="group", include_in_schema=False),
        path_query: str | None = Query(None, alias="path", max_length=MAX_PATH_FILTER, include_in_schema=False),
    ) -> dict[str, Any]:
        """The segments that sound most like the uploaded clip. ``k``, ``group`` and ``path`` may also
        be given in the query string. Clips longer than the server's limit are refused (400)."""
        k = _first(k_form, k_query, 10)
        group = _first(group_form, group_query, "segment")
        path = path_form or path_query or None
        data = await file.read()
        if not data:
            raise HTTPException(400, "the uploaded file is empty")
        name = clip(file.filename or "upload")
        t0 = time.perf_counter()
        searcher = state.searcher
        if searcher.embed_audio is None:
            raise HTTPException(501, "query by audio is not available: this server has no audio encoder")

        def run() -> list[Any]:
            wave, sr = load_audio_query(data, searcher.max_audio_seconds, name=name)
            return searcher.search_audio(wave, sr, k=k, group_by_file=group == "file", path_filter=path)

        try:
            hits = await run_in_threadpool(run)
        except (AudioError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        return {"query": name, "k": k, "group": group, "took_ms": round((time.perf_counter() - t0) * 1000, 2), "hits": state.hits(hits)}

    @app.get(
        "/segments/{segment_id:path}/audio", tags=["audio"], summary="Play a segment", response_class=Response, responses={200: {"content": {"audio/wav": {}}}}
    )
    def segment_audio(segment_id: str = PathParam(description="a hit's segment_id")) -> Response:
        """Exactly the segment's span of its recording, as a 16-bit WAV (headers ``X-Segment-Start``/``-End``)."""
        row = state.store.segment(segment_id) if len(segment_id) <= 512 else None
        if row is None:
            raise HTTPException(404, f"no segment {clip(segment_id)!r} in the index")
        if row.duration > MAX_SPAN_SECONDS:
            raise HTTPException(413, f"segment is {row.duration:.0f} s long; at most {MAX_SPAN_SECONDS:.0f} s can be played")
        try:
            wave, sr = load_audio(row.path, start=row.start, duration=row.duration, allow_silent=True)
        except AudioError as exc:
            log.warning("audio for segment %s unavailable: %s", clip(segment_id), exc)
            raise HTTPException(404, "the audio of this segment is not available (file moved, changed or unreadable)") from None
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
        missing = HTTPException(404, f"no recording {clip(recording_id)!r} in the index")
        rec = state.store.recording(recording_id)
        if rec is None:
            raise missing
        try:
            points = state.searcher.timeline(recording_id, q)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
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


def _refused_value(err: Mapping[str, Any], max_k: int) -> str | None:
    """The message for a request FastAPI refused that the API answers with 400, as it did before
    FastAPI checked it: a ``k`` outside 1..max_k, a ``group`` that is neither choice, no audio ``file``.
    None for the rest (malformed values: 422)."""
    field, kind = str((err.get("loc") or ("",))[-1]), err.get("type")
    if field == "k" and kind in ("greater_than_equal", "less_than_equal"):
        return f"k must be between 1 and {max_k}, got {clip(str(err.get('input')))}"
    if field == "group" and kind == "literal_error":
        return f"group must be 'segment' or 'file', got {clip(str(err.get('input')))!r}"
    if field == "file" and kind == "missing":
        return "missing the audio 'file' field (multipart/form-data)"
    return None


def _validation_text(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``where: message`` (``where`` without its query/body/path prefix)."""
    loc = list(err.get("loc", ()))
    if loc and loc[0] in ("query", "body", "path", "header"):
        loc = loc[1:]
    where = ".".join(str(p) for p in loc)
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


class _State:
    """Holds the store, the (lazily built) searcher and how paths are shown."""

    def __init__(self, searcher: SearcherSource, store: IndexStore | None, paths: str = "relative"):
        self._lock = threading.Lock()
        self.paths = paths
        self._root: tuple[int, str | None] | None = None  # (store generation, indexed root)
        if isinstance(searcher, Searcher):
            self._searcher: Searcher | None = searcher
            self._build = None
            self.store = store or searcher.store
        else:
            if not callable(searcher):
                raise TypeError("searcher must be a Searcher or a function of the store that builds one")
            if store is None:
                raise TypeError("a store is needed when the searcher is built from it")
            self._searcher, self._build, self.store = None, searcher, store

    @property
    def searcher(self) -> Searcher:
        if self._searcher is None:
            with self._lock:
                if self._searcher is None:
                    made = self._build(self.store)  # type: ignore[misc]
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


def _check_paths(paths: str) -> None:
    if paths not in PATH_MODES:
        raise ConfigError(f"paths must be 'relative' or 'absolute', got {clip(str(paths))!r}")


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:100] or "segment"


def _version() -> str:
    try:
        from sonalign import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "0"


def run_server(
    idx: str | Path | IndexStore,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    *,
    searcher: SearcherSource = Searcher.for_store,
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

    ``searcher``: as :func:`create_app` takes it; by default one with the index's own model, built on
    the first query. Binds to localhost unless ``host`` says otherwise; serving beyond it without
    ``api_key`` logs a warning. The server answers the ``Host`` names of :func:`trusted_hosts`
    (``host``, ``allowed_hosts``). ``header_timeout``, ``body_timeout`` and ``limit_concurrency``
    default to those of :mod:`sonalign.serve.server`.
    """
    import uvicorn

    from sonalign.serve import server

    check_api_key(api_key)
    _check_paths(paths)
    hosts = trusted_hosts(host, allowed_hosts)
    store = idx if isinstance(idx, IndexStore) else IndexStore.open(idx, readonly=True)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can search and play the audio", host)
    app = create_app(searcher, store=store, api_key=api_key, max_upload_bytes=max_upload_bytes, max_k=max_k, allowed_hosts=hosts, paths=paths)
    limits = {"header_timeout": header_timeout, "body_timeout": body_timeout, "limit_concurrency": limit_concurrency}
    config = server.server_config(app, host, port, log_level=log_level, **{k: v for k, v in limits.items() if v is not None})
    logging.getLogger("uvicorn.error").info("answering requests for hosts %s (add more with --allowed-host)", ", ".join(hosts))
    uvicorn.Server(config).run()


__all__ = ["create_app", "run_server"]
