"""Every use of Faust's (and its Kafka driver's) private API, in one place: upgrade Faust, read this file.

- :func:`set_in_partition_of` / :func:`write_states`: write a table key as if inside a given event, and
  keep the changelog record's future (``faust.streams._current_event``, ``Table.send_changelog``,
  ``Table.data``), optionally without moving the store's persisted offset (``Table.changelog_topic``).
- :func:`changelog_partition`: the changelog partition such a write goes to.
- :func:`current_event`: the event a table write is pinned to now (tests read it through fakes).
- :func:`cap_faust_fetch_wait`: the consumer's fetch wait, which Faust hard-codes.

``tests/unit/test_architecture.py`` checks that no other module imports a private ``faust`` name.
"""

from __future__ import annotations

import asyncio
import types
import weakref
from typing import Any

import faust
from faust.streams import _current_event  # the context var Faust's tables read the partition from
from faust.types import EventT


def current_event() -> EventT | None:
    """The event Faust would take a table write's partition from now, or None."""
    ref = _current_event.get(None)
    return ref() if ref is not None else None


def changelog_partition(event: EventT, table: faust.Table, key: str) -> int:
    """The changelog partition a write of ``key`` pinned to ``event`` goes to (the event's partition)."""
    token = _current_event.set(weakref.ref(event))
    try:
        return int(table.partition_for_key(key))
    finally:
        _current_event.reset(token)


def set_in_partition_of(
    event: EventT, table: faust.Table, key: str, value: Any, *, persist_offset: bool = True
) -> asyncio.Future[Any]:
    """Write a table key as if inside ``event``'s processing; return its changelog record's future.

    A micro-batch mixes partitions, and Faust picks the changelog (and RocksDB) partition of a write
    from the current event: pin it to the event that carried this user's update, so the state lives
    in the same partition as the user's input events and recovers on the worker that owns them.

    The same two steps as ``table[key] = value`` (``Table.on_key_set`` sends the changelog record,
    then the store is written), but the record's future is kept: it resolves once the broker has
    acknowledged the record (or fails). ``table[key] = value`` drops it, and nothing else waits for it
    before the input offsets are committed (see ``streams.roles.shell.until_written``).

    ``persist_offset=False`` sends the record without ``Table._on_changelog_sent``, the callback that
    stores its offset in RocksDB as the point a restart resumes recovery after (and checks against the
    changelog's reported end: ``ConsistencyError`` when the store is ahead). ``shell.start_writes``
    lets only a micro-batch's one-record tail batches move it, so it never passes the end the
    embedded broker reports, even after a crash between the two (docs/embedded-broker.md).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        partition = table.partition_for_key(key)
        if persist_offset:
            future = table.send_changelog(partition, key, value)
        else:
            future = table.changelog_topic.send_soon(
                key=key,
                value=value,
                partition=partition,
                key_serializer=table.key_serializer,
                value_serializer=table.value_serializer,
                eager_partitioning=True,
            )
        table.data[key] = value
    finally:
        _current_event.reset(token)
    return future


def write_states(
    table: faust.Table, writes: dict[str, tuple[EventT, Any]], *, persist_offset: bool = True
) -> dict[str, asyncio.Future[Any]]:
    """Write each ``user -> (event, state)`` now (see :func:`set_in_partition_of`); return their changelog futures."""
    return {
        user: set_in_partition_of(event, table, user, state, persist_offset=persist_offset)
        for user, (event, state) in writes.items()
    }


def cap_faust_fetch_wait(ms: int) -> None:
    """Make the Faust worker's consumer wait at most ``ms`` for a fetch instead of Faust's fixed 1,500 ms.

    Why: the embedded broker (tansu 0.6) does not answer a waiting fetch when new records arrive; it
    answers when the wait runs out, so every idle-to-busy step cost up to 1.5 s of freshness (measured
    with a bare consumer: p50 3 ms at 5 ms wait, 125 ms at 500 ms). Faust hard-codes the value, so
    its driver module gets an ``aiokafka`` whose consumer class replaces just that argument. The
    cost: an idle worker sends a fetch per partition leader every ``ms``. Process-wide; idempotent.
    """
    import aiokafka
    from faust.transport.drivers import aiokafka as driver

    base = getattr(driver.aiokafka, "_livelens_base_consumer", aiokafka.AIOKafkaConsumer)

    class Consumer(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if "fetch_max_wait_ms" in kwargs:
                kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    proxy = types.ModuleType("aiokafka")
    proxy.__dict__.update(aiokafka.__dict__)
    proxy.AIOKafkaConsumer = Consumer  # type: ignore[attr-defined]
    proxy._livelens_base_consumer = base  # type: ignore[attr-defined]
    driver.aiokafka = proxy  # type: ignore[attr-defined]
