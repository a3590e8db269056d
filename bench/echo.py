"""The two-hop floor: a bare confluent-kafka consume-produce echo loop through the same broker.

LiveLens's freshness is interaction published -> worker consumes -> worker produces -> reader consumes:
two broker hops plus processing. This loop does the same two hops with no processing (a child
process that copies each record from one topic to another), so its latency and throughput are what
any Kafka app could reach on this broker and box: the reference the LiveLens figures are divided by.

Also here, shared by the streaming benchmarks: pre-serialised MicroLens interaction events, a paced
publisher, and a reader thread that timestamps everything it receives.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench import percentiles
from streams.rec_sink import REC_PRODUCER_CONFIG
from streams.settings import Settings

# Reader and echo fetch settings, identical for LiveLens and the echo so only the middle differs.
FETCH_WAIT_MS = 5


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    return {
        **settings.confluent_config(),
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "fetch.wait.max.ms": FETCH_WAIT_MS,
        # librdkafka pauses a partition's fetching 500-1,000 ms after an empty/error fetch by default,
        # which showed as a ~500 ms p99 floor on this broker
        "fetch.error.backoff.ms": FETCH_WAIT_MS,
        "fetch.queue.backoff.ms": FETCH_WAIT_MS,
        "session.timeout.ms": int(settings.broker_session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.broker_heartbeat_interval_s * 1000),
    }


def producer(settings: Settings, linger_ms: float = 1.0) -> Producer:
    """The load generator's producer (not idempotent: see streams.rec_sink on this broker's tail)."""
    return Producer({**settings.confluent_config(), "linger.ms": linger_ms, "acks": "all"})


def create_topics(settings: Settings, names: Sequence[str], partitions: int) -> None:
    admin = AdminClient(settings.confluent_config())
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for name, fut in futures.items():
        try:
            fut.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create {name}: {exc}") from exc


def produce(
    p: Producer, topic: str, key: bytes, value: bytes, on_delivery: Callable[[Any, Any], None] | None = None
) -> None:
    while True:
        try:
            if on_delivery is None:
                p.produce(topic, key=key, value=value)
            else:
                p.produce(topic, key=key, value=value, on_delivery=on_delivery)
            p.poll(0)
            return
        except BufferError:
            p.poll(0.01)


def note_delivery(ends: dict[int, int]) -> Callable[[Any, Any], None]:
    """A confluent-kafka delivery callback keeping ``partition -> highest acknowledged offset + 1`` in ``ends``."""

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            return
        offset = msg.offset()
        if offset is not None and offset >= 0:
            ends[msg.partition()] = max(ends.get(msg.partition(), 0), offset + 1)

    return on_delivery


# --- the echo process --------------------------------------------------------------------------


def take(consumer: Consumer, timeout: float = 0.05, most: int = 1000) -> list[Any]:
    """Wait for one record (at most ``timeout``), then take whatever else is already fetched.

    ``Consumer.consume(n, timeout)`` alone waits for n records or the whole timeout, adding up to
    ``timeout`` of latency to a record that arrives alone.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=most, timeout=0)]


def _echo_main(
    config: dict[str, Any], producer_config: dict[str, Any], in_topic: str, out_topic: str, ready: Any, stop: Any
) -> None:
    """Copy every record of ``in_topic`` to ``out_topic`` until ``stop`` is set (runs in a child process)."""
    consumer = Consumer(config)
    out = Producer(producer_config)
    consumer.subscribe([in_topic])
    while not stop.is_set():
        msgs = take(consumer)
        if consumer.assignment():
            ready.set()
        for m in msgs:
            if m.error():
                continue
            produce(out, out_topic, m.key() or b"", m.value() or b"")
        out.poll(0)
    out.flush(10)
    consumer.close()


class EchoProcess:
    """The echo loop as a child process (like the worker, it runs outside the benchmark driver)."""

    def __init__(self, settings: Settings, in_topic: str, out_topic: str) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        config = consumer_config(settings, f"echo-{uuid.uuid4().hex[:8]}")
        # the same producer settings as the worker's recommendation producer
        producer_config = {**settings.confluent_config(), **REC_PRODUCER_CONFIG, "linger.ms": settings.recs_linger_ms}
        self.proc = ctx.Process(
            target=_echo_main,
            args=(config, producer_config, in_topic, out_topic, self.ready, self.stop_event),
            daemon=True,
        )

    def __enter__(self) -> EchoProcess:
        self.proc.start()
        if not self.ready.wait(60):
            self.__exit__()
            raise RuntimeError("echo loop got no partitions within 60 s")
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --- load and measurement ----------------------------------------------------------------------


@dataclass
class Reader:
    """A thread consuming topics, keeping (receive time, topic, value) for parsing after the run."""

    settings: Settings
    topics: list[str]
    # Keep only records containing these bytes (this phase's event-id tag): a reader starts at the
    # earliest offset (the broker's "latest" is unreliable), so earlier phases' records come back too.
    marker: bytes | None = None
    got: list[tuple[float, str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = Consumer(consumer_config(self.settings, f"bench-reader-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe(self.topics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, timeout: float = 60.0) -> Reader:
        deadline = time.monotonic() + timeout
        while not self.consumer.assignment():
            self.consumer.poll(0.1)
            if time.monotonic() > deadline:
                raise TimeoutError(f"reader got no partitions of {self.topics}")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            for m in take(self.consumer):
                now = time.time()
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(str(m.error()))
                    continue
                value = m.value() or b""
                if self.marker is None or self.marker in value:
                    self.got.append((now, m.topic(), value))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def publish_paced(
    p: Producer,
    topic: str,
    events: Sequence[tuple[bytes, dict[str, Any]]],
    rate: float | None,
    ends: dict[int, int] | None = None,
) -> tuple[float, float]:
    """Send events at ``rate`` (None: as fast as possible), stamping ``ts`` at send time.

    Returns (first send time, last send time). ``events`` are (key, event dict) pairs. ``ends``, when
    given, gets ``partition -> highest acknowledged offset + 1`` (:func:`note_delivery`).
    """
    on_delivery = note_delivery(ends) if ends is not None else None
    started = time.perf_counter()
    t0 = time.time()
    for n, (key, ev) in enumerate(events):
        if rate:
            ahead = n / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        ev["ts"] = time.time()
        produce(p, topic, key, json.dumps(ev).encode(), on_delivery)
    p.flush(60)
    return t0, time.time()


def wait_quiet(reader: Reader, want: int, timeout: float, quiet_s: float = 5.0) -> None:
    """Until ``want`` records arrived, or nothing more arrived for ``quiet_s`` after the first, or ``timeout``."""
    deadline = time.monotonic() + timeout
    last_n, last_change = 0, time.monotonic()
    while time.monotonic() < deadline and len(reader.got) < want:
        n = len(reader.got)
        if n != last_n:
            last_n, last_change = n, time.monotonic()
        elif n and time.monotonic() - last_change > quiet_s:
            return
        time.sleep(0.05)


def ms(stats: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1000, 2) for k, v in stats.items()}


def echo_latency(settings: Settings, events: Sequence[tuple[bytes, dict[str, Any]]], rate: float) -> dict[str, Any]:
    """Echo loop latency at ``rate``: publish -> echo -> reader, per record."""
    tag = uuid.uuid4().hex[:6]
    in_topic, out_topic = f"bench.echo.{tag}.in", f"bench.echo.{tag}.out"
    create_topics(settings, [in_topic, out_topic], settings.partitions)
    with EchoProcess(settings, in_topic, out_topic):
        reader = Reader(settings, [out_topic]).start()
        p = producer(settings)
        t0, t1 = publish_paced(p, in_topic, events, rate)
        wait_quiet(reader, len(events), timeout=60)
        reader.stop()
    lat = [now - json.loads(v)["ts"] for now, _, v in reader.got]
    return {
        "sent": len(events),
        "received": len(reader.got),
        "offered_rate": round(len(events) / max(t1 - t0, 1e-9), 1),
        "latency_ms": ms(percentiles(lat)),
    }


def echo_max_throughput(settings: Settings, events: Sequence[tuple[bytes, dict[str, Any]]]) -> dict[str, Any]:
    """Echo loop throughput: publish everything as fast as possible, time until the last copy arrived."""
    tag = uuid.uuid4().hex[:6]
    in_topic, out_topic = f"bench.echo.{tag}.in", f"bench.echo.{tag}.out"
    create_topics(settings, [in_topic, out_topic], settings.partitions)
    with EchoProcess(settings, in_topic, out_topic):
        reader = Reader(settings, [out_topic]).start()
        p = producer(settings, linger_ms=5)
        t0, t1 = publish_paced(p, in_topic, events, None)
        wait_quiet(reader, len(events), timeout=120)
        reader.stop()
    last = max((now for now, _, _ in reader.got), default=t1)
    return {
        "sent": len(events),
        "received": len(reader.got),
        "publish_rate": round(len(events) / max(t1 - t0, 1e-9), 1),
        "events_per_s": round(len(reader.got) / max(last - t0, 1e-9), 1),
    }
