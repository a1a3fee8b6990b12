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


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A clap-baseline 'run' on the fake 16-d encoders (random weights are enough to index)."""
    import json

    from safetensors.torch import save_file

    from sonalign.models.factory import create_model

    run = tmp_path_factory.mktemp("run")
    model = create_model("clap-baseline", audio_dim=16, text_dim=16, embed_dim=8)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "model.safetensors"))
    config = {"model": {**model.config}, "data": {"features": {"audio_encoder": "fake-audio", "text_encoder": "fake-text"}}}
    (run / "config.json").write_text(json.dumps(config))
    return run
