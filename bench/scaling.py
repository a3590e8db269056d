"""`livelens bench scaling`: freshness and throughput against offered rate and against index size.

Rates: 250, 500, 1,000, 2,000 ev/s (all of them), then doubling until the worker saturates (it processes
less than 90 % of the offered rate, or p99 passes 5 s), each beside the echo loop at the same rate. Items: the
MicroLens catalogue cut to 10k, then the full 19,220 plus synthetic items up to 50k, 100k, 200k, ...
(``--items`` is the largest), added to Milvus while the worker runs so its local tier picks them up
through its refresh; at each size a short paced run at 1,000 ev/s and a backlog drain. Writes
scaling.json and two PNGs beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench import BenchOptions
from bench.freshness import measure as measure_freshness
from bench.load import rss_mib
from bench.stack import (
    ENCODER,
    bench_settings,
    catalogue,
    dataset,
    running_stack,
    synthetic_items,
    upsert,
    variant,
    wait_local_items,
)
from bench.throughput import measure as measure_throughput
from ranking.domain import Feed
from ranking.feed_matrix import AnnFeedMatrix, SearchTierParams
from ranking.index import IndexedItem
from streams.params import search_tier_params_from_settings

RATES = [250.0, 500.0, 1_000.0, 2_000.0]
MAX_RATE = 64_000.0
ITEM_STEPS = [10_000, 19_220, 50_000, 100_000, 200_000, 500_000, 1_000_000]  # 19,220: all of MicroLens


def saturated(point: dict[str, Any]) -> bool:
    lv = point["livelens"]
    return lv["processed_per_s"] < 0.9 * point["rate"] or lv["latency_ms"].get("p99", 0) > 5_000


def by_rate(stack: Any, data: Any, feed_of_item: dict[str, str], duration: float, console: Console) -> list[dict]:
    """Every rate the issue names (a 5 s point is cheap even when saturated), then doubling until saturated."""
    points: list[dict[str, Any]] = []
    rates = list(RATES)
    while rates:
        rate = rates.pop(0)
        point = measure_freshness(stack, data, rate, duration, feed_of_item, console)
        points.append(point)
        if not rates and not saturated(point) and rate < MAX_RATE:
            rates.append(rate * 2)
    return points


class TierBehind(Exception):
    """The worker's search tier did not take in a step's items within the wait."""


RECALL_QUERIES = 200
RECALL_K = 100


def tier_recall(
    vectors: np.ndarray, params: SearchTierParams, queries: int = RECALL_QUERIES, k: int = RECALL_K, seed: int = 0
) -> dict[str, Any]:
    """Recall@k of the worker's short-video search (``AnnFeedMatrix`` with the worker's parameters) against
    exact search, on the very rows the worker indexed; queries are taste vectors as the user model makes
    them: the normalised mean of a user's items (here three random ones). Exact below
    ``params.exact_below`` rows, as in the worker (recall 1)."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.integers(0, len(vectors), size=(queries, 3))].mean(axis=1)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    matrix = AnnFeedMatrix(vectors.shape[1], params, capacity=len(vectors))
    for n, v in enumerate(vectors):
        matrix.put(f"r{n}", v, True)
    started = time.perf_counter()
    matrix.sync()
    build_s = time.perf_counter() - started
    exact = [set(rows) for rows, _ in matrix.exact_top_rows(q, k)]
    found = [set(rows) for rows, _ in matrix.top_rows(q, k)]
    recall = float(np.mean([len(e & f) / max(len(e), 1) for e, f in zip(exact, found, strict=True)]))
    return {
        "rows": len(vectors),
        "searched_exactly": matrix.ivf is None,
        "nlist": matrix.nlist if matrix.ivf is not None else None,
        "nprobe": min(params.nprobe, matrix.nlist) if matrix.ivf is not None else None,
        "codes": params.codes,
        "build_s": round(build_s, 1),
        f"recall_at_{k}": round(recall, 4),
        "queries": queries,
    }


def short_video_vectors(items: Sequence[IndexedItem]) -> np.ndarray:
    rows = [it.vector for it in items if it.feed is Feed.short_video]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 384), np.float32)


def grow_index(
    stack: Any, data: Any, feed_of_item: dict[str, str], n: int, console: Console, written: list[np.ndarray]
) -> dict[str, float]:
    """Write items (MicroLens first, then synthetic) up to ``n`` straight to Milvus and wait (5 min plus 1 s
    per 1,000 new items) until the worker's search tier holds them all; ``feed_of_item`` gains them, and
    ``written`` their short videos' vectors."""
    extra = catalogue(data, None) if len(feed_of_item) < len(data.items) else []
    extra = [it for it in extra if it.item_id not in feed_of_item][: n - len(feed_of_item)]
    start, missing = len(feed_of_item) + len(extra), n - len(feed_of_item) - len(extra)
    extra += synthetic_items(start, missing, 384, 0, time.time())
    upsert_s = upsert(stack.settings, extra)
    feed_of_item.update({it.item_id: it.feed.value for it in extra})
    written.append(short_video_vectors(extra))
    started = time.perf_counter()
    try:
        wait_local_items(stack, len(feed_of_item), timeout=300.0 + len(extra) / 1_000)
    except TimeoutError as exc:
        try:  # the tier's last poll error, if any, shows in /health
            health = stack.worker.get("/health")
        except Exception as health_exc:
            health = f"/health unavailable: {health_exc}"
        raise TierBehind(f"{n:,} items: {exc}; health: {health}"[:1000]) from exc
    caught_up_s = round(time.perf_counter() - started, 1)
    console.print(f"{n:,} items: upsert {upsert_s:.1f} s, worker tier caught up {caught_up_s} s later")
    return {"upsert_s": round(upsert_s, 1), "tier_caught_up_s": caught_up_s}


def by_items(
    stack: Any, data: Any, steps: list[int], duration: float, backlog: int, console: Console, with_rates: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """Grow the index step by step; the rate sweep runs once, at the full MicroLens catalogue.

    A step whose items the search tier does not take in (``grow_index``), or Ctrl-C, ends the curve
    there: the points so far are kept and the reason returned.
    """
    points: list[dict[str, Any]] = []
    rate_points: list[dict[str, Any]] = []
    first = catalogue(data, steps[0])
    feed_of_item = {it.item_id: it.feed.value for it in first}
    written = [short_video_vectors(first)]
    params = search_tier_params_from_settings(stack.settings)
    worker_pid = stack.worker.proc.pid if stack.worker and stack.worker.proc else None
    try:
        for n in steps:
            loading = grow_index(stack, data, feed_of_item, n, console, written) if n > len(feed_of_item) else {}
            fresh = measure_freshness(stack, data, 1_000.0, duration, feed_of_item, console)
            thr = measure_throughput(stack, data, backlog, feed_of_item, console)
            thr.pop("events")
            rss = rss_mib(worker_pid)
            recall = tier_recall(np.concatenate(written), params)
            console.print(
                f"{len(feed_of_item):,} items: worker RSS {rss} MiB · tier recall@{RECALL_K} "
                f"{recall[f'recall_at_{RECALL_K}']} ({'exact' if recall['searched_exactly'] else 'IVF'})"
            )
            points.append(
                {
                    "items": len(feed_of_item),
                    **loading,
                    "freshness": fresh,
                    "throughput": thr,
                    "worker_rss_mib": rss,
                    "tier_recall": recall,
                }
            )
            if with_rates and len(feed_of_item) == len(data.items):
                rate_points = by_rate(stack, data, dict(feed_of_item), duration, console)
    except TierBehind as exc:
        console.print(f"[yellow]stopping the item sweep: {exc}[/]")
        return points, rate_points, str(exc)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted at {len(feed_of_item):,} items; writing the points so far[/]")
        return points, rate_points, f"interrupted at {len(feed_of_item):,} items"
    return points, rate_points, None


def plot(result: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rates = result.get("by_rate")
    if rates:
        fig, ax = plt.subplots(figsize=(6, 4))
        x = [p["rate"] for p in rates]
        for who, style in (("livelens", "o-"), ("echo", "s--")):
            for q in ("p50", "p99"):
                ax.plot(x, [p[who]["latency_ms"].get(q) for p in rates], style, label=f"{who} {q}")
        ax.axhline(50, color="grey", lw=0.8, ls=":", label="goal p99 50 ms")
        ax.set(xscale="log", yscale="log", xlabel="offered interactions/s", ylabel="published → consumed (ms)")
        ax.set_title("freshness vs rate (one worker)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "scaling_rate.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)
    sizes = result.get("by_items")
    if sizes:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
        x = [p["items"] for p in sizes]
        a1.plot(x, [p["freshness"]["livelens"]["latency_ms"].get("p99") for p in sizes], "o-", label="p99")
        a1.plot(x, [p["freshness"]["livelens"]["latency_ms"].get("p50") for p in sizes], "o--", label="p50")
        a1.set(xscale="log", yscale="log", xlabel="items in the index", ylabel="ms at 1,000 ev/s")
        a1.legend(fontsize=7)
        a2.plot(x, [p["throughput"]["livelens"]["processed_per_s"] for p in sizes], "o-", label="LiveLens")
        a2.plot(x, [p["throughput"]["echo"]["events_per_s"] for p in sizes], "s--", label="echo loop")
        a2.set(xscale="log", yscale="log", xlabel="items in the index", ylabel="interactions/s (backlog drain)")
        a2.legend(fontsize=7)
        fig.suptitle("one worker vs index size")
        fig.tight_layout()
        path = out_dir / "scaling_items.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)
    return written


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    """``--only rates`` (or ``items``) measures one part and keeps the other from an existing scaling.json,
    recording where it came from (``kept_from``): the index-size sweep to 1M takes over 20 minutes."""
    duration = options.duration or (5.0 if options.quick else 15.0)
    largest = options.items or (50_000 if options.quick else 100_000)
    only = options.extra.get("only")
    data = dataset()
    steps = [n for n in ITEM_STEPS if n < largest] + [largest]
    backlog = int(options.extra.get("backlog", 0)) or (5_000 if options.quick else 10_000)
    settings = bench_settings()
    result: dict[str, Any] = {"item_vectors": ENCODER, "variant": variant(settings)}
    # One stack for everything (a second Milvus Lite server in the same process confused pymilvus's
    # connection cache): 10k items, then the full MicroLens catalogue (where the rate sweep runs), then more.
    first = catalogue(data, None if only == "rates" else steps[0])
    with running_stack(settings, first, console) as (stack, _):
        if only == "rates":
            feed_of_item = {it.item_id: it.feed.value for it in first}
            result["by_rate"] = by_rate(stack, data, feed_of_item, duration, console)
        else:
            result["by_items"], result["by_rate"], result["items_sweep_stopped"] = by_items(
                stack, data, steps, duration, backlog, console, with_rates=only is None
            )
    if only:
        result.update(kept_part(options.output_dir / "scaling.json", "by_items" if only == "rates" else "by_rate"))
    result["saturation_rate"] = next((p["rate"] for p in result["by_rate"] if saturated(p)), None)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    result["plots"] = plot(result, options.output_dir)
    return result


def kept_part(path: Path, part: str) -> dict[str, Any]:
    """The ``part`` of an earlier scaling.json and which run it came from, or nothing without one."""
    import json

    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    kept = {part: earlier.get(part, [])}
    if part == "by_items":
        kept["items_sweep_stopped"] = earlier.get("items_sweep_stopped")
    kept["kept_from"] = {part: {"started_at": earlier.get("started_at"), "options": earlier.get("options")}}
    return kept
