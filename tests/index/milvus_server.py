"""Start a real Milvus standalone server (PyPI package ``milvus``, 2.3.x) on loopback for tests and benchmarks.

    server = MilvusServer(tmp_dir)      # picks a free port
    server.start()                      # bounded wait until it answers; MilvusUnavailable if it cannot start
    server.uri                          # "http://127.0.0.1:PORT"
    server.kill(); server.start()       # SIGKILL the whole process group, restart on the same data
    server.stop()

The package's ``milvus-server`` wrapper (a Python script) unpacks the server binary into ``DATA/bin``,
writes ``DATA/configs/milvus.yaml`` and runs ``milvus run standalone`` with embedded etcd and local
storage: nothing is downloaded at run time. The wrapper does not pass SIGTERM on to the server, so it
runs in its own process group (``start_new_session``) and the whole group is signalled. The wrapper
treats ``--proxy-port`` as a first choice (it moves on if the port is taken), so the port actually
used is read back from the config file it wrote.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: Milvus 2.3.5 standalone often hangs in its graceful stop (its coordinators stop in an order that leaves
#: the others retrying), whatever gracefulStopTimeout says; after this long the group is SIGKILLed, which
#: Milvus is built to survive (its write-ahead log is on disk).
STOP_GRACE_SECONDS = 8.0
BIN_CACHE_ENV = "SONALIGN_MILVUS_BIN_CACHE"
#: Settings passed with ``--extra-config`` (they replace keys of the packaged milvus.yaml): a bounded
#: graceful stop; a short session lease, so a server restarted after SIGKILL waits 10 s (not 30 s) for
#: its dead predecessor's registrations to expire; and every component on loopback (by default they
#: register the machine's first non-loopback address and talk to each other through it).
SERVER_CONFIG = {
    "common.gracefulStopTimeout": 5,
    "common.session.ttl": 10,
    **{f"{component}.ip": "127.0.0.1" for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")},
}


class MilvusUnavailable(RuntimeError):
    """The server could not be started here (package missing, no port, timeout): callers skip."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _share_binaries(data_dir: Path) -> None:
    """Point ``DATA/bin`` at one unpacked copy of the server (250 MB, ~6 s to unpack) kept in a cache
    folder, so each new data directory does not unpack its own. Best effort: on any problem the
    wrapper unpacks into ``DATA/bin`` as usual."""
    import fcntl

    bin_dir = data_dir / "bin"
    if bin_dir.exists() or bin_dir.is_symlink():
        return
    try:
        import milvus

        base = Path(os.environ.get(BIN_CACHE_ENV) or Path.home() / ".cache" / "sonalign" / f"milvus-server-{milvus.__version__}")
        base.mkdir(parents=True, exist_ok=True)
        with open(base / ".lock", "w") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            milvus._initialize_data_files(str(base))  # unpacks once; checks checksums after
        bin_dir.symlink_to(base / "bin", target_is_directory=True)
    except Exception:
        with contextlib.suppress(OSError):
            bin_dir.unlink()


def proxy_port(config_text: str) -> int | None:
    """``proxy.port`` from a milvus.yaml (the first ``port:`` line directly under the top-level ``proxy:``)."""
    inside = False
    for line in config_text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            inside = line.split("#", 1)[0].strip() == "proxy:"
            continue
        if inside and (len(line) - len(line.lstrip(" "))) == 2:
            match = re.match(r"\s+port:\s*(\d+)", line)
            if match:
                return int(match.group(1))
    return None


class MilvusServer:
    def __init__(self, data_dir: str | Path, port: int | None = None, *, start_timeout: float = 150.0):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.start_timeout = float(start_timeout)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server-stdout.log"

    def start(self) -> "MilvusServer":
        if importlib.util.find_spec("milvus") is None:
            raise MilvusUnavailable("the 'milvus' package (Milvus standalone server, pip install milvus==2.3.5) is not installed")
        if importlib.util.find_spec("pymilvus") is None:
            raise MilvusUnavailable("pymilvus is not installed")
        if sys.platform != "linux":
            raise MilvusUnavailable(f"the packaged Milvus server runs on Linux, not {sys.platform}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _share_binaries(self.data_dir)
        config = self.data_dir / "configs" / "milvus.yaml"
        with contextlib.suppress(FileNotFoundError):
            config.unlink()
        port = self.port or free_port()
        cmd = [
            sys.executable,
            "-c",
            "import sys, milvus; sys.argv[0] = 'milvus-server'; milvus.main()",
            "--data", str(self.data_dir),
            "--proxy-port", str(port),
            *[a for key, value in SERVER_CONFIG.items() for a in ("--extra-config", f"{key}={value}")],
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept while the server runs
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("MILVUS_URI", None)
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            self.port = self._wait_config(config, port)
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_config(self, config: Path, wanted: int) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self._check_alive()
            if config.exists():
                port = proxy_port(config.read_text(errors="replace"))
                if port:
                    return port
            time.sleep(0.2)
        raise MilvusUnavailable(f"milvus-server wrote no config in 60 s (wanted port {wanted}); log: {self._tail()}")

    def _wait_ready(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pymilvus import connections, utility

        alias = f"probe-{os.getpid()}-{self.port}"
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                connections.connect(alias=alias, uri=self.uri, timeout=3)
                utility.list_collections(using=alias, timeout=5)
                self._probe(alias)
                return
            except Exception as exc:  # not up yet
                last = str(exc)[:200]
                time.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    connections.disconnect(alias)
        raise MilvusUnavailable(f"Milvus did not answer on {self.uri} within {self.start_timeout:.0f} s ({last}); log: {self._tail()}")

    def _probe(self, alias: str) -> None:
        """Create and drop a collection: the coordinators serve DDL (after a crash they wait for the
        dead server's sessions to expire first)."""
        from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, utility

        name = f"readiness_probe_{os.getpid()}"
        schema = CollectionSchema([FieldSchema("id", DataType.INT64, is_primary=True), FieldSchema("v", DataType.FLOAT_VECTOR, dim=2)])
        Collection(name, schema, using=alias, timeout=10)
        utility.drop_collection(name, using=alias, timeout=10)

    def _check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise MilvusUnavailable(f"milvus-server exited (code {code}); log: {self._tail()}")

    def _tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:].strip() or "(empty)"
        return "(none)"

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _group_alive(self) -> bool:
        if self.proc is None:
            return False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _reap(self, timeout: float) -> bool:
        """Wait until the whole group is gone (the wrapper is reaped here; its orphans by init)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.05)
            if not self._group_alive():
                return True
            time.sleep(0.1)
        return not self._group_alive()

    def kill(self) -> None:
        """SIGKILL the wrapper and the server (a crash): the data directory is left as it was."""
        self._signal(signal.SIGKILL)
        self._reap(10.0)
        self._finish()

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the group (graceful stop, bounded by ``grace`` s), then SIGKILL whatever is left."""
        if self.proc is None:
            return
        self._signal(signal.SIGTERM)
        if not self._reap(grace):
            self._signal(signal.SIGKILL)
            self._reap(10.0)
        self._finish()

    def _finish(self) -> None:
        self.proc = None
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log.close()
            self._log = None

    def __enter__(self) -> "MilvusServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
