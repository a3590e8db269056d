"""Read recommendations (and dead letters) back from their topics: for `livelens tail`, the demo and tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.schemas import DeadLetter, Recommendation
from streams.settings import Settings


@dataclass(frozen=True)
class Received:
    topic: str
    key: str | None
    value: bytes
    received_at: float


class TopicReader:
    """A throw-away consumer group over some topics, from the start or only new messages."""

    def __init__(self, settings: Settings, topics: Sequence[str], from_beginning: bool = True) -> None:
        self.consumer = Consumer(
            {
                **settings.confluent_config(),
                "group.id": f"livelens-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest" if from_beginning else "latest",
                "enable.auto.commit": False,
                "session.timeout.ms": int(settings.broker_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(settings.broker_heartbeat_interval_s * 1000),
            }
        )
        self.topics = list(topics)
        self.consumer.subscribe(self.topics)

    def wait_assigned(self, timeout: float = 30.0) -> None:
        """Join the group before anything is published, so `latest` readers miss nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.consumer.poll(0.1)
            assignment: list[TopicPartition] = self.consumer.assignment()
            if assignment:
                return
        raise TimeoutError(f"no partitions assigned for {self.topics} within {timeout}s")

    def poll(self, timeout: float = 0.2) -> Received | None:
        msg = self.consumer.poll(timeout)
        if msg is None:
            return None
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return None
            raise RuntimeError(f"consumer error: {msg.error()}")
        key = msg.key()
        return Received(msg.topic(), key.decode() if key else None, msg.value() or b"", time.time())

    def iterate(self, seconds: float | None = None) -> Iterator[Received]:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            got = self.poll()
            if got is not None:
                yield got

    def close(self) -> None:
        self.consumer.close()


def as_recommendation(received: Received) -> Recommendation:
    return Recommendation.model_validate_json(received.value)


def as_dead_letter(received: Received) -> DeadLetter:
    return DeadLetter.model_validate_json(received.value)
