"""Every use of Faust's (and its Kafka driver's) private API, in one place: upgrade Faust, read this file.

- :func:`set_in_partition_of` / :func:`write_states`: write a table key as if inside a given event, and
  keep the changelog record's future (``faust.streams._current_event``, ``Table.send_changelog``,
  ``Table.data``).
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


def set_in_partition_of(event: EventT, table: faust.Table, key: str, value: Any) -> asyncio.Future[Any]:
    """Write a table key as if inside ``event``'s processing; return its changelog record's future.

    A micro-batch mixes partitions, and Faust picks the changelog (and RocksDB) partition of a write
    from the current event: pin it to the event that carried this user's update, so the state lives
    in the same partition as the user's input events and recovers on the worker that owns them.

    The same two steps as ``table[key] = value`` (``Table.on_key_set`` sends the changelog record,
    then the store is written), but the record's future is kept: it resolves once the broker has
    acknowledged the record (or fails). ``table[key] = value`` drops it, and nothing else waits for it
    before the input offsets are committed (see ``streams.roles.shell.until_written``).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        future = table.send_changelog(table.partition_for_key(key), key, value)
        table.data[key] = value
    finally:
        _current_event.reset(token)
    return future


def write_states(table: faust.Table, writes: dict[str, tuple[EventT, Any]]) -> dict[str, asyncio.Future[Any]]:
    """Write each ``user -> (event, state)`` now (see :func:`set_in_partition_of`); return their changelog futures."""
    return {user: set_in_partition_of(event, table, user, state) for user, (event, state) in writes.items()}


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
