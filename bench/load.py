"""Overload: offer 2x the nominal interaction rate to one real worker, then measure how it drains.

Nominal is 1,000 interactions/s, so the default offer is 2,000/s for ``--duration`` seconds (180).
A local stack runs (embedded broker, Milvus Lite server, one worker with the hash text encoder:
encoding is not what this measures). Every ``SAMPLE_S`` seconds the worker's and the broker's RSS,
the consumer lag the worker reports on /metrics and the backlog (offered minus consumed) are sampled.
After the offer stops, the drain time is how long until every offered interaction was consumed.

What the figures say: whether memory stays flat under sustained overload (bounded state, caches and
co-engagement maps), how far behind the worker falls, and how fast it catches up. A worker slower than
the offer is expected here (2 shared cores); the point is that it degrades by lagging, not by growing.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from bench import BenchOptions, percentiles

NOMINAL_RATE = 1_000.0
SAMPLE_S = 3.0
STALL_S = 60.0  # no event consumed for this long after the offer: the worker is stuck, stop waiting
WORDS = [
    "cooking",
    "noodles",
    "dumplings",
    "football",
    "goals",
    "piano",
    "jazz",
    "hiking",
    "mountain",
    "cat",
    "dog",
    "dance",
    "makeup",
    "travel",
    "city",
    "night",
    "market",
    "street",
    "food",
    "guitar",
    "lesson",
    "gaming",
    "speedrun",
    "fitness",
    "yoga",
    "news",
    "tech",
    "review",
    "unboxing",
    "comedy",
]
TYPES = ("view", "view", "view", "like", "skip", "comment", "share", "gift", "follow")


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of a process, from /proc (None when it is gone)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def scrape(url: str) -> dict[str, float]:
    """Consumer lag summed over the worker's interaction partitions, and interactions consumed."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {"lag": 0.0, "consumed": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("topic") != "livelens.interactions":
                continue
            if sample.name == "livelens_consumer_lag":
                out["lag"] += sample.value
            elif sample.name == "livelens_events_consumed_total":
                out["consumed"] += sample.value
    return out


def drain_time(samples: list[dict[str, Any]], offered: int, stop_at: float) -> float | None:
    """Seconds from the end of the offer to the first sample with everything consumed (None: never)."""
    for s in samples:
        if s["t"] >= stop_at and s["consumed"] >= offered:
            return round(s["t"] - stop_at, 1)
    return None


class Offer(threading.Thread):
    """Publishes interactions at a fixed rate from a thread, in 10 ms ticks; counts what it sent."""

    def __init__(self, settings: Any, items: list[str], users: int, rate: float, duration: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.items, self.users = settings, items, users
        self.rate, self.duration = rate, duration
        self.sent = 0
        self.behind_s = 0.0  # how far the producer itself fell behind its schedule at the end

    def run(self) -> None:
        from streams.replay import make_producer

        s = self.settings
        producer = make_producer(s)
        rng = random.Random(7)
        started = time.perf_counter()
        total = int(self.rate * self.duration)
        while self.sent < total:
            due = min(total, int((time.perf_counter() - started) * self.rate) + 1)
            for n in range(self.sent, due):
                user = f"u{rng.randrange(self.users)}"
                ev = {
                    "event_id": f"load-{n}",
                    "user_id": user,
                    "item_id": self.items[int(rng.paretovariate(1.2)) % len(self.items)],
                    "type": rng.choice(TYPES),
                    "value": round(rng.uniform(0, 60), 1),
                    "ts": time.time(),
                }
                while True:
                    try:
                        producer.produce(s.topic_interactions, key=user.encode(), value=json.dumps(ev).encode())
                        break
                    except BufferError:
                        producer.poll(0.01)
            self.sent = due
            producer.poll(0)
            time.sleep(0.01)
        producer.flush(120)
        self.behind_s = max(0.0, time.perf_counter() - started - self.duration)


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    duration = options.duration or (20.0 if options.quick else 180.0)
    rate = options.rate or 2 * NOMINAL_RATE
    n_items = options.items or (300 if options.quick else 2_000)
    users = 20_000
    with tempfile.TemporaryDirectory(prefix="livelens-load-") as tmp:
        samples, offer, stop_at, users_kept = _measure(Path(tmp), options, console, duration, rate, n_items, users)
    figures = _figures(samples, offer, stop_at, users_kept, duration, rate, n_items, users)
    f, rss = figures, figures["worker_rss_mib"]
    console.print(
        f"offered {f['offered']} at {rate:.0f}/s; worker consumed {f['throughput_during_offer_per_s']}/s meanwhile; "
        f"backlog peak {f['backlog_peak']}, lag peak {f['lag_peak']}; drained in {f['drain_s']}s; "
        f"worker RSS {rss['first']} -> peak {rss['peak']} -> final {rss['final']} MiB"
    )
    return figures


def _measure(
    work: Path, options: BenchOptions, console: Console, duration: float, rate: float, n_items: int, users: int
) -> tuple[list[dict[str, Any]], Offer, float | None, int | None]:
    """Run the stack, offer the load and sample until drained, or until the backlog stops shrinking for
    ``STALL_S``, or ``12 x duration`` (at least 600 s) after the offer stopped."""
    from streams.local import LocalStack
    from streams.replay import publish_many
    from streams.settings import Settings

    drain_limit = max(600.0, 12 * duration)
    base = Settings(
        kafka_broker=None, milvus_uri=None, data_dir=work, partitions=2, text_encoder="hash", log_level="warn"
    )  # type: ignore[call-arg]
    with LocalStack(base, work) as stack:
        s, worker, broker = stack.settings, stack.worker, stack.broker
        assert worker is not None and worker.proc is not None
        rng = random.Random(3)
        items = [f"item{i}" for i in range(n_items)]
        content = []
        for i, item in enumerate(items):
            kind = "live_stream" if i % 10 == 0 else "short_video"
            content.append((item, {"item_id": item, "kind": kind, "title": " ".join(rng.sample(WORDS, 5))}))
        publish_many(s, s.topic_content, content)
        worker.wait_for("livelens_items_indexed", n_items, timeout=600)
        console.print(f"{n_items} items indexed; offering {rate:.0f} interactions/s for {duration:.0f}s")

        offer = Offer(s, items, users, rate, duration)
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        offer.start()
        stop_at: float | None = None
        progress_at = 0.0
        while True:
            time.sleep(SAMPLE_S)
            now = time.monotonic() - t0
            m = scrape(worker.url)
            sample = {
                "t": round(now, 1),
                "offered": offer.sent,
                "consumed": int(m["consumed"]),
                "lag": int(m["lag"]),
                "backlog": offer.sent - int(m["consumed"]),
                "worker_rss_mib": rss_mib(worker.proc.pid if worker.proc else None),
                "broker_rss_mib": rss_mib(broker.pid if broker else None),
            }
            samples.append(sample)
            console.print(
                f"t={sample['t']:6.1f}s offered {sample['offered']:>8} consumed {sample['consumed']:>8} "
                f"backlog {sample['backlog']:>8} lag {sample['lag']:>8} worker {sample['worker_rss_mib']} MiB"
            )
            if stop_at is None and not offer.is_alive():
                stop_at = now
            progress_at = now if len(samples) < 2 or sample["consumed"] > samples[-2]["consumed"] else progress_at
            if stop_at is not None and (
                sample["consumed"] >= offer.sent or now - stop_at > drain_limit or now - progress_at > STALL_S
            ):
                break
        users_kept = worker.get("/stats").get("users")
    return samples, offer, stop_at, users_kept


def _figures(
    samples: list[dict[str, Any]],
    offer: Offer,
    stop_at: float | None,
    users_kept: int | None,
    duration: float,
    rate: float,
    n_items: int,
    users: int,
) -> dict[str, Any]:
    offered = offer.sent
    drain = drain_time(samples, offered, stop_at or 0.0)
    during = [x for x in samples if stop_at is None or x["t"] <= stop_at]
    consumed_in_offer = during[-1]["consumed"] if during else 0
    rss = [x["worker_rss_mib"] for x in samples if x["worker_rss_mib"] is not None]
    figures = {
        "offered_rate_per_s": rate,
        "nominal_rate_per_s": NOMINAL_RATE,
        "duration_s": duration,
        "items": n_items,
        "users_offered": users,
        "users_in_state": users_kept,
        "offered": offered,
        "producer_behind_s": round(offer.behind_s, 1),
        "throughput_during_offer_per_s": round(consumed_in_offer / max(1e-9, stop_at or duration), 1),
        "backlog_peak": max((x["backlog"] for x in samples), default=0),
        "lag_peak": max((x["lag"] for x in samples), default=0),
        "drain_s": drain,
        "drained": drain is not None,
        "worker_rss_mib": {
            "first": rss[0] if rss else None,
            "peak": max(rss, default=None),
            "final": rss[-1] if rss else None,
            **{k: v for k, v in percentiles(rss).items()},
        },
        "broker_rss_peak_mib": max((x["broker_rss_mib"] or 0 for x in samples), default=None),
        "samples": samples,
    }
    return figures
