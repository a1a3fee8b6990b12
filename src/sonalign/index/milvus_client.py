"""Talking to a Milvus server: the optional pymilvus import, addresses, connections, errors, names.

The client code is the same for Milvus standalone (one machine) and Milvus distributed (a cluster):
only the URI differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from sonalign.errors import ConfigError

#: Environment variables: server address (overrides the one recorded in an index), credentials
#: ("user:password" or an API key; never recorded), and a forced read consistency level.
URI_ENV = "SONALIGN_MILVUS_URI"
TOKEN_ENV = "SONALIGN_MILVUS_TOKEN"
CONSISTENCY_ENV = "SONALIGN_MILVUS_CONSISTENCY"
DEFAULT_URI = "http://127.0.0.1:19530"
CONNECT_TIMEOUT = 10.0
_connect_lock = threading.Lock()


def _pymilvus() -> Any:
    """Import pymilvus lazily (it is an optional dependency) and quietly (pkg_resources warnings)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pymilvus
    except ImportError as exc:
        raise ConfigError(f"the milvus backend needs pymilvus (pip install 'pymilvus>=2.3,<2.4'): {exc}") from None
    return pymilvus


def normalize_uri(uri: str | None) -> str:
    """``host:port`` / ``host`` / ``tcp://host:port`` -> ``http://host:port`` (19530 by default)."""
    uri = (uri or "").strip() or DEFAULT_URI
    if "://" not in uri:
        uri = "http://" + uri
    scheme, rest = uri.split("://", 1)
    if scheme in ("tcp", "grpc"):
        scheme = "http"
    hostport = rest.split("/", 1)[0]
    if ":" not in hostport.rsplit("]", 1)[-1]:
        rest = rest.replace(hostport, hostport + ":19530", 1)
    return f"{scheme}://{rest}"


def server_uri(uri: str | None) -> str:
    """The address to use: ``uri``, else ``SONALIGN_MILVUS_URI``, else the default, normalised."""
    return normalize_uri(uri or os.environ.get(URI_ENV))


def redact_uri(uri: str) -> str:
    """The URI without a password (``http://user:***@host:port``)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", uri)


def connect(uri: str, token: str | None = None, timeout: float = CONNECT_TIMEOUT) -> str:
    """A pymilvus connection alias for ``uri`` (one per address and credentials, made once)."""
    pm = _pymilvus()
    uri = normalize_uri(uri)
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    alias = "sonalign-" + hashlib.sha1(f"{uri}\0{token or ''}".encode()).hexdigest()[:16]
    with _connect_lock:
        if pm.connections.has_connection(alias):
            return alias
        kwargs: dict[str, Any] = {"alias": alias, "uri": uri, "timeout": timeout}
        if token:
            kwargs["token"] = token
        try:
            pm.connections.connect(**kwargs)
        except Exception as exc:
            raise ConfigError(
                f"cannot reach Milvus at {redact_uri(uri)} ({_short(exc)}); start the server, or point sonalign at the right one "
                f"with --milvus-uri / {URI_ENV}"
            ) from None
    return alias


def disconnect_all() -> None:
    """Close every connection this module opened (tests, servers that restart)."""
    pm = _pymilvus()
    with _connect_lock:
        for alias, _ in list(pm.connections.list_connections()):
            if alias.startswith("sonalign-"):
                with contextlib.suppress(Exception):
                    pm.connections.disconnect(alias)
                with contextlib.suppress(Exception):
                    pm.connections.remove_connection(alias)


def call(fn: Callable[..., Any], *args: Any, where: str = "", **kwargs: Any) -> Any:
    """Call pymilvus; its exceptions become one-line ConfigErrors naming the server."""
    pm = _pymilvus()
    try:
        return fn(*args, **kwargs)
    except pm.exceptions.MilvusException as exc:
        raise ConfigError(f"Milvus{(' ' + where) if where else ''}: {_short(exc)}") from None


def collection_name(index_uuid: str, kind: str = "") -> str:
    """``sonalign_<uuid>_<kind>``: one collection per index directory and vector kind ("main", "transcript")."""
    kind = kind or "main"
    safe = re.sub(r"[^a-z0-9_]", lambda m: f"_x{ord(m.group()):02x}_", kind.lower())
    uid = re.sub(r"[^a-zA-Z0-9]", "", str(index_uuid))
    return f"sonalign_{uid}_{safe}"


def drop_collections(uri: str | None, index_uuid: str) -> int:
    """Drop every collection of the index ``index_uuid`` (``--rebuild``); returns how many."""
    pm = _pymilvus()
    alias = connect(server_uri(uri))
    prefix = collection_name(index_uuid, "x")[: -len("x")]
    names = [n for n in call(pm.utility.list_collections, using=alias) if n.startswith(prefix)]
    for n in names:
        call(pm.utility.drop_collection, n, using=alias)
    return len(names)


def prefix_expr(prefix: str) -> str:
    """A Milvus expression for "path starts with ``prefix``" (Milvus matches only ``like "p%"``)."""
    if not prefix:
        raise ValueError("path prefix is empty")
    if "%" in prefix or "\\" in prefix:
        raise ValueError(f"a Milvus path filter cannot express a prefix containing '%' or '\\': {prefix!r}; filter by ids instead")
    return 'path like "' + prefix.replace('"', '\\"') + '%"'


def in_list(ids: np.ndarray) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


__all__ = ["URI_ENV", "call", "collection_name", "connect", "disconnect_all", "drop_collections", "normalize_uri", "prefix_expr", "redact_uri",
           "server_uri"]
