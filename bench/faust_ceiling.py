"""The framework's own ceiling: a Faust agent that only forwards each record, through the same broker.

``bench throughput`` divides LiveLens's drain rate by this beside the echo loop (bench/echo.py). The
echo loop is what any Kafka client could do on this broker and box (librdkafka, no framework); this
is what a Faust app could: the same two hops through an agent that does nothing but consume a record
and send it on, with the worker's broker options (``streams.kafka.faust_broker_options``: Faust's
producer batching as the worker has it), its fetch wait (``Settings.consumer_fetch_wait_ms``) and its
patches to Faust's start-up and fetch path (``streams.faust_internals``), as ``streams.app.build_app``
sets them. What lies between the two references is Faust's cost; below this one, LiveLens's.

The forwarder runs as its own process (``python -m bench.faust_ceiling``, started by
:class:`FaustForwarder`), measured like the worker: it gets the stack's settings through the
environment, says it is ready once it holds partitions of its input, and ends on SIGTERM. The
per-event agent is the reference; ``--batched`` gathers micro-batches the way the interaction agent
does (``take_events`` with ``Settings.interaction_batch_size`` and ``interaction_batch_wait_s``) and
forwards each event of them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.settings import Settings

READY_WAIT_S = 120.0


def build_forwarder(
    s: Settings, app_id: str, in_topic: str, out_topic: str, data_dir: Path, ready: Path, batched: bool
) -> Any:
    """A Faust app configured like the worker whose one agent copies ``in_topic`` to ``out_topic``."""
    import faust

    from streams.faust_internals import cap_faust_fetch_wait, fetch_only_active_partitions, resume_inputs_after_seek
    from streams.kafka import faust_broker_options

    if s.consumer_fetch_wait_ms is not None:
        cap_faust_fetch_wait(s.consumer_fetch_wait_ms)
    resume_inputs_after_seek()
    fetch_only_active_partitions()
    app = faust.App(
        app_id,
        **faust_broker_options(s),
        store="memory://",
        datadir=str(data_dir),
        web_enabled=False,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(in_topic, key_type=bytes, value_type=bytes, partitions=s.partitions)
    sink = app.topic(out_topic, key_type=bytes, value_type=bytes, partitions=s.partitions)

    async def forward(stream: Any) -> None:
        async for key, value in stream.items():
            await sink.send(key=key, value=value)

    async def forward_batches(stream: Any) -> None:
        async for events in stream.take_events(s.interaction_batch_size, within=s.interaction_batch_wait_s):
            for event in events:
                await sink.send(key=event.key, value=event.value)

    app.agent(source, concurrency=1, name="forward")(forward_batches if batched else forward)

    said: list[bool] = []

    @app.timer(0.1)
    async def say_ready() -> None:
        if not said and any(tp.topic == in_topic for tp in app.consumer.assignment()):
            ready.write_text("assigned\n")
            said.append(True)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    from streams.faust_internals import faust_worker

    parser = argparse.ArgumentParser(description="forward every record of IN to OUT (bench throughput's ceiling)")
    parser.add_argument("in_topic")
    parser.add_argument("out_topic")
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--batched", action="store_true")
    args = parser.parse_args(argv)
    s = Settings()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    app = build_forwarder(s, args.app_id, args.in_topic, args.out_topic, args.data_dir, args.ready_file, args.batched)
    faust_worker(app, s.log_level, quiet=True).execute_from_commandline()  # as the worker runs it


class FaustForwarder:
    """The forwarder as a child process for the length of a ``with`` block (ready on entry, ended on exit)."""

    def __init__(self, settings: Settings, work_dir: Path, in_topic: str, out_topic: str, batched: bool) -> None:
        from streams.local import settings_env

        tag = uuid.uuid4().hex[:8]
        self.dir = work_dir / f"faust-forward-{tag}"
        self.ready = self.dir / "ready"
        self.log_path = self.dir / "forwarder.log"
        root = str(Path(__file__).resolve().parent.parent)  # this checkout's bench and streams, not an installed copy
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        self.cmd = [sys.executable, "-m", "bench.faust_ceiling", in_topic, out_topic, "--app-id", f"bench-faust-{tag}"]
        self.cmd += ["--data-dir", str(self.dir / "faust"), "--ready-file", str(self.ready)]
        self.cmd += ["--batched"] if batched else []
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s = 0.0
        self.exit_code: int | None = None

    def __enter__(self) -> FaustForwarder:
        self.dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while not self.ready.exists():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the Faust forwarder exited early:\n{self.log_tail()}")
                if time.monotonic() - started > READY_WAIT_S:
                    raise RuntimeError(
                        f"the Faust forwarder got no partitions in {READY_WAIT_S:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise
        self.ready_s = round(time.monotonic() - started, 2)
        return self

    def __exit__(self, *_: object) -> None:
        from streams.processes import end_process

        if self.proc is not None:
            self.exit_code = end_process(self.proc, signal.SIGTERM, 30.0)
            self.proc = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def faust_max_throughput(
    settings: Settings, work_dir: Path, events: Sequence[tuple[bytes, dict[str, Any]]], batched: bool = False
) -> dict[str, Any]:
    """The forwarder's throughput, measured as the echo loop's (``bench.echo.echo_max_throughput``):
    publish everything as fast as possible once it is ready, time until the last copy arrived."""
    from bench.echo import Reader, create_topics, producer, publish_paced, wait_quiet
    from bench.stack import tree_cpu_seconds

    tag = uuid.uuid4().hex[:6]
    in_topic, out_topic = f"bench.faust.{tag}.in", f"bench.faust.{tag}.out"
    create_topics(settings, [in_topic, out_topic], settings.partitions)
    with FaustForwarder(settings, work_dir, in_topic, out_topic, batched) as forwarder:
        reader = Reader(settings, [out_topic]).start()
        assert forwarder.pid is not None
        cpu_before = tree_cpu_seconds(forwarder.pid)
        t0, t1 = publish_paced(producer(settings, linger_ms=5), in_topic, events, None)
        wait_quiet(reader, len(events), timeout=120)
        cpu_s = tree_cpu_seconds(forwarder.pid) - cpu_before
        reader.stop()
    tail = forwarder.log_tail(15)
    last = max((now for now, _, _ in reader.got), default=t1)
    out: dict[str, Any] = {
        "agent": "take_events, then one send per event" if batched else "one send per event",
        "sent": len(events),
        "received": len(reader.got),
        "publish_rate": round(len(events) / max(t1 - t0, 1e-9), 1),
        "events_per_s": round(len(reader.got) / max(last - t0, 1e-9), 1),
        "forwarder_cpu_s": round(cpu_s, 2),
        "ready_s": forwarder.ready_s,
        "exit_code": forwarder.exit_code,  # after SIGTERM: 0 is a clean shutdown
    }
    if batched:
        out["batch"] = {"size": settings.interaction_batch_size, "within_s": settings.interaction_batch_wait_s}
    if any(w in tail for w in ("ERROR", "Traceback")):
        out["log_tail"] = tail
    return out


if __name__ == "__main__":
    main()
