"""`sonalign serve`: its options reach run_server; empty keys and bad key files are one-line errors (exit 2)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sonalign.cli import app
from sonalign.serve import app as serve_app

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch):
    """Replace run_server by a recorder (the CLI imports it when the verb runs)."""
    seen: list[dict] = []
    monkeypatch.setattr(serve_app, "run_server", lambda idx, **kwargs: seen.append({"idx": idx, **kwargs}))
    monkeypatch.delenv("SONALIGN_API_KEY", raising=False)
    return seen


def test_options_reach_run_server(tmp_path, calls):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    args = ["serve", str(tmp_path), "--api-key-file", str(key_file), "--allowed-host", "a.example", "--allowed-host", "*.b.example", "--paths", "absolute"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["api_key"] == "s3cret" and call["allowed_hosts"] == ["a.example", "*.b.example"] and call["paths"] == "absolute"
    assert runner.invoke(app, ["serve", str(tmp_path)]).exit_code == 0
    assert calls[1]["api_key"] is None and calls[1]["allowed_hosts"] == [] and calls[1]["paths"] == "relative"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--api-key", ""], None, "API key is empty"),
        (["--api-key", "  "], None, "API key is empty"),
        ([], "", "SONALIGN_API_KEY is set but empty"),
        ([], "   ", "API key is empty"),
        (["--api-key-file", "{tmp}/missing"], None, "no such API key file"),
        (["--api-key-file", "{tmp}/empty"], None, "the API key file is empty"),
        (["--api-key", "k", "--api-key-file", "{tmp}/empty"], None, "not both"),
        (["--paths", "full"], None, "paths must be 'relative' or 'absolute'"),
        (["--allowed-host", "example.org:8000"], None, "not a host name"),
    ],
)
def test_bad_keys_and_options_are_one_line_errors(tmp_path, monkeypatch, args, env, message):
    monkeypatch.delenv("SONALIGN_API_KEY", raising=False)
    if env is not None:
        monkeypatch.setenv("SONALIGN_API_KEY", env)
    (tmp_path / "empty").write_text("\n")
    result = runner.invoke(app, ["serve", str(tmp_path / "idx"), *[a.format(tmp=tmp_path) for a in args]])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_help_names_the_new_options():
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--api-key-file", "--allowed-host", "--paths"):
        assert option in result.output
