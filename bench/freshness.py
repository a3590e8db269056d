"""`livelens bench freshness`: interaction published -> recommendation consumed, p50/p99, beside the echo floor.

One worker (real process) over the MicroLens catalogue in Milvus Lite; an independent confluent-kafka
producer publishes MicroLens interactions at ``--rate`` for ``--duration``; a reader consumes both
feed topics. Then the bare echo loop (bench/echo.py) runs at the same rate in the same run, on an
idle machine: a saturated worker can still be draining its backlog when the LiveLens phase's wait
ends, so the worker is stopped first (``bench scaling``, which goes on with it, waits until its group
has committed every event instead), and the trainer's catch-up is waited for (``bench.phases``). Each
phase's wall-clock start and end, 1-minute load average and the stack's CPU seconds per process are
recorded. Events the LiveLens phase left uncovered when its wait ended stay ``events_missing``.

Matching: a recommendation names the *last* event of its (user, feed) in its micro-batch
(``trigger_event_id``); earlier events of that user and feed in the same batch were coalesced into
it. So each event's latency is the arrival of the first recommendation whose trigger is that event
or a later one of the same (user, feed) (``coalesced_latencies``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import BenchOptions, percentiles
from bench.echo import Reader, echo_latency, ms, producer, publish_paced, wait_quiet
from bench.phases import Phases, quiet_stack
from bench.stack import ENCODER, bench_settings, catalogue, dataset, interaction_events, running_stack, variant
from streams.local import LocalStack

GOAL_P99_MS = 50.0


@dataclass
class Matched:
    latencies_s: list[float] = field(default_factory=list)
    missing: int = 0  # events no recommendation covered
    duplicates: int = 0  # recommendations whose trigger was already covered (at-least-once redelivery)
    lists: int = 0  # recommendations that covered at least one new event
    last_arrival: float = 0.0


def coalesced_latencies(
    sent: Mapping[tuple[str, str], Sequence[tuple[str, float]]], recs: Iterable[tuple[float, str, str, str]]
) -> Matched:
    """Per-event latency, given the events sent per (user, feed) in order as (event_id, ts) and the
    recommendations received as (arrival, user, feed, trigger_event_id), in any order."""
    position = {(key, eid): i for key, evs in sent.items() for i, (eid, _) in enumerate(evs)}
    covered: dict[tuple[str, str], int] = {}  # events [0, n) of a key are covered
    out = Matched()
    for arrival, user, feed, trigger in sorted(recs):
        key = (user, feed)
        pos = position.get((key, trigger))
        if pos is None:
            continue  # not one of ours (an earlier phase's event)
        start = covered.get(key, 0)
        if pos < start:
            out.duplicates += 1
            continue
        out.latencies_s.extend(arrival - ts for _, ts in sent[key][start : pos + 1])
        covered[key] = pos + 1
        out.lists += 1
        out.last_arrival = max(out.last_arrival, arrival)
    out.missing = sum(len(evs) - covered.get(key, 0) for key, evs in sent.items())
    return out


def sent_by_key(events: Sequence[tuple[bytes, dict[str, Any]]], feed_of_item: Mapping[str, str]) -> dict:
    by_key: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for _, ev in events:
        key = (ev["user_id"], feed_of_item[ev["item_id"]])
        by_key.setdefault(key, []).append((ev["event_id"], ev["ts"]))
    return by_key


def parse_recs(got: Sequence[tuple[float, str, bytes]]) -> list[tuple[float, str, str, str]]:
    out = []
    for arrival, _, value in got:
        rec = json.loads(value)
        if rec.get("trigger_event_id"):
            out.append((arrival, rec["user_id"], rec["feed"], rec["trigger_event_id"]))
    return out


def drive_worker(
    stack: LocalStack,
    events: list[tuple[bytes, dict[str, Any]]],
    rate: float | None,
    feed_of_item: Mapping[str, str],
    timeout: float = 120.0,
    ends: dict[int, int] | None = None,
) -> dict[str, Any]:
    """Publish ``events`` into the interactions topic (paced or as one backlog) and match what comes out;
    ``ends`` gets each partition's acknowledged end (``bench.echo.publish_paced``)."""
    s = stack.settings
    tag = events[0][1]["event_id"].split(":", 1)[0] + ":" if events else ""
    reader = Reader(s, list(s.feed_topics().values()), marker=f'"trigger_event_id":"{tag}'.encode()).start()
    profiler = profile_worker(stack, len(events) / rate if rate else 20.0)
    t0, t1 = publish_paced(producer(s, linger_ms=1 if rate else 5), s.topic_interactions, events, rate, ends)
    wait_quiet(reader, len(events), timeout=timeout)
    reader.stop()
    if profiler is not None:
        profiler.wait(60)
    matched = coalesced_latencies(sent_by_key(events, feed_of_item), parse_recs(reader.got))
    done = len(events) - matched.missing
    elapsed = max(matched.last_arrival - t0, 1e-9)
    return {
        "sent": len(events),
        "offered_rate": round(len(events) / max(t1 - t0, 1e-9), 1),
        "events_covered": done,
        "events_missing": matched.missing,
        "recommendation_lists": matched.lists,
        "duplicate_lists": matched.duplicates,
        "events_per_list": round(done / max(matched.lists, 1), 3),
        "processed_per_s": round(done / elapsed, 1),
        "latency_ms": ms(percentiles(matched.latencies_s)),
    }


def profile_worker(stack: LocalStack, seconds: float) -> subprocess.Popen[bytes] | None:
    """With BENCH_PYSPY=path set, sample the worker with py-spy while it runs (collapsed stacks)."""
    out = os.environ.get("BENCH_PYSPY")
    proc = stack.worker.proc if stack.worker else None
    if not out or proc is None:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--pid", str(proc.pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw", "-o", out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(
    stack: LocalStack,
    data: Any,
    rate: float,
    duration: float,
    feed_of_item: Mapping[str, str],
    console: Console,
    stop_worker: bool = False,
) -> dict[str, Any]:
    """LiveLens, then the echo loop, at the same rate on the same events; with ratios.

    Between the two the worker is stopped (``stop_worker``: nothing after needs it) or waited for
    until it has committed every event published, and the trainer until it has caught up
    (``bench.phases.quiet_stack``, under ``before_echo``), so the echo loop runs on an idle stack."""
    known = set(feed_of_item)
    n = int(rate * duration)
    phases = Phases(stack)
    ends: dict[int, int] = {}
    events = interaction_events(data, n, known, uuid.uuid4().hex[:6])
    echo_events = interaction_events(data, n, known, "echo")
    with phases.phase("livelens"):
        worker = drive_worker(stack, events, rate, feed_of_item, ends=ends)
    before_echo = quiet_stack(stack, ends, stop_worker)
    with phases.phase("echo"):
        echo = echo_latency(stack.settings, echo_events, rate)
    ratio = {
        k: round(worker["latency_ms"][k] / max(echo["latency_ms"][k], 1e-6), 2)
        for k in ("p50", "p99")
        if k in worker["latency_ms"] and k in echo["latency_ms"]
    }
    console.print(
        f"{rate:,.0f} ev/s x {duration:.0f} s: LiveLens p50 {worker['latency_ms'].get('p50')} ms, "
        f"p99 {worker['latency_ms'].get('p99')} ms ({worker['events_missing']} missing, "
        f"{worker['events_per_list']} events/list) · echo p50 {echo['latency_ms'].get('p50')} ms, "
        f"p99 {echo['latency_ms'].get('p99')} ms · ratio {ratio}"
    )
    phases.report(console, "before the echo", before_echo)
    return {
        "rate": rate,
        "duration_s": duration,
        "livelens": worker,
        "echo": echo,
        "ratio_to_echo": ratio,
        "before_echo": before_echo,
        **phases.result(),
    }


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    rate = options.rate or 1_000.0
    duration = options.duration or (10.0 if options.quick else 60.0)
    settings = bench_settings()
    data = dataset()
    items = catalogue(data, options.items)
    feed_of_item = {it.item_id: it.feed.value for it in items}
    started = time.time()
    with running_stack(settings, items, console) as (stack, upsert_s):
        point = measure(stack, data, rate, duration, feed_of_item, console, stop_worker=True)
    p99 = point["livelens"]["latency_ms"].get("p99")
    return {
        "goal": {"p99_ms_at_1000_per_s": GOAL_P99_MS},
        "met": p99 is not None and p99 <= GOAL_P99_MS and rate >= 1_000,
        "items": len(items),
        "item_vectors": ENCODER,
        "variant": variant(settings),
        "milvus_upsert_s": round(upsert_s, 1),
        "setup_and_run_s": round(time.time() - started, 1),
        **point,
    }
