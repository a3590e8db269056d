"""The changelog write path alone: one micro-batch's state writes, sent and awaited, on the embedded broker.

Why: ``livelens bench throughput`` is bounded by ranking (about 150 ev/s here), so the cost of how
state writes are batched is a small share of it and hidden by the load of a shared box. This isolates
it: ``users`` state records of ``state_bytes`` each, spread over ``partitions``, per micro-batch,
through one aiokafka producer (what Faust's producer wraps), awaited before the next micro-batch like
the interaction agent does. Modes: ``single`` (every batch one record: the workaround before issue 15),
``tail`` (LiveLens now: multi-record batches, then one record per partition alone,
``streams.roles.shell.start_sends``) and ``plain`` (multi-record batches only: what real Kafka needs,
``LIVELENS_EXACT_END_OFFSETS=false``; its reported end is short here). The end offsets the broker
reports are checked after each run: ``exact_end``.

Run: ``python -m bench.changelog_flush [--batches 200] [--out FILE]``. It starts its own embedded
broker (plaintext on loopback): the clients take its address from ``Settings``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.broker import EmbeddedBroker
from streams.roles.shell import start_sends, until_delivered
from streams.settings import Settings


class Topic:
    """Faust's ``topic.send`` over a bare aiokafka producer."""

    def __init__(self, producer: AIOKafkaProducer, name: str) -> None:
        self.producer, self.name = producer, name

    async def send(self, key: bytes, value: bytes, partition: int | None = None) -> Any:
        return await self.producer.send(self.name, value, key=key, partition=partition)


async def run_mode(
    bootstrap: str, mode: str, batches: int, users: int, partitions: int, state_bytes: int
) -> dict[str, Any]:
    name = f"flush-{mode}-{uuid.uuid4().hex[:6]}"
    s = Settings(kafka_broker=bootstrap)
    admin = AdminClient(s.confluent_config())  # must outlive the future
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    max_batch = 1 if mode == "single" else s.producer_max_batch_bytes
    producer = AIOKafkaProducer(bootstrap_servers=s.broker_url(), max_batch_size=max_batch)
    await producer.start()
    topic, value = Topic(producer, name), b"s" * state_bytes
    flush_s: list[float] = []
    started = time.perf_counter()
    try:
        for b in range(batches):
            records = [(f"user-{b}-{u}".encode(), value) for u in range(users)]
            t0 = time.perf_counter()
            pending = await start_sends(topic, records, partitions=partitions if mode == "tail" else None)
            await until_delivered(pending)
            flush_s.append(time.perf_counter() - t0)
    finally:
        await producer.stop()
    wall = time.perf_counter() - started
    consumer = AIOKafkaConsumer(bootstrap_servers=s.broker_url())
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    flush_s.sort()
    return {
        "mode": mode,
        "producer_max_batch_bytes": max_batch,
        "records": batches * users,
        "records_per_s": round(batches * users / wall, 1),
        "flush_ms": {
            "p50": round(flush_s[len(flush_s) // 2] * 1000, 2),
            "p90": round(flush_s[int(len(flush_s) * 0.9)] * 1000, 2),
            "mean": round(sum(flush_s) / len(flush_s) * 1000, 2),
        },
        "reported_end_total": sum(ends.values()),
        "exact_end": sum(ends.values()) == batches * users,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--users", type=int, default=64, help="state writes per micro-batch")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--state-bytes", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2, help="the modes alternated this many times")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    runs = []
    with EmbeddedBroker() as broker:
        for _ in range(args.rounds):
            for mode in ("single", "tail", "plain"):
                r = asyncio.run(
                    run_mode(broker.bootstrap, mode, args.batches, args.users, args.partitions, args.state_bytes)
                )
                print(json.dumps(r))
                runs.append(r)
    out = {"bench": "changelog_flush", "options": vars(args), "runs": runs}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
