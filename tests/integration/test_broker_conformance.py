"""Pins the broker configuration LiveLens runs with on the embedded broker (tansu).

tansu 0.6 answers ListOffsets "latest" with the base offset of the last stored batch + 1, so end
offsets are wrong whenever the last batch holds more than one record, and Faust's table recovery reads
them. LiveLens's producer batches (Settings.producer_max_batch_bytes), and each micro-batch's changelog
and training writes end with a one-record batch per partition (Settings.exact_end_offsets,
streams.roles.shell). These tests show the defect, show that a one-record tail batch makes the end
exact again (and that single-record batches throughout, the old workaround, do too), and show a worker
restart (graceful and SIGKILL) recovers user state from the changelog with nothing lost and nothing
applied twice.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.broker import EmbeddedBroker
from streams.local import WorkerProcess
from streams.replay import make_producer, publish_raw
from streams.roles.shell import key_partition, start_sends, until_delivered
from streams.schemas import ContentEvent, InteractionEvent
from streams.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log") as broker:
        yield broker.bootstrap


def new_topic(bootstrap: str) -> str:
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(10)
    return name


def latest_offset(bootstrap: str, topic: str, partition: int = 0) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        return int(high)
    finally:
        consumer.close()


def count_records(bootstrap: str, topic: str, partition: int = 0) -> int:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    n, idle_until = 0, time.monotonic() + 5
    while time.monotonic() < idle_until:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            n += 1
            idle_until = time.monotonic() + 2
    consumer.close()
    return n


def test_multi_record_batches_expose_the_end_offset_defect(bootstrap: str) -> None:
    topic = new_topic(bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200})
    for size in (5, 1, 7):
        for i in range(size):
            producer.produce(topic, value=f"r{i}".encode(), partition=0)
        producer.flush(10)
    assert count_records(bootstrap, topic) == 13
    latest = latest_offset(bootstrap, topic)
    assert latest != 13, (
        "ListOffsets is exact with multi-record batches: the broker defect is gone, revisit "
        "Settings.exact_end_offsets and README 'Embedded broker'"
    )


def test_single_record_batches_give_exact_end_offsets(bootstrap: str) -> None:
    """The old workaround (LIVELENS_PRODUCER_MAX_BATCH_BYTES=1): every batch one record."""
    topic = new_topic(bootstrap)

    async def produce_and_read_end() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1, linger_ms=50)
        await producer.start()
        try:
            futures = [await producer.send(topic, f"r{i}".encode(), partition=0) for i in range(13)]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            tp = AioTopicPartition(topic, 0)
            return (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()

    assert asyncio.run(produce_and_read_end()) == 13
    assert latest_offset(bootstrap, topic) == 13
    assert count_records(bootstrap, topic) == 13


class AioTopic:
    """What ``streams.roles.shell`` sends through (Faust's ``topic.send``), over a bare aiokafka producer;
    ``before_send`` runs before each send (the test reads end offsets there)."""

    def __init__(self, producer: AIOKafkaProducer, name: str, before_send: Any = None) -> None:
        self.producer, self.name, self.before_send = producer, name, before_send

    async def send(self, key: bytes, value: bytes, partition: int | None = None) -> Any:
        if self.before_send is not None:
            await self.before_send()
        return await self.producer.send(self.name, value, key=key, partition=partition)


def test_a_one_record_tail_batch_makes_the_end_exact_after_a_flush(bootstrap: str) -> None:
    """LiveLens's design with its settings: multi-record batches, then one record per partition alone."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"conformance-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(10)
    s = Settings(kafka_broker=bootstrap)
    assert s.exact_end_offsets and s.producer_max_batch_bytes > 1

    async def flushes() -> list[tuple[dict[int, int], dict[int, int], dict[int, int]]]:
        # linger makes each flush's heads one batch per partition, as a loaded worker's are
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, max_batch_size=s.producer_max_batch_bytes, linger_ms=50
        )
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await producer.start()
        await consumer.start()
        tps = [AioTopicPartition(name, p) for p in (0, 1)]
        seen, written = [], {0: 0, 1: 0}
        sends, heads_n, after_heads = 0, 0, {}

        async def ends() -> dict[int, int]:
            return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}

        async def before_send() -> None:
            nonlocal sends, after_heads
            sends += 1
            if sends == heads_n + 1:  # the first tail: sent only once every head is acknowledged
                after_heads = await ends()

        topic = AioTopic(producer, name, before_send)
        try:
            for flush, size in enumerate((5, 9, 3)):
                records = [(f"user-{flush}-{n}".encode(), b"state") for n in range(size * 2)]
                for key, _ in records:
                    written[key_partition(key, 2)] += 1
                sends, heads_n = 0, len(records) - len({key_partition(key, 2) for key, _ in records})
                pending = await start_sends(topic, records, partitions=2)
                assert len(pending.heads) == heads_n
                await until_delivered(pending)
                seen.append((after_heads, await ends(), dict(written)))
        finally:
            await producer.stop()
            await consumer.stop()
        return seen

    seen = asyncio.run(flushes())
    counts = {p: count_records(bootstrap, name, p) for p in (0, 1)}
    assert sum(counts.values()) == 2 * (5 + 9 + 3)
    assert seen[-1][2] == counts
    for _heads, after_flush, written in seen:  # exact after every flush, through aiokafka
        assert after_flush == written, f"end offsets after a flush {after_flush}, records written {written}"
    assert {p: latest_offset(bootstrap, name, p) for p in (0, 1)} == counts  # librdkafka agrees
    # the heads did go out in multi-record batches: before the tails the broker reported a short end
    assert any(heads[p] < flush[p] - 1 for heads, flush, _ in seen for p in (0, 1)), seen


USERS = tuple(f"u{n}" for n in range(12))
ITEMS = {"i1": "Cooking dumplings at home", "i2": "Football goals of the week", "i3": "Cat plays piano"}


def publish_round(stack: Any, round_no: int, per_user: int) -> None:
    """A burst through one batching producer, so the worker's micro-batches touch many users at once
    and its changelog writes come in bursts (multi-record batches unless configured otherwise)."""
    s = stack.settings
    producer = make_producer(s)
    for n in range(per_user):
        for u in USERS:
            item = list(ITEMS)[(n + round_no) % len(ITEMS)]
            ev = InteractionEvent(event_id=f"r{round_no}-{u}-{n}", user_id=u, item_id=item, type="like")
            producer.produce(s.topic_interactions, key=u.encode(), value=ev.model_dump_json().encode())
    producer.flush(30)


def wait_states(worker: WorkerProcess, expected: int, timeout: float = 120.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    states: dict[str, dict] = {}
    while time.monotonic() < deadline:
        try:
            states = {u: worker.get(f"/state/{u}") for u in USERS}
            if all(st.get("n_events", 0) >= expected for st in states.values()):
                return states
        except Exception:  # 404 until the user's first event, or worker still starting
            pass
        time.sleep(0.25)
    raise AssertionError(f"states did not reach {expected} events: {states}")


def restart(stack: Any, sig: int, wipe_local_store: bool, n: int) -> WorkerProcess:
    assert stack.worker is not None
    stack.stop_worker(sig)
    if wipe_local_store:  # force recovery from the changelog topic alone
        shutil.rmtree(stack.settings.data_dir / "faust", ignore_errors=True)
    return stack.restart_worker(log_name=f"worker-{n}.log")  # the stack stops it at teardown


def test_worker_restarts_recover_exact_user_state(stack: Any) -> None:
    s = stack.settings
    for item_id, title in ITEMS.items():
        publish_raw(
            s,
            s.topic_content,
            item_id,
            ContentEvent(item_id=item_id, kind="short_video", title=title).model_dump_json(),
        )
    stack.worker.wait_for("livelens_items_indexed", len(ITEMS), timeout=60)

    publish_round(stack, 0, per_user=10)
    before = wait_states(stack.worker, 10)

    # The changelog the worker wrote has exact end offsets (what Faust's recovery reads).
    # The training topic's too (the trainer and the benchmarks read them). Both went out in multi-record
    # batches, each micro-batch ending with a one-record batch per partition.
    changelog = f"{s.app_id}-user_state-changelog"
    for topic in (changelog, s.topic_training):
        for partition in range(s.partitions):
            assert latest_offset(s.kafka_broker, topic, partition) == count_records(s.kafka_broker, topic, partition)

    # Graceful stop, local RocksDB wiped: the state must come back from the changelog, exactly.
    worker = restart(stack, signal.SIGTERM, wipe_local_store=True, n=1)
    recovered = wait_states(worker, 10, timeout=30)
    assert recovered == before

    # Kill -9 while events are flowing; the replayed tail must not be applied twice.
    publish_round(stack, 1, per_user=20)
    time.sleep(0.5)
    worker = restart(stack, signal.SIGKILL, wipe_local_store=False, n=2)
    publish_round(stack, 2, per_user=5)
    final = wait_states(worker, 35)
    time.sleep(2)  # let any at-least-once redelivery land before the exact check
    final = {u: worker.get(f"/state/{u}") for u in USERS}
    for u in USERS:
        assert final[u]["n_events"] == 35, final[u]["n_events"]
        assert final[u]["counts"] == {"like": 35}
        applied = final[u]["applied_event_ids"]
        assert len(applied) == len(set(applied)) == 35
