"""`livelens trainer`: the one process that trains the shared models, and publishes them through Kafka.

Why a plain confluent-kafka loop and not a Faust role: the trainer's input offsets must move with its
model state, not beside it. They are saved inside each snapshot (file and ``livelens.models``) and the
consumer is *assigned* every partition of ``livelens.training`` at those offsets on start, so a restart
(even after SIGKILL) resumes exactly where the restored models stopped: no record counted twice or
skipped. A Faust agent commits offsets on its own schedule, apart from any state we save, and its
group would split partitions across trainers, while one trainer must see every record. The group id
(``<app id>-trainer``) only names the trainer to the broker; nothing is committed to it.

CPU: learning runs in this one thread; torch and BLAS are limited to ``trainer_torch_threads`` (default
1), so the trainer takes about one core when busy and nothing when idle.

Input: the ranking workers' training records, and the content records the encoder role writes beside
them (items with a creator and their vectors, new or refreshed live): only the creator vectors learn
those, and no version counts them (``ranking.model_log.ContentRecord``, docs/creators.md).

Output: every ``delta_interval_s`` the observations just learned (``ModelDelta``) go to
``livelens.model-deltas``; every ``snapshot_interval_s`` and on shutdown every model of every arm goes to
``livelens.models`` in chunks under the message limit, after the same state is written atomically to
``<data dir>/trainer/state.bin`` (the embedded broker keeps topics only in memory).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from ranking.model_log import (
    ContentRecord,
    ModelSnapshot,
    SnapshotAssembler,
    TrainingRecord,
    chunk_snapshot,
    decode_any,
    decode_chunk,
    encode_chunk,
    encode_deltas,
    encode_schedule,
    load_schedule,
    pack,
    split_records,
    unpack,
)
from ranking.online import OnlineModels
from ranking.signal import Observation
from streams.params import online_arms_from_settings
from streams.settings import Settings

log = logging.getLogger(__name__)
STATE_FORMAT = 1


def limit_threads(threads: int) -> None:
    """The trainer's CPU share: torch's intra-op pool and BLAS both capped (process-wide)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")


@dataclass
class TrainerState:
    """What a restart restores: every arm's models, its schedule, the version and the input offsets."""

    version: int = 0
    offsets: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> next offset to read
    source: str = "empty"


class Trainer:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        limit_threads(settings.trainer_torch_threads)
        self.arms: dict[str, OnlineModels] = online_arms_from_settings(settings)
        self.dir = settings.data_dir / "trainer"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.bin"
        self.status_path = self.dir / "status.json"
        self.offsets: dict[str, int] = {}
        self.base_version = 0
        self.delta: list[Observation] = []
        self.delta_from = 0
        self.snapshots = 0
        self.snapshot_bytes = 0
        self.records = 0
        self.stop = threading.Event()
        conf = settings.confluent_config()
        self.producer = Producer({**conf, "acks": "all", "linger.ms": 5, "message.max.bytes": 1_000_000})
        self.consumer = Consumer(
            {
                **conf,
                "group.id": f"{settings.app_id}-trainer",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",  # a saved offset the broker no longer has: from the start
                "session.timeout.ms": int(settings.broker_session_timeout_s * 1000),
            }
        )

    @property
    def version(self) -> int:
        return self.arms["a"].trained_events

    # --- state ---------------------------------------------------------------------------------
    def restore(self) -> TrainerState:
        """The newest of the state file and the latest complete snapshot on ``livelens.models``."""
        from_file = self._read_file()
        from_topic = self._read_topic()
        best = max((from_file, from_topic), key=lambda st: st[0].version if st else -1)
        if best is None:
            return TrainerState()
        state, models, schedules = best
        for arm, m in self.arms.items():
            if arm in models:
                m.restore_shared(models[arm], state.version)
            if arm in schedules:
                load_schedule(m.schedule, schedules[arm])  # type: ignore[arg-type]
        self.offsets = dict(state.offsets)
        self.base_version = self.delta_from = state.version
        log.warning("trainer restored version %d from %s", state.version, state.source)
        return state

    def _read_file(self) -> tuple[TrainerState, dict[str, dict[str, bytes]], dict[str, bytes]] | None:
        try:
            header, arrays = unpack(self.state_path.read_bytes())
        except (OSError, ValueError) as exc:
            if self.state_path.exists():
                log.warning("trainer state file unreadable (%s); ignoring it", exc)
            return None
        if header.get("format") != STATE_FORMAT or header.get("config") != self._configs():
            log.warning("trainer state file is of another configuration; ignoring it")
            return None
        models: dict[str, dict[str, bytes]] = {}
        schedules: dict[str, bytes] = {}
        for key, arr in arrays.items():
            kind, arm, name = key.split("/", 2)
            if kind == "m":
                models.setdefault(arm, {})[name] = arr.tobytes()
            else:
                schedules[arm] = arr.tobytes()
        return TrainerState(int(header["version"]), header["offsets"], "file"), models, schedules

    def _read_topic(
        self, timeout: float = 30.0
    ) -> tuple[TrainerState, dict[str, dict[str, bytes]], dict[str, bytes]] | None:
        """The latest complete set per arm on the models topic (read to its end); None if it has none."""
        latest = read_snapshots(self.s, timeout)
        snaps = {arm: snap for arm, snap in latest.items() if arm in self.arms}
        if set(snaps) != set(self.arms) or len({sn.version for sn in snaps.values()}) != 1:
            return None
        if any(sn.config_id != self.arms[arm].config_id for arm, sn in snaps.items()):
            return None
        first = snaps["a"]
        return (
            TrainerState(first.version, dict(first.offsets), "topic"),
            {a: dict(sn.models) for a, sn in snaps.items()},
            {},
        )

    def _configs(self) -> dict[str, str]:
        return {arm: m.config_id for arm, m in self.arms.items()}

    def save(self) -> int:
        """Write the state file (atomically), then publish every arm's snapshot; returns the bytes published."""
        started = time.perf_counter()
        sets = {arm: m.shared_snapshot() for arm, m in self.arms.items()}
        arrays: dict[str, np.ndarray] = {}
        for arm, models in sets.items():
            for name, data in models.items():
                arrays[f"m/{arm}/{name}"] = np.frombuffer(data, np.uint8)
            arrays[f"s/{arm}/schedule"] = np.frombuffer(encode_schedule(self.arms[arm].schedule), np.uint8)  # type: ignore[arg-type]
        header = {"format": STATE_FORMAT, "version": self.version, "offsets": self.offsets, "config": self._configs()}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(pack(header, arrays))
        os.replace(tmp, self.state_path)
        published = 0
        for arm, models in sets.items():
            snap = ModelSnapshot(
                arm, self.version, self.base_version, self.arms[arm].config_id, dict(self.offsets), models, time.time()
            )
            for chunk in chunk_snapshot(snap):
                value = encode_chunk(chunk)
                published += len(value)
                self._produce(self.s.topic_models, chunk.key.encode(), value)
        self.producer.flush(30.0)
        self.snapshots += 1
        self.snapshot_bytes = published
        log.info("snapshot v%d: %d bytes in %.2fs", self.version, published, time.perf_counter() - started)
        return published

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value)
                return
            except BufferError:
                self.producer.poll(0.05)

    def publish_delta(self) -> None:
        if not self.delta:
            return
        # one version per observation (``learn_shared``), so the parts' ranges end at this version
        if self.delta_from + len(self.delta) != self.version:
            log.error("delta of %d observations for v%d..v%d", len(self.delta), self.delta_from, self.version)
        for value in encode_deltas(self.delta_from, self.delta, self.arms["a"].config_id):
            self._produce(self.s.topic_model_deltas, b"delta", value)
        self.producer.poll(0)
        self.delta, self.delta_from = [], self.version

    # --- the loop ------------------------------------------------------------------------------
    def assign(self) -> None:
        topic = self.s.topic_training
        meta = self.consumer.list_topics(topic, timeout=30.0).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        parts = []
        for p in sorted(meta.partitions):
            saved = self.offsets.get(f"{topic}:{p}")
            offset = OFFSET_BEGINNING if saved is None else saved
            if saved is not None:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0, cached=False)
                if saved > high:  # the broker lost the topic (embedded broker restarted): read it all again
                    log.warning(
                        "saved offset %d of %s:%d is past its end %d; reading from the start", saved, topic, p, high
                    )
                    offset = OFFSET_BEGINNING
            parts.append(TopicPartition(topic, p, offset))
        self.consumer.assign(parts)

    def learn(self, batch: Sequence[tuple[str, int, int, bytes]]) -> None:
        """One step: the records (topic, partition, offset, value) in order, learned by every arm; the
        offsets advance with them, so a state saved after this step resumes after them."""
        records = []
        for topic, partition, offset, value in batch:
            self.offsets[f"{topic}:{partition}"] = offset + 1
            try:
                record = decode_any(value)
            except ValueError as exc:
                log.error("skipping an unreadable training record at %s:%d:%d: %s", topic, partition, offset, exc)
                continue
            if isinstance(record, ContentRecord):  # creator vectors: content, in stream order, counted by no version
                self._learn_observed(records)
                records = []
                for m in self.arms.values():
                    m.learn_creator_content(record.items, refresh=record.refresh)
            else:
                records.append(record)
        self._learn_observed(records)

    def _learn_observed(self, records: Sequence[TrainingRecord]) -> None:
        if not records:
            return
        observations, examples = split_records(records, self.arms)
        for arm, m in self.arms.items():
            m.learn_shared(observations, examples[arm])
        self.delta.extend(observations)
        self.records += len(records)

    def write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "version": self.version,
            "base_version": self.base_version,
            "records": self.records,
            "offsets": self.offsets,
            "snapshots": self.snapshots,
            "snapshot_bytes": self.snapshot_bytes,
            "cpu_s": time.process_time(),
            "at": time.time(),
        }
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.status_path)

    def run(self) -> None:
        self.restore()
        self.assign()
        self.write_status()
        last_snapshot = last_delta = last_status = time.monotonic()
        published_version = -1
        try:
            while not self.stop.is_set():
                msgs = self.consumer.consume(self.s.trainer_batch_size, timeout=0.1)
                batch = []
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.error("training topic: %s", err)
                        continue
                    batch.append((msg.topic(), msg.partition(), msg.offset(), msg.value() or b""))
                if batch:
                    self.learn(batch)
                now = time.monotonic()
                if now - last_delta >= self.s.delta_interval_s:
                    self.publish_delta()
                    last_delta = now
                if now - last_snapshot >= self.s.snapshot_interval_s and self.version != published_version:
                    self.publish_delta()
                    self.save()
                    published_version = self.version
                    last_snapshot = now
                if now - last_status >= 0.5:
                    self.write_status()
                    last_status = now
        finally:
            self.publish_delta()
            self.save()
            self.write_status()
            self.consumer.close()


def read_snapshots(settings: Settings, timeout: float = 30.0) -> dict[str, ModelSnapshot]:
    """Every arm's latest complete snapshot on the models topic, read from its start to its end."""
    consumer = Consumer(
        {
            **settings.confluent_config(),
            "group.id": f"{settings.app_id}-models-reader-{os.getpid()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    topic = settings.topic_models
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        pending = set(meta.partitions)
        assembler = SnapshotAssembler()
        latest: dict[str, ModelSnapshot] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                continue
            try:
                snap = assembler.add(decode_chunk(msg.value() or b""))
            except ValueError:
                continue
            if snap is not None:
                latest[snap.arm] = snap
        return latest
    finally:
        consumer.close()


def run_trainer(settings: Settings) -> Mapping[str, Any]:
    """Run until SIGTERM/SIGINT; the last snapshot is published on the way out."""
    trainer = Trainer(settings)

    def _stop(*_: object) -> None:
        trainer.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    trainer.run()
    return json.loads(Path(trainer.status_path).read_text())
