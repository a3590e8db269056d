"""A real Milvus server on this machine: Milvus standalone from the PyPI ``milvus`` package.

Milvus Lite (the embedded default) evaluates every search with Python loops over every row, so its
latency grows with the catalogue. The ``milvus`` package ships the Milvus standalone binary (embedded
etcd, local storage, real ANN indexes); this module runs it as a child process for ``livelens milvus``
and for the local stack (``Settings.embedded_milvus = "server"``), and always ends that child.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.ports import free_port, wait_for_port
from streams.processes import end_process

# Milvus waits this long (its default: 30 min) for a graceful stop before it quits by itself: a query
# node holding a loaded collection does not finish a graceful stop in standalone mode.
GRACEFUL_STOP_S = 5


def running_standalone() -> int | None:
    """The pid of a ``milvus run standalone`` already running on this machine, if any (Linux /proc).

    Milvus 2.3 locks a fixed pid file (``/run/milvus/standalone.pid``), so a second server on the same
    machine crashes at start: say so before trying, and point at the one that runs."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited while we looked, or not ours to read
        if (
            len(argv) >= 3
            and Path(argv[0].decode(errors="replace")).name == "milvus"
            and argv[1:3] == [b"run", b"standalone"]
        ):
            return int(entry.name)
    return None


class MilvusServer:
    """``milvus run standalone`` under ``base_dir`` (binaries, config, data and logs), listening on ``port``."""

    def __init__(self, base_dir: Path, port: int | None = None) -> None:
        self.base_dir = base_dir
        self.requested_port = port
        self.port: int | None = None
        self._server: Any = None  # milvus.MilvusServer: writes the config, unpacks and spawns the binary

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "logs"

    @property
    def pid(self) -> int | None:
        proc = self._proc()
        return None if proc is None else proc.pid

    def _proc(self) -> subprocess.Popen[bytes] | None:
        return None if self._server is None else self._server.server_proc

    def is_running(self) -> bool:
        proc = self._proc()
        return proc is not None and proc.poll() is None

    def start(self, timeout: float = 180.0) -> MilvusServer:
        """Start the server and wait until it serves; a server that does not is stopped before raising."""
        try:
            from milvus import MilvusServer as PackagedServer
            from milvus import MilvusServerConfig
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise RuntimeError("the Milvus server needs the `milvus` package (pip install milvus==2.3.5)") from exc
        other = running_standalone()
        if other is not None:
            raise RuntimeError(
                f"a Milvus standalone server already runs here (pid {other}) and Milvus 2.3 allows one per machine "
                "(a fixed pid file): point LIVELENS_MILVUS_URI at it, or stop it first"
            )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # The package's own wait polls forever once the child has died; this one checks the child.
        server = PackagedServer(MilvusServerConfig(), wait_for_started=False)
        server.set_base_dir(str(self.base_dir.resolve()))
        # The package moves to the next free port when this one is taken: read back the one it chose.
        server.listen_port = self.requested_port or free_port()
        server.config.set("common.gracefulStopTimeout", GRACEFUL_STOP_S)
        self._server = server
        try:
            server.start()
            self.port = int(server.listen_port)
            if self.requested_port and self.port != self.requested_port:
                raise RuntimeError(f"port {self.requested_port} is taken (Milvus would listen on {self.port})")
            self._wait_ready(int(server.webservice_port), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, health_port: int, timeout: float) -> None:
        """Ready = /healthz says OK (every component up) and the gRPC port accepts connections."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{health_port}/healthz"
        while time.monotonic() < deadline:
            if not self.is_running():
                raise RuntimeError(f"Milvus server exited while starting; see {self.log_dir}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if b"OK" in resp.read():
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"Milvus server not healthy within {timeout}s; see {self.log_dir}")
        assert self.port is not None
        if not wait_for_port("127.0.0.1", self.port, max(1.0, deadline - time.monotonic()), alive=self.is_running):
            raise RuntimeError(f"Milvus server not listening on {self.port}; see {self.log_dir}")

    def stop(self, timeout: float = 3 * GRACEFUL_STOP_S) -> int | None:
        """Ask the server to stop (SIGINT, its own shutdown path), then kill it after ``timeout``."""
        if self._server is None:
            return None
        proc = self._proc()
        code: int | None = None
        if proc is not None:
            code = end_process(proc, signal.SIGINT, timeout)
        self._server.stop()  # closes the log files it opened; the child has already exited
        self._server = None
        return code

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
