"""Fixtures of the index tests: a real Milvus server, and the vector backends a store test runs on."""

from __future__ import annotations

import pytest

from sonalign.errors import ConfigError

from .milvus_server import MilvusServer, MilvusUnavailable


@pytest.fixture(scope="session")
def milvus(tmp_path_factory):
    """A Milvus standalone server for the whole session (skips where it cannot start)."""
    try:
        from sonalign.index.milvus_client import _pymilvus

        _pymilvus()
    except ConfigError as exc:
        pytest.skip(str(exc))
    server = MilvusServer(tmp_path_factory.mktemp("milvus-data"))
    try:
        server.start()
    except MilvusUnavailable as exc:
        pytest.skip(f"Milvus server unavailable: {exc}")
    yield server
    from sonalign.index.milvus_client import disconnect_all

    disconnect_all()
    server.stop(grace=3)


@pytest.fixture(params=["faiss", "milvus"])
def backend(request) -> dict:
    """``IndexStore.open`` options that make a new index on one vector backend: faiss files (``{}``),
    or a Milvus server (skipped where it cannot start)."""
    if request.param == "faiss":
        return {}
    return {"backend": "milvus", "uri": request.getfixturevalue("milvus").uri}
