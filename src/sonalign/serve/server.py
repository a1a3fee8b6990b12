"""Running the app under uvicorn: deadlines for slow clients, a concurrency cap, keys kept out of logs.

* :class:`TimedH11Protocol` - uvicorn's h11 protocol with two deadlines: a request's headers must
  arrive within ``header_timeout`` seconds of the connection opening (or of the previous response),
  its body within ``body_timeout`` seconds of the headers; a slower client is disconnected, so
  connections that trickle in a byte at a time ("slowloris") cannot pile up.
* :class:`RedactApiKey` - a logging filter for ``uvicorn.access`` that prints ``api_key=***``.
* :func:`server_config` - the ``uvicorn.Config`` that :func:`sonalign.serve.app.run_server` uses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote_plus

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 15.0
BODY_TIMEOUT = 60.0
LIMIT_CONCURRENCY = 100
ACCESS_LOGGER = "uvicorn.access"


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol that closes connections whose request headers or body come too slowly.

    The deadlines are class attributes; :func:`server_config` makes a subclass with its own values.
    """

    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._phase: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _watch(self) -> None:
        """(Re)start the deadline when the connection enters a new phase: awaiting headers, a body, or neither."""
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase != self._phase:
            self._phase = phase
            self._arm({"headers": self.header_timeout, "body": self.body_timeout}.get(phase or ""))

    def _arm(self, seconds: float | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None if seconds is None else self.loop.call_later(seconds, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection whose request %s did not arrive in time", self._phase)
            self.transport.close()


class RedactApiKey(logging.Filter):
    """Replace the value of every ``api_key`` query parameter in a record's arguments with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(arg) if isinstance(arg, str) else arg for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = redact_query(record.msg)
        return True


def redact_query(text: str) -> str:
    """``/search?q=x&api_key=SECRET`` -> ``/search?q=x&api_key=***`` (names compared once decoded, as the server does)."""
    head, sep, query = text.partition("?")
    if not sep:
        return text
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        pairs.append(f"{name}=***" if eq and unquote_plus(name) == "api_key" else pair)
    return head + sep + "&".join(pairs)


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    limit_concurrency: int = LIMIT_CONCURRENCY,
    log_level: str = "info",
    **uvicorn_options: Any,
) -> uvicorn.Config:
    """A ``uvicorn.Config`` serving ``app`` with the deadlines above, at most ``limit_concurrency``
    connections (more get 503), and an access log that never shows an API key."""
    protocol = type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": float(header_timeout), "body_timeout": float(body_timeout)})
    config = uvicorn.Config(app, host=host, port=int(port), http=protocol, limit_concurrency=limit_concurrency, log_level=log_level, **uvicorn_options)
    access = logging.getLogger(ACCESS_LOGGER)  # after Config: it (re)configures uvicorn's loggers
    if not any(isinstance(f, RedactApiKey) for f in access.filters):
        access.addFilter(RedactApiKey())
    return config


__all__ = ["RedactApiKey", "TimedH11Protocol", "redact_query", "server_config"]
