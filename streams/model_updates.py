"""A ranking worker's side of the trainer: read ``livelens.models`` and ``livelens.model-deltas``, serve them.

A background thread reads both topics with its own consumer (partitions *assigned* from the start, no
group: every worker needs every message), assembles complete snapshot sets (``SnapshotAssembler``) and
restores each into a fresh ``OnlineModels`` off the serving path. ``apply`` then swaps the restored
objects in, in the thread that ranks (between micro-batches), so a list is always ranked by one version,
and applies the deltas newer than that snapshot to the count signals (they dedupe by event id, so a
delta seen twice changes nothing). ``new_items`` stays the worker's own: it is fed by the content
stream, which the trainer does not read.

Cold start: ``ready`` is False until the topic has been read to its end once and, when a snapshot was
found there, until it is served; the interaction agent waits for it before its first batch. On a
brand-new deployment there is none: the worker is ready at once, ranks with its own content and taste
signals, and applies the trainer's deltas from version 0 on (``_apply_from_empty``) until the first
snapshot comes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ranking.model_log import ModelSnapshot, SnapshotAssembler, decode_chunk, decode_delta
from ranking.online import OnlineModels
from streams.settings import Settings

log = logging.getLogger(__name__)

# signals a delta updates (interaction and follow counts); the next-item model, the ranker and the creator
# vectors change only by snapshot
COUNT_SIGNALS = frozenset({"co", "neighbours", "trending", "live", "cofollow"})
# signals the worker keeps when it adopts a snapshot: fed by this worker's content stream
LOCAL_SIGNALS = frozenset({"new_items"})
DELTA_BUFFER_BYTES = 64 << 20
APPLIED_LOG = 256


@dataclass
class Pending:
    snapshot: ModelSnapshot
    models: OnlineModels
    restored_s: float


class ModelUpdates:
    def __init__(self, settings: Settings, build: Callable[[str], OnlineModels]) -> None:
        self.s = settings
        self.build = build  # arm -> a fresh OnlineModels of that arm's configuration
        self.configs: dict[str, str] = {}  # arm -> the config id served: other configurations are ignored
        self.assembler = SnapshotAssembler()
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._deltas: deque[tuple[int, bytes]] = deque()  # (to_version, bytes), oldest first
        self._delta_bytes = 0
        self.served: dict[str, int] = {}  # arm -> snapshot version served
        self.delta_version = 0  # newest delta applied
        # (trainer version whose counts are served, wall time it was first served): the freshness bench
        # matches each interaction's delta to the moment every worker served it
        self.applied: deque[tuple[int, float]] = deque(maxlen=APPLIED_LOG)
        self.caught_up = threading.Event()
        self._target: dict[str, int] | None = None  # arm -> newest version on the topic when first read to its end
        self.waited = False
        self.last_error: str | None = None
        self.restore_s: float | None = None
        # wall time the first snapshot was served: a restarted worker's time to the trainer's model is this
        # minus its process start (the tests measure it; group join and recovery come on top for events)
        self.first_served_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livelens-model-updates", daemon=True)

    def start(self, configs: dict[str, str]) -> ModelUpdates:
        """Start reading the models topic (once: a second call, e.g. from the warm-up task after an early
        start by ``Services.start_loading``, does nothing)."""
        with self._lock:
            if self._thread.is_alive() or self._stop.is_set():
                return self
            self.configs = dict(configs)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    async def wait_ready(self, apply: Callable[[], Awaitable[object]], timeout: float) -> bool:
        """Apply updates until ready (cold start: the latest snapshot served), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.waited = True  # once: later batches never wait for the trainer
        while time.monotonic() < deadline:
            await apply()
            if self.ready:
                return True
            await asyncio.sleep(0.05)
        log.warning("no trainer snapshot served within %.0fs; ranking with what this worker has", timeout)
        return False

    def apply_until_ready(self, arms: dict[str, OnlineModels], timeout: float) -> bool:
        """``wait_ready`` for the thread that ranks, before the event loop runs (``streams.app.start_loading``):
        a restarted worker then serves the latest snapshot while its consumer group is still forming."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            self.apply(arms)
            if self.ready:
                return True
            time.sleep(0.05)
        return False

    @property
    def ready(self) -> bool:
        """Read to the end once, and serving (at least) the latest snapshot found there, if any. Later
        snapshots never make it False: a worker keeps serving while the next one is restored."""
        target = self._target
        return target is not None and all(self.served.get(arm, -1) >= v for arm, v in target.items())

    # --- the reader thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._read()
            except Exception as exc:  # broker gone: keep serving what we have, retry
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("reading the trainer's models failed; retrying")
                time.sleep(1.0)

    def _read(self) -> None:
        s = self.s
        consumer = Consumer(
            {
                **s.confluent_config(),
                "group.id": f"{s.app_id}-models-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            }
        )
        try:
            parts = []
            for topic in (s.topic_models, s.topic_model_deltas):
                meta = consumer.list_topics(topic, timeout=10.0).topics[topic]
                if meta.error is not None:
                    raise RuntimeError(f"topic {topic}: {meta.error}")
                parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            consumer.assign(parts)
            at_end = {(tp.topic, tp.partition) for tp in parts}
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.discard((msg.topic(), msg.partition()))
                        if not at_end and self._target is None:
                            self._target = dict(self.assembler.latest)
                            self.caught_up.set()
                    else:
                        log.warning("model updates: %s", err)
                    continue
                value = msg.value() or b""
                try:
                    if msg.topic() == s.topic_models:
                        self._on_chunk(value)
                    else:
                        self._on_delta(value)
                except ValueError as exc:
                    log.warning("skipping an unreadable message on %s: %s", msg.topic(), exc)
                self.last_error = None
        finally:
            consumer.close()

    def _on_chunk(self, value: bytes) -> None:
        chunk = decode_chunk(value)
        if self.configs.get(chunk.arm) != chunk.config_id:
            return  # another configuration's models (or an arm this worker does not serve)
        snap = self.assembler.add(chunk)
        if snap is None:
            return
        started = time.perf_counter()
        fresh = self.build(snap.arm)
        fresh.restore_shared(snap.models, snap.version)
        restored = time.perf_counter() - started
        with self._lock:
            self._pending[snap.arm] = Pending(snap, fresh, restored)
        log.info("restored %s v%d in %.2fs", snap.arm, snap.version, restored)

    def _on_delta(self, value: bytes) -> None:
        head = decode_delta(value, header_only=True)
        if head.config_id and head.config_id != self.configs.get("a"):
            return
        with self._lock:
            self._deltas.append((head.to_version, value))
            self._delta_bytes += len(value)
            while self._delta_bytes > DELTA_BUFFER_BYTES and self._deltas:
                self._delta_bytes -= len(self._deltas.popleft()[1])

    # --- the serving side (the thread that ranks) -----------------------------------------------
    def apply(self, arms: dict[str, OnlineModels]) -> bool:
        """Swap in restored snapshots, then apply newer deltas to the count signals; True if anything
        changed. Run it where ranking runs (the handlers' executor), between micro-batches."""
        with self._lock:
            pending, self._pending = self._pending, {}
            deltas = list(self._deltas)
        adopted = False
        for arm, p in pending.items():
            if arm in arms and p.snapshot.version > self.served.get(arm, -1):
                arms[arm].adopt(p.models, keep=LOCAL_SIGNALS)
                self.served[arm] = p.snapshot.version
                self.restore_s = p.restored_s
                self.first_served_at = self.first_served_at or time.time()
                adopted = True
        if not self.served:
            return self._apply_from_empty(arms, deltas) or adopted
        floor = min(self.served.values())
        # after a swap, every delta past the snapshot again (the old objects had them); else only new ones
        since = floor if adopted else max(floor, self.delta_version)
        changed = adopted
        for to, data in deltas:
            if to <= since:
                continue
            delta = decode_delta(data)
            for arm, m in arms.items():
                if to > self.served.get(arm, -1):
                    m.learn_counts(delta.observations, COUNT_SIGNALS)
            self.delta_version = max(self.delta_version, to)
            changed = True
        with self._lock:  # what every served snapshot already holds is no longer needed
            while self._deltas and self._deltas[0][0] <= floor:
                self._delta_bytes -= len(self._deltas.popleft()[1])
        counts = max(self.delta_version, floor)
        if changed and (not self.applied or counts > self.applied[-1][0]):
            self.applied.append((counts, time.time()))
        return changed

    def _apply_from_empty(self, arms: dict[str, OnlineModels], deltas: list[tuple[int, bytes]]) -> bool:
        """A brand-new deployment: the topic was read to its end and holds no snapshot. This worker's
        shared models are then the trainer's version 0 (it trains nothing shared itself), so deltas that
        chain from version 0 give exactly the trainer's counts, well before its first snapshot. On any
        gap (or while a snapshot may still be on its way) it waits for a snapshot instead."""
        if self._target != {}:
            return False
        changed = False
        for to, data in sorted(deltas, key=lambda d: d[0]):
            if to <= self.delta_version:
                continue
            delta = decode_delta(data)
            if delta.from_version != self.delta_version:
                break
            for m in arms.values():
                m.learn_counts(delta.observations, COUNT_SIGNALS)
            self.delta_version = to
            changed = True
        if changed:
            self.applied.append((self.delta_version, time.time()))
        return changed

    def status(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "served": dict(self.served),
            "delta_version": self.delta_version,
            "applied": [[v, round(t, 4)] for v, t in list(self.applied)[-64:]],
            "restore_s": self.restore_s,
            "first_served_at": self.first_served_at,
            "error": self.last_error,
            "pid": os.getpid(),
        }
