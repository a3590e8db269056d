"""Every use of Faust's (and its Kafka driver's) private API, in one place: upgrade Faust, read this file.

- :func:`set_in_partition_of` / :func:`write_states`: send a table key's changelog record as if inside a
  given event, and keep its future (``faust.streams._current_event``, ``Table.send_changelog``), optionally
  without moving the store's persisted offset (``Table.changelog_topic``); :func:`store_states` writes the
  local store (``Table.data``) once the broker holds them.
- :func:`changelog_partition`: the changelog partition such a write goes to.
- :func:`current_event`: the event a table write is pinned to now (tests read it through fakes).
- :func:`cap_faust_fetch_wait`: the consumer's fetch wait, which Faust hard-codes.
- :func:`resume_inputs_after_seek`: the input partitions stay paused until Faust's end of recovery has
  sought them to their committed offsets and cleared the stream queues (``Recovery.on_recovery_completed``,
  ``Recovery._resume_streams``, ``Consumer.resume_partitions``).
- :func:`faust_worker`: a ``faust.Worker`` whose start-up spinner does not leave the root logger at DEBUG.
- :func:`fetch_only_active_partitions`: a fetch never reads Faust's emptied set of active partitions as
  "every partition" (``AIOKafkaConsumerThread._fetch_records``, aiokafka's ``Fetcher.fetched_records``).

``tests/unit/test_architecture.py`` checks that no other module imports a private ``faust`` name.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import types
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

import faust
from faust.streams import _current_event  # the context var Faust's tables read the partition from
from faust.tables.recovery import Recovery
from faust.types import TP, EventT

log = logging.getLogger(__name__)


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
    """Send a table key's changelog record as if inside ``event``'s processing; return the record's future.

    A micro-batch mixes partitions, and Faust picks the changelog (and RocksDB) partition of a write
    from the current event: pin it to the event that carried this user's update, so the state lives
    in the same partition as the user's input events and recovers on the worker that owns them.

    The first of the two steps of ``table[key] = value`` (``Table.on_key_set`` sends the changelog record,
    then the store is written), but the record's future is kept: it resolves once the broker has
    acknowledged the record (or fails). ``table[key] = value`` drops it, and nothing else waits for it
    before the input offsets are committed (see ``streams.roles.shell.until_written``).

    ``persist_offset=False`` sends the record without ``Table._on_changelog_sent``, the callback that
    stores its offset in RocksDB as the point a restart resumes recovery after (and checks against the
    changelog's reported end: ``ConsistencyError`` when the store is ahead). ``shell.start_writes``
    lets only a micro-batch's one-record tail batches move it, so it never passes the end the
    embedded broker reports, even after a crash between the two (docs/embedded-broker.md).

    The local store is written apart (:func:`store_states`), once everything the micro-batch owes the
    broker is acknowledged, so it is never ahead of the changelog or the training log after a crash.
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
    finally:
        _current_event.reset(token)
    return future


def write_states(
    table: faust.Table, writes: dict[str, tuple[EventT, Any]], *, persist_offset: bool = True
) -> dict[str, asyncio.Future[Any]]:
    """Send each ``user -> (event, state)`` now (see :func:`set_in_partition_of`); return their changelog futures."""
    return {
        user: set_in_partition_of(event, table, user, state, persist_offset=persist_offset)
        for user, (event, state) in writes.items()
    }


def store_states(table: faust.Table, writes: dict[str, tuple[EventT, Any]]) -> None:
    """Write each ``user -> (event, state)`` to the table's local store only, in its event's partition."""
    for user, (event, state) in writes.items():
        token = _current_event.set(weakref.ref(event))
        try:
            table.data[user] = state
        finally:
            _current_event.reset(token)


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


def resume_inputs_after_seek() -> None:
    """Keep a worker's input partitions paused until Faust has sought them and cleared its stream queues.

    Why: at the end of every recovery (``Recovery.on_recovery_completed``, or ``_resume_streams`` without
    tables) Faust resumes the input partitions, then awaits the seek to their committed offsets, then
    resumes flow control, which clears every stream queue (``FlowControlEvent.resume`` always clears,
    and Faust's channels are ``clear_on_resume``). The fetcher runs meanwhile (flow was resumed for the
    changelog reads), so events it delivers during the await are dropped by the clear, while the
    consumer's read offset has moved past them and is then reset to the committed offset; the next event
    looks as if it followed a hole, and Faust's ``_drain_messages`` records the hole as a gap
    (``Consumer._add_gap``, meant for compacted or transactional topics), which its commits then cover.
    Those events are committed without ever reaching an agent. The longer the recovery, the more the
    fetcher has prefetched by then: a restart from an empty local store (the whole changelog to read)
    lost 15 events this way in the crash test (docs/reliability.md). With the inputs held back, nothing
    of theirs can be delivered before the clear, and they are read from their committed offsets. Needs
    :func:`fetch_only_active_partitions`: meanwhile no partition at all is active. Process-wide; idempotent.
    """
    for name in ("on_recovery_completed", "_resume_streams"):
        method = getattr(Recovery, name)
        if not getattr(method, "livelens_holds_inputs", False):
            setattr(Recovery, name, _holding_inputs(method))


def _holding_inputs(
    method: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    @functools.wraps(method)
    async def run(self: Recovery, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        held: set[TP] = set()

        def hold(tps: Iterable[TP]) -> None:
            held.update(tps)

        consumer.resume_partitions = hold  # the instance attribute shadows the method while Faust runs its steps
        try:
            await method(self, generation_id)
        finally:
            vars(consumer).pop("resume_partitions", None)
        if held and self.app.consumer_generation_id == generation_id:
            consumer.resume_partitions(held)
            log.info("resumed %d input partitions after the seek to their committed offsets", len(held))
        elif held:  # rebalanced meanwhile: the next recovery resumes its own assignment
            log.info("rebalanced during the seek at the end of recovery; the next recovery resumes the inputs")

    run.livelens_holds_inputs = True  # type: ignore[attr-defined]
    return run


class _ActivePartitions:
    """Faust's live set of active partitions as aiokafka's fetcher reads it: never empty-means-all.

    aiokafka's ``Fetcher.fetched_records(partitions)`` returns the records of *every* partition when
    ``partitions`` is empty. Faust hands it its live set of active partitions, from the event loop to the
    consumer's thread, and pauses partitions meanwhile: when the last active ones are paused while a
    fetch waits (the changelog partitions at the end of a recovery, with the inputs still paused), aiokafka
    drains every partition's buffered records, consumes their offsets, and Faust's ``getmany`` then drops
    them as not active. They never reach an agent: the consumer hangs at its committed offsets, or, once
    newer events come, records the hole as a gap and commits it.
    """

    def __init__(self, live: set[TP]) -> None:
        self.live = live

    def __bool__(self) -> bool:
        return True  # a filter, even when it lets nothing through

    def __contains__(self, tp: object) -> bool:
        return tp in self.live

    def __iter__(self) -> Iterator[TP]:
        return iter(set(self.live))


def fetch_only_active_partitions() -> None:
    """Make every fetch of Faust's consumer filter by its active partitions, empty or not (:class:`_ActivePartitions`).

    Process-wide; idempotent."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    fetch = thread._fetch_records
    if getattr(fetch, "livelens_filters", False):
        return

    @functools.wraps(fetch)
    async def fetch_records(self: Any, consumer: Any, active_partitions: set[TP] | None, **kwargs: Any) -> Any:
        partitions = None if active_partitions is None else _ActivePartitions(active_partitions)
        return await fetch(self, consumer, partitions, **kwargs)

    fetch_records.livelens_filters = True  # type: ignore[attr-defined]
    thread._fetch_records = fetch_records


def faust_worker(app: faust.App, log_level: str, quiet: bool = False) -> faust.Worker:
    """A ``faust.Worker`` logging at ``log_level``, without its terminal spinner.

    Why: at WARN and above Faust installs a spinner handler on the root logger and sets the root logger to
    DEBUG so that every record spins it; it never lowers it again. Every ``log.debug`` of aiokafka and
    Faust then builds a record that no handler prints: 12 % of the event-loop thread's busy samples of a
    worker under load (py-spy over ``livelens bench freshness``)."""
    worker = faust.Worker(app, loglevel=log_level, quiet=quiet)
    worker.spinner = None
    return worker
