"""Publish a real dataset as LiveLens events: content first, then interactions keyed by user.

Interactions are interleaved round-robin across users (each user's own order kept), as a live
platform would publish them, and stamped with the publish time so freshness can be measured.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Producer

from ranking.datasets import Dataset, Item
from streams.schemas import ContentEvent, InteractionEvent
from streams.settings import Settings


@dataclass
class ReplayStats:
    content: int = 0
    interactions: int = 0
    seconds: float = 0.0
    last_event_of_user: dict[str, str] | None = None


def make_producer(settings: Settings) -> Producer:
    return Producer({**settings.confluent_config(), "linger.ms": 5, "enable.idempotence": True})


def content_event(dataset: Dataset, item: Item, now: float) -> ContentEvent:
    return ContentEvent(
        item_id=item.item_id,
        kind=item.kind,
        title=item.title[:1_000],
        tags=[t[:100] for t in item.tags[:50]],
        created_at=now,
        description="",
        language="en",
    )


def interleaved(dataset: Dataset) -> Iterator[tuple[str, int, str, InteractionEvent | None]]:
    """(user, position, event_id, _) round-robin over users; the event itself is built at send time."""
    queues = [(u, seq) for u, seq in dataset.sequences.items()]
    for pos in itertools.count():
        any_left = False
        for user, seq in queues:
            if pos < len(seq):
                any_left = True
                yield user, pos, f"{dataset.name}:{user}:{pos}", None
        if not any_left:
            return


def publish_content(
    settings: Settings, dataset: Dataset, items: dict[str, Item], progress: Callable[[int], None] | None = None
) -> int:
    producer = make_producer(settings)
    now = time.time()
    for n, item in enumerate(items.values(), 1):
        ev = content_event(dataset, item, now)
        _produce(producer, settings.topic_content, item.item_id, ev.model_dump_json())
        if progress and n % 500 == 0:
            progress(500)
    producer.flush(60)
    if progress:
        progress(len(items) % 500)
    return len(items)


def interaction_events(
    dataset: Dataset, event_ts: Callable[[str, int], float] | None = None
) -> Iterator[InteractionEvent]:
    """Every interaction in publish order, built lazily.

    ``ts`` is the time the event is built (publish time, so freshness can be measured) unless
    ``event_ts(user, position)`` gives a fixed event time: then the stream, and the user state it
    produces, are the same on every replay (the crash-safety tests compare runs).
    """
    for user, pos, event_id, _ in interleaved(dataset):
        step = dataset.sequences[user][pos]
        ts = event_ts(user, pos) if event_ts else time.time()
        yield InteractionEvent(
            event_id=event_id, user_id=user, item_id=step.item_id, type=step.type, value=step.value, ts=ts
        )


def publish_interactions(
    settings: Settings,
    dataset: Dataset,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Send every interaction; ``rate`` (events/s) paces the stream, None sends as fast as possible."""
    producer = make_producer(settings)
    stats = ReplayStats(last_event_of_user={})
    started = time.perf_counter()
    for n, ev in enumerate(interaction_events(dataset), 1):
        _produce(producer, settings.topic_interactions, ev.user_id, ev.model_dump_json())
        stats.last_event_of_user[ev.user_id] = ev.event_id  # type: ignore[index]
        stats.interactions = n
        if rate:
            ahead = n / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        if progress and n % 100 == 0:
            progress(100)
    producer.flush(60)
    if progress:
        progress(stats.interactions % 100)
    stats.seconds = time.perf_counter() - started
    return stats


def publish_raw(settings: Settings, topic: str, key: str | None, value: bytes | str | dict) -> None:
    """Send one event as given (tests and operators use it to publish hand-written or malformed events)."""
    publish_many(settings, topic, [(key, value)])


def publish_many(settings: Settings, topic: str, events: Iterable[tuple[str | None, bytes | str | dict]]) -> None:
    """Send ``(key, value)`` events as given through one producer (a dict value is sent as JSON)."""
    producer = make_producer(settings)
    for key, value in events:
        _produce(producer, topic, key, json.dumps(value) if isinstance(value, dict) else value)
    producer.flush(30)


def _produce(producer: Producer, topic: str, key: str | None, value: str | bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key.encode() if key else None, value=value)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)
