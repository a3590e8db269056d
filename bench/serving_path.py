"""The ranking worker's serving path without Kafka: time it, profile it, or dump its output.

Why: the throughput bench (``livelens bench throughput``) needs the whole stack and a quiet machine;
this drives ``RankingHandlers.process_interactions`` (what the interaction agent runs per micro-batch)
in-process over MicroLens-50K (19,220 items, hash-384 vectors, the in-process search tier) with the
worker's default models (``online_models_from_settings``: the transformer next-item model included), as a
worker with a trainer does: the shared models are first taught 40,000 events, then micro-batches of
the following events are ranked. ``dump`` writes every list (ids, scores, reasons) and training record,
so two versions of the code can be compared for identical output. ``--new-users`` gives every event a
user of its own, with no state yet: the drain of ``livelens bench throughput`` is such a stream (each
event is a user's first).

    PYTHONPATH=. python -m bench.serving_path time|profile|dump [--batches 6] [--batch 256] [--out F]
        [--no-gc-freeze] [--new-users]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import random
import time
from pathlib import Path
from typing import Any

from encoders.text import HashTextEncoder
from ranking.datasets import load_dataset
from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.local_tier import LocalSearchTier
from ranking.memory_index import InMemoryIndex
from ranking.user_state import UserState
from streams import handlers
from streams.params import online_models_from_settings, search_tier_params_from_settings
from streams.schemas import InteractionEvent
from streams.settings import Settings

PRETRAIN = 40_000
TYPES = [
    InteractionType.view,
    InteractionType.like,
    InteractionType.comment,
    InteractionType.skip,
    InteractionType.view,
]


class NoCatalog:
    """The tier's poll source: nothing changes behind its back here."""

    tracks_writes = True

    def __init__(self, n: int) -> None:
        self.n = n

    def changed_since(self, stamp: float | None) -> dict[str, float]:
        return {}

    def live_ids(self) -> set[str]:
        return set()

    def count(self) -> int:
        return self.n

    def fetch(self, item_ids: Any) -> list[IndexedItem]:
        return []


class GcTime:
    """A ``gc.callbacks`` entry: how many collections of each generation ran, and their seconds."""

    def __init__(self) -> None:
        self.runs = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.runs[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._started

    def report(self) -> str:
        return ", ".join(f"gen{g} {n}x {t:.2f} s" for g, (n, t) in enumerate(zip(self.runs, self.seconds, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["time", "profile", "dump"])
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default="serving_path.json")
    ap.add_argument("--datasets", default="/work/shared/datasets")
    ap.add_argument("--no-gc-freeze", action="store_true", help="leave the loaded objects to the collector")
    ap.add_argument(
        "--new-users",
        action="store_true",
        help="every event from a user never seen before, as in `livelens bench throughput`'s drain",
    )
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # as the worker runs it (streams.params)
    data = load_dataset("microlens-50k", Path(a.datasets))
    ids = sorted(data.items)
    vectors = HashTextEncoder(384).encode([data.items[i].title for i in ids])
    rng = random.Random(7)
    items = [
        IndexedItem(i, Feed.short_video, False, 1e9 - rng.random() * 1e6, data.items[i].title, vectors[n])
        for n, i in enumerate(ids)
    ]
    settings = Settings()
    tier = LocalSearchTier(
        InMemoryIndex(384), NoCatalog(len(items)), 384, start=False, search=search_tier_params_from_settings(settings)
    )
    tier.upsert(items)
    models = online_models_from_settings(settings)  # what a worker serves by default
    user_model = models.user_model
    models.learn_content(items)
    seqs = [[it.item_id for it in s] for s in data.sequences.values()]
    users = list(data.sequences)
    stream = [(users[u], n, s[n]) for n in range(max(map(len, seqs))) for u, s in enumerate(seqs) if n < len(s)]
    by_id = {it.item_id: it for it in items}
    states: dict[str, UserState] = {}
    for start in range(0, PRETRAIN, 256):
        events = [
            (Interaction(f"{u}:{n}", u, i, TYPES[n % len(TYPES)], 1e9 + n * 10.0), by_id[i])
            for u, n, i in stream[start : start + 256]
        ]
        for ev, _ in events:
            states.setdefault(ev.user_id, UserState())
        models.learn_batch(states, events, tier)
    table: dict[str, Any] = {u: st.to_dict() for u, st in states.items()}
    worker = handlers.RankingHandlers(
        tier, user_model, models.params, 100, {"interactions": "i"}, models=models, log_training=True
    )
    clock = [2e9]

    def fake_time() -> float:  # lists' freshness and timestamps from a fixed clock: dumps compare equal
        clock[0] += 1.0
        return clock[0]

    handlers.time.time = fake_time  # type: ignore[attr-defined]
    rest = stream[PRETRAIN:]
    batches = [
        [
            (
                p,
                InteractionEvent(
                    event_id=f"{u}:{n}",
                    user_id=f"new-{b}-{p}" if a.new_users else u,
                    item_id=i,
                    type=TYPES[n % len(TYPES)],
                    ts=1e9 + n * 10.0,
                ),
            )
            for p, (u, n, i) in enumerate(rest[b * a.batch : (b + 1) * a.batch])
        ]
        for b in range(a.batches)
    ]
    dump: list[Any] = []

    def run(batches: list[list[tuple[int, InteractionEvent]]]) -> None:
        for events in batches:
            result = worker.process_interactions(events, {ev.user_id: table.get(ev.user_id) for _, ev in events})
            table.update(result.states)
            dump.extend(
                [r.user_id, r.feed.value, [[i.item_id, i.score, i.reason] for i in r.items]]
                for r in result.recommendations
            )
            dump.append(["training", [record.hex() for _, record in result.training]])

    # the first micro-batch builds the tier's IVF (once per worker start): run, dumped, not timed
    run(batches[:1])
    if not a.no_gc_freeze:
        gc.freeze()  # as a worker does once loaded (streams.roles.services): start-up objects out of collections
    collector = GcTime()
    gc.callbacks.append(collector)
    started, cpu = time.perf_counter(), time.process_time()
    if a.mode == "profile":
        profiler = cProfile.Profile()
        profiler.runcall(run, batches[1:])
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    else:
        run(batches[1:])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.callbacks.remove(collector)
    n = (a.batches - 1) * a.batch
    # CPU seconds too: on a shared machine the wall clock measures the neighbours as much as this code
    print(
        f"{a.batches - 1} micro-batches of {a.batch} (after one untimed): {elapsed:.2f} s wall, "
        f"{n / elapsed:.0f} events/s; "
        f"{cpu:.2f} CPU s, {n / cpu:.0f} events per CPU s; garbage collection {collector.report()}"
    )
    if a.mode == "dump":
        Path(a.out).write_text(json.dumps(dump))
        print(f"wrote {a.out}: {len(dump)} entries")


if __name__ == "__main__":
    main()
