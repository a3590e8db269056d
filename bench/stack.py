"""The setup the streaming benchmarks share: broker + Milvus Lite + one worker over an indexed catalogue.

``LIVELENS_EMBEDDED_MILVUS=server`` puts a real Milvus server (``streams.milvus_server``) in Milvus
Lite's place.

Items are the MicroLens-50K titles (19,220 real items), encoded with the hash text encoder (384-d:
the same dimension as MiniLM, so search costs the same, without loading a model in the driver); for
catalogues larger than MicroLens, synthetic random unit vectors fill up the rest. Items go into
Milvus directly (not through the content agent) before the worker starts, so the benchmarks time
interactions only. Interactions are MicroLens users' real sequences, round-robin over users as a
platform would publish them.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.load import rss_mib
from ranking.datasets import Dataset, load_dataset
from ranking.index import IndexedItem
from storage.milvus import MilvusIndex
from streams.local import LocalStack, WorkerProcess
from streams.ports import free_port
from streams.replay import interleaved
from streams.schemas import Feed, feed_of
from streams.settings import Settings

ENCODER = "hash-384 (MicroLens titles) + random unit vectors beyond 19,220 items"
UPSERT_BATCH = 2_000


def bench_settings(**overrides: Any) -> Settings:
    """Settings from the environment (so LIVELENS_LOCAL_SEARCH=false etc. pick the variant), bench defaults."""
    base = Settings()
    values: dict[str, Any] = {
        "text_encoder": "hash",
        "image_encoder": "none",
        "audio_encoder": "none",
        "log_level": "warn",
        "kafka_broker": None,
        "milvus_uri": None,
    }
    values.update(overrides)
    return base.model_copy(update=values)


def variant(settings: Settings) -> dict[str, Any]:
    """The settings that pick the hot path's variant, recorded beside every streaming figure."""
    return {
        "local_search": settings.local_search,
        "recs_producer": settings.recs_producer,
        "interaction_batch_size": settings.interaction_batch_size,
        "interaction_batch_wait_s": settings.interaction_batch_wait_s,
        "trainer": settings.trainer,
        "embedded_milvus": settings.embedded_milvus,
        "search_tier": settings.local_search_tier,
        "search_exact_below": settings.local_search_exact_below,
    }


def dataset() -> Dataset:
    return load_dataset("microlens-50k", Settings().datasets_dir)


def catalogue(data: Dataset, n_items: int | None, dim: int = 384, seed: int = 0) -> list[IndexedItem]:
    """MicroLens items with hash vectors, then synthetic items up to ``n_items`` (None: MicroLens only)."""
    from encoders.text import HashTextEncoder

    items = list(data.items.values())
    if n_items is not None:
        items = items[:n_items]
    vectors = HashTextEncoder(dim).encode([it.title or it.item_id for it in items])
    now = time.time()
    out = [
        IndexedItem(it.item_id, feed_of(it.kind), False, now, it.title[:300], vectors[i]) for i, it in enumerate(items)
    ]
    return out + synthetic_items(len(out), (n_items or 0) - len(out), dim, seed, now)


SYNTHETIC_TOPICS = 2_000  # 1M items / 500, as ``bench retrieval`` sizes its topics


def synthetic_items(start: int, n: int, dim: int, seed: int, now: float) -> list[IndexedItem]:
    """Items ``syn{start}``... with unit vectors near fixed topic centres (``bench.retrieval``'s clustered
    data): uniformly random vectors have no neighbours, so an ANN index's recall on them (0.13 at 100k
    for the worker's IVF) says nothing about a real catalogue's."""
    if n <= 0:
        return []
    from bench.retrieval import synthetic_chunks, topic_centres

    centres = topic_centres(dim, SYNTHETIC_TOPICS, seed=dim + seed)
    vecs = np.concatenate(list(synthetic_chunks(n, centres, 1.5, seed=seed + start)))
    return [
        IndexedItem(f"syn{start + i}", Feed.short_video, False, now, f"synthetic item {start + i}", vecs[i])
        for i in range(n)
    ]


_writers: dict[str, MilvusIndex] = {}


def upsert(settings: Settings, items: list[IndexedItem]) -> float:
    """Write items into Milvus; returns seconds taken.

    One client per server for the whole run: closing one and opening another later failed to
    reconnect (pymilvus's connection cache) on a busy host.
    """
    started = time.perf_counter()
    uri = settings.resolved_milvus_uri()
    index = _writers.get(uri)
    if index is None:
        index = _writers[uri] = MilvusIndex(uri, settings.milvus_collection, 384, cache_size=1)
    for i in range(0, len(items), UPSERT_BATCH):
        index.upsert(items[i : i + UPSERT_BATCH])
    return time.perf_counter() - started


def interaction_events(data: Dataset, n: int, known: set[str], tag: str) -> list[tuple[bytes, dict[str, Any]]]:
    """The first ``n`` interactions round-robin over users, as (key, event dict) with ids unique to ``tag``."""
    out: list[tuple[bytes, dict[str, Any]]] = []
    for user, pos, _, _ in interleaved(data):
        step = data.sequences[user][pos]
        if step.item_id not in known:
            continue
        ev = {
            "event_id": f"{tag}:{user}:{pos}",
            "user_id": user,
            "item_id": step.item_id,
            "type": step.type.value,
            "value": step.value,
            "ts": 0.0,
        }
        out.append((user.encode(), ev))
        if len(out) >= n:
            break
    return out


@contextmanager
def running_stack(
    settings: Settings, items: list[IndexedItem], console: Any, workers: int = 1
) -> Iterator[tuple[LocalStack, float]]:
    """Broker, Milvus Lite with ``items``, the trainer (``Settings.trainer``, the default), then
    ``workers`` ranking workers; yields (stack, upsert seconds)."""
    with tempfile.TemporaryDirectory(prefix="livelens-bench-") as tmp:
        root = Path(tmp)
        with LocalStack(settings, root, start_worker=False) as stack:
            upsert_s = upsert(stack.settings, items)
            console.print(f"indexed {len(items):,} items in Milvus in {upsert_s:.1f} s")
            procs = [WorkerProcess(stack.settings, root / "worker.log").launch()]
            for n in range(1, workers):  # their own web port and data dir, same group
                extra = stack.settings.model_copy(update={"web_port": free_port(), "data_dir": root / f"worker{n + 1}"})
                procs.append(WorkerProcess(extra, root / f"worker{n + 1}.log").launch())
            try:
                # a worker is ready once its search tier has loaded the catalogue: minutes at 1M items
                ready_s = (120.0 + len(items) / 2_000) * workers
                for worker in procs:
                    worker.ready_or_stop(ready_s)
                stack.worker, stack.workers = procs[0], procs
                yield stack, upsert_s
            finally:
                for worker in procs:
                    tail = worker.log_tail(15)
                    worker.stop()
                    if any(w in tail for w in ("ERROR", "Traceback", "retrying")):
                        console.print(f"[yellow]worker log tail:[/]\n{tail}")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and every live descendant (Linux /proc; 0 if gone), so a
    wrapper's child (the broker binary, Milvus Lite's server) counts with it."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += [child for child, parent in parents.items() if parent == p]
    return total


def stack_processes(stack: LocalStack) -> dict[str, int]:
    """Role -> pid of every process the stack runs (workers numbered when there are several)."""
    procs: dict[str, int | None] = {
        "broker": stack.broker.pid if stack.broker else None,
        "milvus": getattr(stack.milvus, "pid", None),
        "trainer": stack.trainer.proc.pid if stack.trainer and stack.trainer.proc else None,
    }
    workers = stack.ranking_workers
    for n, w in enumerate(workers):
        procs["worker" if len(workers) == 1 else f"worker{n + 1}"] = w.proc.pid if w.proc else None
    return {role: pid for role, pid in procs.items() if pid is not None}


class RssPeak:
    """The largest resident memory of each process (its own, not its children's), sampled every
    ``every_s`` from ``__init__`` until ``stop()``: the 1M-item goal is a worker RSS of at most 2 GiB
    *throughout*, which a reading at the end would not show."""

    def __init__(self, pids: Mapping[str, int], every_s: float = 1.0) -> None:
        self.pids = dict(pids)
        self.peak: dict[str, float] = {}
        self._every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-peak", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            for role, pid in self.pids.items():
                rss = rss_mib(pid)
                if rss is not None:
                    self.peak[role] = max(self.peak.get(role, 0.0), rss)
            if self._done.wait(self._every_s):
                return

    def stop(self) -> dict[str, float]:
        self._done.set()
        self._thread.join()
        return dict(self.peak)


class CpuSplit:
    """CPU seconds each process of the stack spends between ``__init__`` and ``result()``: where a
    benchmark's cores went (``bench throughput`` reports it beside its drain rate), and each process's
    peak RSS meanwhile."""

    def __init__(self, stack: LocalStack) -> None:
        self.pids = stack_processes(stack)
        self.started = time.monotonic()
        self.before = {role: tree_cpu_seconds(pid) for role, pid in self.pids.items()}
        self.rss = RssPeak(self.pids)

    def result(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        spent = {role: round(tree_cpu_seconds(pid) - self.before[role], 2) for role, pid in self.pids.items()}
        return {
            "wall_s": round(wall, 2),
            "cpu_s": spent,
            "cores_busy": {role: round(v / wall, 2) for role, v in spent.items()} if wall > 0 else {},
            "machine_cores": os.cpu_count(),
            "rss_peak_mib": self.rss.stop(),
        }


def wait_local_items(stack: LocalStack, n: int, timeout: float = 300.0) -> None:
    """Until every ranking worker's in-process tier holds ``n`` items (no-op when the tier is off): an
    event on an item a worker's tier does not hold yet is dropped there."""
    if not stack.settings.local_search:
        return
    for worker in stack.ranking_workers:
        worker.wait_for("local_index_items", n, timeout)
