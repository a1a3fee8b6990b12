"""Hardening of the HTTP app: body size limit, API key, security headers, allowed ``Host`` names.

* :class:`BodyLimit` - request bodies over the upload limit get 413 before they are parsed.
* :class:`ApiKey` - every path but the public ones (``/health``, the page, ``/docs``, their static
  files and the schema) needs header ``X-API-Key: KEY`` (or ``?api_key=KEY``), else 401.
* :class:`SecurityHeaders` - every response carries :data:`SECURITY_HEADERS` (a Content-Security-Policy
  allowing only this origin, ``nosniff``, no framing, no referrer).
* Starlette's ``TrustedHostMiddleware`` answers a ``Host`` outside :func:`trusted_hosts` with a
  plain-text 400 (the default, the localhost names, defeats DNS rebinding).

:func:`harden` adds them to an app in the right order. Error details repeat at most :data:`MAX_ECHO`
characters of anything the client sent (:func:`clip`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonalign.errors import ConfigError

#: Host names every server answers to (Starlette compares them without the port; IPv6 in brackets).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_ANY_INTERFACE = ("", "0.0.0.0", "::")
_PUBLIC = ("/health", "/openapi.json", "/docs", "/favicon.ico")
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


def harden(app: FastAPI, *, api_key: str | None, max_upload_bytes: int, allowed_hosts: Sequence[str]) -> None:
    """Add the middlewares. Added last = outermost: security headers, then the Host check, then the
    key (before any body is read), then the body limit."""
    app.add_middleware(BodyLimit, limit=max_upload_bytes)
    if api_key is not None:
        app.add_middleware(ApiKey, key=api_key)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts), www_redirect=False)
    app.add_middleware(SecurityHeaders)


class TooLarge(BaseException):
    """A body went over the limit while the app read it. A BaseException so that FastAPI's body parsing
    (which turns every Exception into a 400) lets it through to :class:`BodyLimit`."""


class BodyLimit:
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
                    await send_json(send, 413, f"upload too large ({size} bytes; at most {self.limit})")
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except TooLarge:
            if not started:
                await send_json(send, 413, f"upload too large (more than {self.limit} bytes)")


class ApiKey:
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
            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key") or [""])[0].encode("utf-8")
        if not hmac.compare_digest(given, self.key):
            await send_json(send, 401, "missing or invalid API key: send header X-API-Key (or ?api_key=)")
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
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


async def send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _is_public(path: str) -> bool:
    return path == "/" or path.startswith("/static/") or path in _PUBLIC


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """Client-supplied ``text`` cut to ``limit`` characters (ending in "…") before an error repeats it."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_api_key(api_key: str | None) -> None:
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key is empty: give a non-blank key (or none, to serve without one)")


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
    return list(dict.fromkeys(host_name(n) for n in [*names, *extra]))


def host_name(name: str) -> str:
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
        raise ConfigError(f"allowed host {clip(str(name))!r} is not a host name (give e.g. 'search.example.org', '*.example.org' or '*', without a port)")
    return text


__all__ = ["LOCAL_HOSTS", "MAX_ECHO", "SECURITY_HEADERS", "check_api_key", "clip", "harden", "host_name", "read_api_key_file", "trusted_hosts"]
