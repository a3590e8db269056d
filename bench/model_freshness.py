"""`livelens bench model-freshness`: interaction published -> every ranking worker ranks with counts that
include it; and the trainer's sustained absorb rate beside the rate it must absorb.

The default stack: the trainer plus ``--workers`` (extra option ``workers``, default 2) ranking workers
over the MicroLens catalogue. Phase 1 publishes MicroLens interactions at ``--rate`` (default 200/s)
for ``--duration`` (default 60 s). Per interaction:

- its publish time (stamped at send);
- the trainer version whose delta carries it: the bench reads ``livelens.model-deltas`` itself and
  finds the event id among each delta's observations (the version counts learned events, so every
  later version includes it too);
- per worker, the first time it served counts of that version or later: every worker's /stats lists
  ``(version, wall time)`` as it applies snapshots and deltas (``ModelUpdates.applied``), polled all
  along.

Latency = the latest worker's time - publish time. Same clock: every process runs on this machine.

Phase 2 (the absorb rate): ``drain`` copies of the records the workers logged in phase 1, with fresh
event ids, go straight to ``livelens.training`` as fast as the producer can; the trainer's rate is
records over the time until its input offsets reach the end. Phase 1's own rate (records learned over
the publishing time) is reported too, beside the offered rate: what the trainer *must* absorb (one
record per applied interaction).
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from rich.console import Console

from bench import BenchOptions, percentiles
from bench.echo import ms, produce, producer, publish_paced
from bench.stack import ENCODER, bench_settings, catalogue, dataset, interaction_events, running_stack, variant
from ranking.model_log import decode_delta, decode_record, encode_record
from streams.local import LocalStack, training_ends
from streams.settings import Settings

GOAL_P99_S = 2.0
GOAL_RATE = 200.0


class DeltaReader(threading.Thread):
    """Reads ``livelens.model-deltas`` from its current end: event id -> the version that carries it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.version_of: dict[str, int] = {}
        self.stop = threading.Event()
        self.consumer = Consumer(
            {**settings.confluent_config(), "group.id": f"bench-deltas-{uuid.uuid4().hex[:6]}", "fetch.wait.max.ms": 50}
        )
        topic = settings.topic_model_deltas
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        parts = []
        for p in meta.partitions:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            parts.append(TopicPartition(topic, p, high))
        self.consumer.assign(parts)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        print(f"deltas: {msg.error()}")
                    continue
                delta = decode_delta(msg.value() or b"")
                for ob in delta.observations:
                    self.version_of.setdefault(ob.event_id, delta.to_version)
        finally:
            self.consumer.close()


class AppliedPoller(threading.Thread):
    """Polls every worker's /stats: worker -> {version: first wall time it was served}."""

    def __init__(self, stack: LocalStack, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.stack, self.every_s = stack, every_s
        self.applied: list[dict[int, float]] = [{} for _ in stack.workers]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for n, worker in enumerate(self.stack.workers):
                try:
                    entries = worker.get("/stats")["trainer_models"]["applied"]
                except Exception:  # a slow answer: the next poll gets it (the log keeps 64 entries)
                    continue
                for version, at in entries:
                    self.applied[n].setdefault(int(version), float(at))
            time.sleep(self.every_s)


def served_at(applied: Mapping[int, float], version: int) -> float | None:
    """The first time a worker served counts of ``version`` or later."""
    times = [t for v, t in applied.items() if v >= version]
    return min(times) if times else None


def latencies(
    published: Mapping[str, float], version_of: Mapping[str, int], applied: Sequence[Mapping[int, float]]
) -> tuple[list[float], int]:
    """Per event: the last worker's serving time - publish time; and how many events were never served."""
    out: list[float] = []
    missing = 0
    for event_id, sent in published.items():
        version = version_of.get(event_id)
        served = [served_at(a, version) for a in applied] if version is not None else [None]
        if any(t is None for t in served):
            missing += 1
            continue
        out.append(max(t for t in served if t is not None) - sent)
    return out, missing


def drain_rate(stack: LocalStack, copies: int, console: Console) -> dict[str, Any]:
    """Publish ``copies`` training records (phase 1's, with fresh event ids) straight to the training
    topic, then time the trainer until its offsets reach the end: its sustained absorb rate."""
    s = stack.settings
    assert stack.trainer is not None
    logged = read_records(s, limit=2_000)
    if not logged:
        return {}
    p = producer(s, linger_ms=5.0)
    tag = uuid.uuid4().hex[:6]
    values = []
    for n in range(copies):
        rec = logged[n % len(logged)]
        ob = dataclasses.replace(rec.observation, event_id=f"drain-{tag}-{n}")
        values.append((ob.user_id.encode(), encode_record(dataclasses.replace(rec, observation=ob))))
    before = stack.trainer.status() or {}
    started = time.monotonic()
    for key, value in values:
        produce(p, s.topic_training, key, value)
    p.flush(60)
    published_s = time.monotonic() - started
    ends = training_ends(s)
    while True:
        status = stack.trainer.status() or {}
        if all(status.get("offsets", {}).get(k, 0) >= e for k, e in ends.items()):
            break
        if time.monotonic() - started > 600:
            raise TimeoutError(f"trainer still draining after 600 s: {status}")
        time.sleep(0.05)
    took = time.monotonic() - started
    records = status["records"] - before.get("records", 0)
    cpu = status["cpu_s"] - before.get("cpu_s", 0.0)
    out = {
        "records": records,
        "publish_s": round(published_s, 2),
        "drain_s": round(took, 2),
        "records_per_s": round(records / took, 1),
        "trainer_cpu_s": round(cpu, 2),
        "records_per_cpu_s": round(records / cpu, 1) if cpu > 0 else None,
    }
    console.print(
        f"drain: {records} records in {took:.1f} s = {out['records_per_s']}/s "
        f"({out['records_per_cpu_s']} per trainer CPU second)"
    )
    return out


def read_records(settings: Settings, limit: int) -> list[Any]:
    """Up to ``limit`` training records from the start of the training topic."""
    consumer = Consumer(
        {
            **settings.confluent_config(),
            "group.id": f"bench-records-{uuid.uuid4().hex[:6]}",
            "enable.partition.eof": True,
        }
    )
    topic = settings.topic_training
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        left, out = set(meta.partitions), []
        deadline = time.monotonic() + 60
        while left and len(out) < limit and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    left.discard(msg.partition())
                continue
            out.append(decode_record(msg.value() or b""))
        return out
    finally:
        consumer.close()


def measure(
    stack: LocalStack, data: Any, rate: float, duration: float, known: set[str], console: Console
) -> dict[str, Any]:
    s = stack.settings
    assert stack.trainer is not None, "model freshness needs the trainer (LIVELENS_TRAINER=true)"
    for worker in stack.workers:  # every item in each worker's search tier first, or events on them are dropped
        if s.local_search:
            worker.wait_for("local_index_items", len(known), timeout=300)
    events = interaction_events(data, int(rate * duration), known, uuid.uuid4().hex[:6])
    deltas = DeltaReader(s)
    poller = AppliedPoller(stack)
    deltas.start()
    poller.start()
    before = stack.trainer.status() or {}
    logged_before = sum(training_ends(s).values())
    try:
        t0, t1 = publish_paced(producer(s), s.topic_interactions, events, rate)
        console.print(f"published {len(events)} interactions in {t1 - t0:.1f} s; waiting for every worker…")
        # every interaction processed by its worker (one training record each), then learned and served
        deadline = time.monotonic() + 600
        while sum(training_ends(s).values()) < logged_before + len(events) and time.monotonic() < deadline:
            time.sleep(0.5)
        t_logged = time.time()
        version = stack.wait_models_current(timeout=300)
        after = stack.trainer.status() or {}
        time.sleep(1.0)  # the pollers see the last applied versions
    finally:
        poller.stop.set()
        deltas.stop.set()
        poller.join(5)
        deltas.join(5)
    published = {ev["event_id"]: ev["ts"] for _, ev in events}
    lat, missing = latencies(published, deltas.version_of, poller.applied)
    learned = after.get("records", 0) - before.get("records", 0)
    absorbed = learned / max(after.get("at", t1) - t0, 1e-9)
    out = {
        "rate": rate,
        "duration_s": duration,
        "published": len(events),
        "offered_per_s": round(len(events) / max(t1 - t0, 1e-9), 1),
        "events_measured": len(lat),
        "events_missing": missing,
        "latency_ms": ms(percentiles(lat)),
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
        "trainer_version": version,
        "trainer_records_learned": learned,
        "trainer_absorbed_per_s": round(absorbed, 1),
        "workers_processed_per_s": round(len(events) / max(t_logged - t0, 1e-9), 1),
    }
    console.print(
        f"{rate:,.0f}/s x {duration:.0f} s, {len(stack.workers)} workers: model freshness p50 "
        f"{out['latency_ms'].get('p50')} ms, p99 {out['latency_ms'].get('p99')} ms ({missing} missing); "
        f"trainer absorbed {out['trainer_absorbed_per_s']}/s of {out['offered_per_s']}/s offered"
    )
    return out


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    rate = options.rate or GOAL_RATE
    duration = options.duration or (10.0 if options.quick else 60.0)
    workers = int(options.extra.get("workers", 2))
    copies = int(options.extra.get("drain", 5_000 if not options.quick else 1_000))
    settings = bench_settings(trainer=True, partitions=max(workers, 2))
    data = dataset()
    items = catalogue(data, options.items)
    started = time.time()
    with running_stack(settings, items, console, workers=workers) as (stack, upsert_s):
        point = measure(stack, data, rate, duration, {it.item_id for it in items}, console)
        drain = drain_rate(stack, copies, console)
    p99 = point["latency_ms"].get("p99")
    return {
        "goal": {"p99_ms_at_200_per_s": GOAL_P99_S * 1000},
        "met": p99 is not None and p99 <= GOAL_P99_S * 1000 and rate >= GOAL_RATE and point["events_missing"] == 0,
        "ranking_workers": workers,
        "items": len(items),
        "item_vectors": ENCODER,
        "variant": variant(settings),
        "trainer": {
            "snapshot_interval_s": settings.snapshot_interval_s,
            "delta_interval_s": settings.delta_interval_s,
            "batch_size": settings.trainer_batch_size,
            "torch_threads": settings.trainer_torch_threads,
        },
        "absorb": {
            "must_absorb_per_s": point["offered_per_s"],
            "during_run_per_s": point["trainer_absorbed_per_s"],
            "drain": drain,
        },
        "milvus_upsert_s": round(upsert_s, 1),
        "setup_and_run_s": round(time.time() - started, 1),
        **point,
    }
