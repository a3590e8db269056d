"""`livelens bench throughput`: the interactions/s one worker sustains with recommendations emitted.

Method: publish a backlog of MicroLens interactions as fast as an independent producer can (far
faster than the worker drains it), and time from the first publish to the recommendation that
covers the last event. Then two references drain the same number of records through the same
broker, each in its own process: the bare echo loop (bench/echo.py: what any Kafka client could do
here) and the framework's own ceiling (bench/faust_ceiling.py: a Faust agent configured like the
worker that only forwards each record; and the same agent on micro-batches). The ratios are
LiveLens's share of each. Each phase's wall-clock start and end, 1-minute load average and the
stack's CPU seconds per process are recorded (``bench.phases``).

Correctness under load, checked in the same run: every event must be covered by a recommendation
(at least once), and re-publishing events with ids already applied must leave user state alone
(the worker's duplicate counter rises by exactly that many).

Before the backlog, the stack idles for ``IDLE_S`` and its CPU split is recorded: cores spent with
nothing to do are cores the drain cannot use.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from rich.console import Console

from bench import BenchOptions
from bench.echo import echo_max_throughput, producer, publish_paced
from bench.faust_ceiling import faust_max_throughput
from bench.freshness import drive_worker, profile_worker
from bench.phases import Phases, quiet_stack
from bench.stack import (
    ENCODER,
    CpuSplit,
    bench_settings,
    catalogue,
    dataset,
    interaction_events,
    running_stack,
    variant,
    wait_local_items,
)
from streams.local import LocalStack

GOAL_EVENTS_PER_S = 10_000.0
GOAL_RATIO = 0.5
IDLE_S = 20.0  # the idle phase before the backlog: long enough for several tier polls at 19,220 items


def metrics_lines(stack: LocalStack) -> list[str]:
    """Every ranking worker's /metrics lines (each worker counts its own partitions' events)."""
    workers = stack.ranking_workers
    assert workers
    return [line for w in workers for line in w.get_text("/metrics").splitlines()]


def duplicates_counted(stack: LocalStack) -> float:
    """livelens_duplicate_events_total from the workers' /metrics."""
    total = 0.0
    for line in metrics_lines(stack):
        if line.startswith("livelens_duplicate_events_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def check_dedupe(stack: LocalStack, events: list[tuple[bytes, dict[str, Any]]], n: int) -> dict[str, Any]:
    """Re-publish the last ``n`` events (same ids): each must count as a duplicate, not a new update."""
    before = duplicates_counted(stack)
    again = [(k, dict(ev)) for k, ev in events[-n:]]
    publish_paced(producer(stack.settings, linger_ms=5), stack.settings.topic_interactions, again, None)
    deadline = time.monotonic() + 60
    after = before
    while time.monotonic() < deadline:
        after = duplicates_counted(stack)
        if after - before >= n:
            break
        time.sleep(0.5)
    return {"republished": n, "counted_as_duplicates": int(after - before), "held": int(after - before) == n}


def batch_histogram(stack: LocalStack) -> dict[float, float]:
    """The interaction agent's livelens_batch_size histogram from the workers' /metrics (summed over
    workers): bucket upper bound -> cumulative count (``+Inf`` as inf), and the sum of sizes under key -1."""
    out: dict[float, float] = {}
    for line in metrics_lines(stack):
        if not line.startswith("livelens_batch_size") or 'agent="interactions"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith("livelens_batch_size_bucket"):
            key = float(line.split('le="', 1)[1].split('"', 1)[0])
        elif line.startswith("livelens_batch_size_sum"):
            key = -1.0
        else:
            continue
        out[key] = out.get(key, 0.0) + value
    return out


def batch_sizes(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Micro-batch sizes during the run, from the difference of two histogram reads: how many batches,
    the mean, and p50/p90/p99 as the histogram bucket bounds they fall in (upper bounds)."""
    bounds = sorted(b for b in after if b >= 0)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    count = cum[-1] if cum else 0.0
    out: dict[str, Any] = {"batches": int(count)}
    if count <= 0:
        return out
    out["mean"] = round((after.get(-1.0, 0.0) - before.get(-1.0, 0.0)) / count, 1)
    for name, q in (("p50_at_most", 0.5), ("p90_at_most", 0.9), ("p99_at_most", 0.99)):
        bound = next(b for b, c in zip(bounds, cum, strict=True) if c >= q * count)
        out[name] = bound if math.isfinite(bound) else "above the largest bucket"
    return out


def measure(stack: LocalStack, data: Any, n: int, feed_of_item: dict[str, str], console: Console) -> dict[str, Any]:
    known = set(feed_of_item)
    events = interaction_events(data, n, known, uuid.uuid4().hex[:6])
    histogram = batch_histogram(stack)
    phases = Phases(stack)
    ends: dict[int, int] = {}
    with phases.phase("livelens"):
        split = CpuSplit(stack)
        profile_worker(stack, 60.0)  # BENCH_PYSPY=path: the worker's first minute of draining, sampled
        # waits for a drain down to 50 events/s: a shorter wait reported its own cut-off as lost events
        worker = drive_worker(stack, events, None, feed_of_item, timeout=max(120.0, n / 50), ends=ends)
        worker["cpu_split"] = split.result()
    worker["batch_size"] = batch_sizes(histogram, batch_histogram(stack))
    # the references on an idle stack: the worker (still needed for the dedupe check) and the trainer caught up
    before_references = quiet_stack(stack, ends, stop_worker=False)
    users = len({ev["user_id"] for _, ev in events})
    with phases.phase("echo"):
        echo = echo_max_throughput(stack.settings, interaction_events(data, n, known, "echo"))
    with phases.phase("faust_ceiling"):
        ceiling = faust_max_throughput(stack.settings, stack.work_dir, interaction_events(data, n, known, "faust"))
    with phases.phase("faust_batched"):
        batched = faust_max_throughput(
            stack.settings, stack.work_dir, interaction_events(data, n, known, "faustb"), batched=True
        )
    ceiling["batched"] = batched
    ratio = round(worker["processed_per_s"] / max(echo["events_per_s"], 1e-9), 3)
    ratio_faust = round(worker["processed_per_s"] / max(ceiling["events_per_s"], 1e-9), 3)
    console.print(
        f"backlog {n:,}: LiveLens {worker['processed_per_s']:,.0f} ev/s ({worker['events_missing']} missing, "
        f"{worker['recommendation_lists']:,} lists for {users:,} users, {worker['duplicate_lists']} duplicate lists) "
        f"· echo {echo['events_per_s']:,.0f} ev/s · ratio {ratio} · micro-batches {worker['batch_size']}"
    )
    console.print(
        f"Faust ceiling (forward only): {ceiling['events_per_s']:,.0f} ev/s per event "
        f"({ceiling['received']:,}/{ceiling['sent']:,} forwarded), "
        f"{batched['events_per_s']:,.0f} ev/s in micro-batches ({batched['received']:,}/{batched['sent']:,}) "
        f"· LiveLens/Faust ceiling {ratio_faust} "
        f"· Faust ceiling/echo {round(ceiling['events_per_s'] / max(echo['events_per_s'], 1e-9), 3)}"
    )
    console.print(
        f"cores busy while draining: {worker['cpu_split']['cores_busy']} · "
        f"peak RSS (MiB): {worker['cpu_split']['rss_peak_mib']}"
    )
    phases.report(console, "before the references", before_references)
    return {
        "backlog": n,
        "users": users,
        "livelens": worker,
        "echo": echo,
        "ratio_to_echo": ratio,
        "faust_ceiling": ceiling,
        "ratio_to_faust_ceiling": ratio_faust,
        "before_references": before_references,
        **phases.result(),
        "events": events,
    }


def idle_cpu_split(stack: LocalStack, n_items: int, console: Console, seconds: float = IDLE_S) -> dict[str, Any]:
    """What the stack burns with nothing to do (the tier's polls, idle fetches): cores the drain can't use."""
    wait_local_items(stack, n_items)
    split = CpuSplit(stack)
    time.sleep(seconds)
    out = split.result()
    console.print(f"cores busy while idle ({seconds:.0f} s): {out['cores_busy']}")
    return out


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    n = int(options.extra.get("backlog", 0)) or (10_000 if options.quick else 60_000)
    workers = int(options.extra.get("workers", 1))  # scale-out on one machine: one partition each at least
    base = bench_settings()
    settings = base.model_copy(update={"partitions": max(base.partitions, workers)})
    data = dataset()
    items = catalogue(data, options.items)
    feed_of_item = {it.item_id: it.feed.value for it in items}
    with running_stack(settings, items, console, workers=workers) as (stack, upsert_s):
        idle = idle_cpu_split(stack, len(items), console)
        point = measure(stack, data, n, feed_of_item, console)
        dedupe = check_dedupe(stack, point.pop("events"), min(1_000, n))
    console.print(f"dedupe: {dedupe}")
    lv = point["livelens"]
    return {
        "goal": {"events_per_s": GOAL_EVENTS_PER_S, "ratio_to_echo": GOAL_RATIO},
        "met": lv["processed_per_s"] >= GOAL_EVENTS_PER_S and point["ratio_to_echo"] >= GOAL_RATIO,
        "at_least_once_held": lv["events_missing"] == 0,
        "dedupe": dedupe,
        "items": len(items),
        "item_vectors": ENCODER,
        "variant": variant(settings),
        "ranking_workers": workers,
        "milvus_upsert_s": round(upsert_s, 1),
        "idle_cpu_split": idle,
        **point,
    }
