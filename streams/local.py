"""A local LiveLens stack: embedded broker + Milvus Lite server + worker processes, for demo and tests.

Each piece is used only when nothing is configured for it: ``LIVELENS_KAFKA_BROKER`` and
``LIVELENS_MILVUS_URI`` point the same code at real clusters. ``LIVELENS_EMBEDDED_MILVUS=server``
starts a real Milvus standalone server (``streams.milvus_server``) instead of Milvus Lite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.broker import EmbeddedBroker
from streams.embedded_milvus import EmbeddedMilvus
from streams.milvus_server import MilvusServer
from streams.ports import free_port
from streams.processes import end_process
from streams.settings import Settings
from streams.topics import ensure_topics


def settings_env(settings: Settings) -> dict[str, str]:
    """The env vars that make a child process see the same Settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"LIVELENS_{name.upper()}"] = json.dumps(value) if isinstance(value, dict | list) else str(value)
    return env


class WorkerProcess:
    """``livelens worker`` as a child process, with its web port for health, stats and metrics."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self, timeout: float = 120.0) -> WorkerProcess:
        return self.launch().ready_or_stop(timeout)

    def launch(self) -> WorkerProcess:
        """Start the process without waiting (several workers load their models side by side)."""
        env = {**os.environ, **settings_env(self.settings), **self.extra_env, "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def ready_or_stop(self, timeout: float) -> WorkerProcess:
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop(signal.SIGKILL)  # a worker that never got ready is still ours to end
            raise
        return self

    def get_text(self, path: str, timeout: float = 5.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return resp.read().decode()

    def get(self, path: str, timeout: float = 5.0) -> Any:
        return json.loads(self.get_text(path, timeout))

    def wait_ready(self, timeout: float) -> None:
        """Ready = web server up and models loaded (warmed by the worker at start-up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early; see {self.log_path}:\n{self.log_tail()}")
            try:
                if self.get("/health").get("models_loaded"):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass  # not listening yet, or 503 while the models load
            time.sleep(0.25)
        raise RuntimeError(f"worker not ready within {timeout}s; see {self.log_path}:\n{self.log_tail()}")

    def wait_for(self, key: str, at_least: float, timeout: float) -> dict[str, Any]:
        """Poll /stats until a counter reaches a value (e.g. items indexed)."""
        deadline = time.monotonic() + timeout
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                stats = self.get("/stats")
                if stats.get(key, 0) >= at_least:
                    return stats
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker stat {key} stayed below {at_least} for {timeout}s (last: {stats})")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        code = end_process(self.proc, sig, timeout)
        self.proc = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class TrainerProcess(WorkerProcess):
    """``livelens trainer`` as a child process; its status file says its version, offsets and CPU time."""

    @property
    def status_path(self) -> Path:
        return self.settings.data_dir / "trainer" / "status.json"

    def start(self, timeout: float = 120.0) -> TrainerProcess:
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.status_path.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "trainer"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while self.status() is None:  # written once restored and assigned its input
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"trainer did not start; see {self.log_path}")
            time.sleep(0.2)
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_path.read_text())  # type: ignore[no-any-return]
        except (OSError, json.JSONDecodeError):
            return None

    def wait_for(self, key: str, at_least: float, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            status = self.status()
            if status is not None and status.get(key, 0) >= at_least:
                return status
            time.sleep(0.2)
        raise TimeoutError(f"trainer {key} stayed below {at_least} for {timeout}s (last: {status})")


def training_ends(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """``"topic:partition" -> end offset`` of the training topic: every record the workers have logged."""
    from confluent_kafka import Consumer, TopicPartition

    topic = settings.topic_training
    consumer = Consumer({**settings.confluent_config(), "group.id": f"{settings.app_id}-ends-{os.getpid()}"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        return {
            f"{topic}:{p}": consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)[1]
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def counts_version(stats: dict[str, Any]) -> int:
    """The trainer version whose counts a worker serves (its snapshot, or a newer delta), from /stats."""
    models = stats.get("trainer_models") or {}
    served = models.get("served") or {}
    return max(int(models.get("delta_version") or 0), min(served.values(), default=-1))


class LocalStack:
    """Start what is not configured (broker, Milvus), create topics, and run ``workers`` workers (one
    consumer group: the broker splits the partitions) and, with ``Settings.trainer`` (the default),
    the trainer."""

    def __init__(self, settings: Settings, work_dir: Path, start_worker: bool = True, workers: int = 1) -> None:
        self.base = settings
        self.work_dir = work_dir
        self.start_worker = start_worker
        self.n_workers = workers
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.milvus: EmbeddedMilvus | MilvusServer | None = None
        self.worker: WorkerProcess | None = None
        self.workers: list[WorkerProcess] = []
        self.trainer: TrainerProcess | None = None
        self._stack = ExitStack()

    @property
    def ranking_workers(self) -> list[WorkerProcess]:
        """Every ranking worker the stack runs (``workers`` when filled in, else the one ``worker``)."""
        return self.workers or ([self.worker] if self.worker else [])

    def __enter__(self) -> LocalStack:
        try:
            return self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> LocalStack:
        updates: dict[str, Any] = {"data_dir": self.work_dir / "worker"}
        if not self.base.kafka_broker:
            self.broker = EmbeddedBroker(log_path=self.work_dir / "broker.log")
            self.broker.start()
            self._stack.callback(self.broker.stop)
            updates["kafka_broker"] = self.broker.bootstrap
            # Memory storage: a broker restart empties the changelog while the worker's RocksDB keeps its
            # offsets, and Faust's consistency check would then stop the worker.
            updates["table_consistency_check"] = False
        if not self.base.milvus_uri and self.base.embedded_milvus == "server":
            self.milvus = MilvusServer(self.work_dir / "milvus-server")
            self._stack.callback(self.milvus.stop)  # before start: a start that fails half-way is still ended
            self.milvus.start()
            updates["milvus_uri"] = self.milvus.uri
        elif not self.base.milvus_uri:
            self.milvus = EmbeddedMilvus(self.work_dir / "milvus", log_path=self.work_dir / "milvus.log").start()
            self._stack.callback(self.milvus.stop)
            updates["milvus_uri"] = self.milvus.uri
        updates["web_port"] = free_port()
        self.settings = self.base.model_copy(update=updates)
        ensure_topics(self.settings)
        if self.settings.trainer:  # the shared models' one learner; stopped after the workers (callbacks unwind)
            self._stack.callback(self.stop_trainer)
            self.trainer = TrainerProcess(self.settings, self.work_dir / "trainer.log").start()
        # Stops whichever worker is current at exit: a test may have restarted it (``restart_worker``).
        self._stack.callback(self.stop_worker)
        if self.start_worker:
            self.worker = WorkerProcess(self.settings, self.work_dir / "worker.log").launch()
            self.workers = [self.worker]
            for n in range(1, self.n_workers):  # their own web port and data dir (RocksDB), same group
                extra = self.settings.model_copy(
                    update={"web_port": free_port(), "data_dir": self.work_dir / f"worker{n + 1}"}
                )
                worker = WorkerProcess(extra, self.work_dir / f"worker{n + 1}.log")
                self._stack.callback(worker.stop)
                self.workers.append(worker.launch())
            for worker in self.workers:
                worker.ready_or_stop(120.0 * self.n_workers)
        return self

    def wait_models_current(self, timeout: float = 120.0, snapshot: bool = False) -> int:
        """Until the trainer has learned every training record logged so far and every worker serves
        counts that include them (``snapshot``: the whole snapshot, ranker and next-item model too);
        returns that trainer version. Without a trainer there is nothing to wait for: returns -1."""
        if self.trainer is None:
            return -1
        deadline = time.monotonic() + timeout
        ends = training_ends(self.settings)
        status: dict[str, Any] | None = None
        while True:
            status = self.trainer.status()
            if status is not None and all(status["offsets"].get(k, 0) >= end for k, end in ends.items()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"trainer behind the training topic {ends} after {timeout}s: {status}")
            time.sleep(0.1)
        version = int(status["version"])
        for worker in self.ranking_workers:
            stats: dict[str, Any] = {}
            while True:
                stats = worker.get("/stats")
                served = (stats.get("trainer_models") or {}).get("served") or {}
                have = min(served.values(), default=-1) if snapshot else counts_version(stats)
                if have >= version:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {worker.url} serves v{have} < v{version} after {timeout}s: {stats}")
                time.sleep(0.1)
        return version

    def restart_worker(self, sig: int = signal.SIGTERM, log_name: str = "worker.log") -> WorkerProcess:
        """Stop the current worker with ``sig`` and start a new one; the stack still owns (and stops) it."""
        self.stop_worker(sig)
        self.worker = WorkerProcess(self.settings, self.work_dir / log_name).start()
        self.workers[:1] = [self.worker]
        return self.worker

    def stop_worker(self, sig: int = signal.SIGTERM) -> None:
        if self.worker is not None:
            self.worker.stop(sig)

    def restart_trainer(self, sig: int = signal.SIGTERM, log_name: str = "trainer.log") -> TrainerProcess:
        """Stop the trainer with ``sig`` and start a new one on the same data dir (it restores its state)."""
        self.stop_trainer(sig)
        self.trainer = TrainerProcess(self.settings, self.work_dir / log_name).start()
        return self.trainer

    def stop_trainer(self, sig: int = signal.SIGTERM) -> None:
        if self.trainer is not None:
            self.trainer.stop(sig)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stack.close()
