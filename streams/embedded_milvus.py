"""Embedded Milvus Lite server: lets several local processes (worker, demo, CLI) share one index.

A Milvus Lite *file* can be opened by one process only, so the demo and tests start Milvus Lite's
own gRPC server on a free loopback port instead, and every process connects to it by URL.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from streams.ports import free_port, wait_for_port
from streams.processes import end_process


class EmbeddedMilvus:
    def __init__(self, data_dir: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path or data_dir.parent / "milvus-lite.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 60.0) -> EmbeddedMilvus:
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self._proc
        if wait_for_port("127.0.0.1", self.port, timeout, alive=lambda: proc.poll() is None):
            return self
        code = proc.poll()
        self.stop()
        raise RuntimeError(f"Milvus Lite server did not start (exit {code}, {timeout}s); see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None:
            return
        end_process(self._proc, signal.SIGTERM, timeout)
        self._proc = None

    def __enter__(self) -> EmbeddedMilvus:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
