"""What every role's agent bodies share, and the waits that keep a batch's offsets from committing early.

Faust acks a micro-batch's events when the agent's body for it returns and commits acked offsets later,
so a body returns only once the broker holds what the batch produced that recovery depends on: the
state written to the changelog (:func:`start_writes`, :func:`until_flushed`) and the training records
(:func:`start_sends`, :func:`until_delivered`). Both end, per partition, with a one-record batch sent
after the rest is acknowledged, so the embedded broker reports exact end offsets at every commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka.partitioner import murmur2
from faust.types import EventT

from ranking.index import IndexedItem
from streams import metrics
from streams.faust_internals import changelog_partition, store_states, write_states
from streams.roles.services import Services
from streams.schemas import DeadLetter, RejectedEvent
from streams.settings import Settings

log = logging.getLogger("streams.app")

K = TypeVar("K", bound=Hashable)
Record = tuple[bytes, bytes, int | None]  # key, value, partition (None: the producer's partitioner)


@dataclass
class Worker:
    """What the agent bodies of every role need.

    ``topics``: output topics by name (anything with Faust's ``async send(key=, value=)`` returning the
    record's future); ``services``: the lazily built handlers and their thread pools; ``log``: where
    retried failures are logged (the Faust app's logger in a worker).
    """

    settings: Settings
    services: Services
    topics: Mapping[str, Any]
    log: Any = field(default=log)

    async def send_dead(self, letters: Sequence[DeadLetter]) -> None:
        dlq = self.topics[self.settings.topic_dead_letter]
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.source_topic, letter.reason).inc()
            await dlq.send(value=letter.model_dump_json().encode())

    async def run_in(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        """Run blocking work off the loop; retry failures (Milvus down, encoder error) with backoff.

        The batch is neither skipped nor acked while it fails, so no event is lost; the failure shows
        in /health and in livelens_processing_errors_total until a retry succeeds.
        """
        services = self.services
        delay = 0.5
        while True:
            try:
                result = await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            except RejectedEvent:
                raise
            except Exception as exc:
                name = getattr(fn, "__name__", "work")
                metrics.PROCESSING_ERRORS.labels(name, type(exc).__name__).inc()
                services.last_error = f"{name}: {type(exc).__name__}: {exc}"[:500]
                self.log.exception("%s failed; retrying in %.1fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            services.last_error = None
            return result


async def send_fanout(w: Worker, items: Sequence[IndexedItem]) -> None:
    """One fan-out record per follower of each item's creator, capped per creator (``fanout_max_followers``),
    keyed by follower: the worker holding their state refreshes their list (``streams.roles.ranking``)."""
    s = w.settings
    handlers = await w.services.handlers()
    events = handlers.fanout_for(items, s.fanout_max_followers, time.time())
    topic = w.topics[s.topic_fanout]
    for ev in events:
        await topic.send(key=ev.user_id.encode(), value=ev.model_dump_json().encode())
        metrics.FANOUT.labels(ev.feed.value).inc()


async def until_written(
    table: Any,
    writes: dict[str, tuple[EventT, Any]],
    futures: dict[str, asyncio.Future[Any]],
    *,
    persist_offset: bool = True,
    retry_delay_s: float = 0.5,
) -> None:
    """Return once the broker holds the changelog record of every write in ``writes``.

    Why: Faust acks a micro-batch's events when the agent's body for it returns (``take_events``), and
    commits acked offsets every ``broker_commit_interval``. Its only barrier before that commit is
    ``producer.flush()``, which does not wait for the changelog: ``ProducerBuffer.flush_atmost``
    gives up as soon as one record takes more than 0.1 s to be handed to the client (each changelog
    record is its own batch here, one request in flight per broker, so a loaded broker or event loop
    is enough), and the record being handed over is not counted at all. The commit then covered events
    whose state had not reached the changelog; after a SIGKILL, state recovered from the changelog
    alone lacked that micro-batch (README "Known limits", docs/reliability.md).

    A record that fails is written again (the same state, same partition, ``persist_offset`` as the
    first time) after a growing delay, like ``run_in``: the batch is not acked meanwhile, so no event is
    committed without its state.
    """
    delay = retry_delay_s
    while futures:
        await asyncio.wait(futures.values())
        failed = [user for user, f in futures.items() if f.cancelled() or f.exception() is not None]
        if not failed:
            return
        first = futures[failed[0]]
        name = "CancelledError" if first.cancelled() else type(first.exception()).__name__
        metrics.PROCESSING_ERRORS.labels("changelog", name).inc()
        log.warning("%d changelog writes failed (%s); writing them again in %.1fs", len(failed), name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
        futures = write_states(table, {user: writes[user] for user in failed}, persist_offset=persist_offset)


async def until_sent(topic: Any, records: list[Record], futures: list[Any], *, retry_delay_s: float = 0.5) -> None:
    """Return once the broker holds every record (``futures``: their first sends); failed ones are sent
    again with a growing delay, as in :func:`until_written`, so the batch is never acked without them."""
    delay = retry_delay_s
    while futures:
        results = await asyncio.gather(*futures, return_exceptions=True)
        records = [r for r, res in zip(records, results, strict=True) if isinstance(res, BaseException)]
        if not records:
            return
        name = type(next(res for res in results if isinstance(res, BaseException))).__name__
        metrics.PROCESSING_ERRORS.labels("training_log", name).inc()
        log.warning("%d training records failed (%s); sending them again in %.1fs", len(records), name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
        futures = [await topic.send(key=k, value=v, partition=p) for k, v, p in records]


def last_per_partition(partition_of: Mapping[K, int]) -> set[K]:
    """The last key (in ``partition_of``'s order) that goes to each partition."""
    last: dict[int, K] = {}
    for key, partition in partition_of.items():
        last[partition] = key
    return set(last.values())


@dataclass
class StateWrites:
    """One micro-batch's user states on their way to the changelog (:func:`start_writes`).

    ``heads`` are sent (``futures``); ``tails``, the last write of each changelog partition, wait
    for them. ``persist_heads``: whether the heads move the store's persisted offset (only without tails).
    ``flushing``: the task that sends the tails as soon as the heads are acknowledged.
    """

    table: Any
    heads: dict[str, tuple[EventT, Any]]
    futures: dict[str, asyncio.Future[Any]]
    tails: dict[str, tuple[EventT, Any]]
    persist_heads: bool
    flushing: asyncio.Task[None] | None = None


def start_writes(
    table: Any, writes: dict[str, tuple[EventT, Any]], *, exact_end: bool, retry_delay_s: float = 0.5
) -> StateWrites:
    """Write every ``user -> (event, state)`` to the changelog; with ``exact_end``, hold back one per partition.

    Why: the embedded broker answers ListOffsets "latest" with the base offset of the partition's last
    stored batch + 1, and Faust's table recovery reads the changelog up to that offset. The heads go
    out now in ordinary multi-record batches; a task sends the tails (one record per partition, nothing
    else of that partition pending, so each is a batch of its own) as soon as every head is
    acknowledged, so their round trip overlaps the recommendations' delivery; :func:`until_flushed`
    waits for it. When the body returns, and so at every offset commit that covers the
    batch, each partition the batch wrote ends with a one-record batch: the reported end is exact.

    A crash between the two leaves a partition ending in a multi-record batch, and recovery reads a
    prefix of the changelog that holds every earlier batch in full (the head batch's base offset is
    past them) and some of this batch's states: its input offsets were not committed, so its events
    are processed again, and the applied event ids kept in user state skip those already in a state.
    Heads do not move RocksDB's persisted offset (``persist_offset=False``), so a store kept across
    the crash is never ahead of the end the broker reports (Faust's consistency check).
    Without ``exact_end`` (real Kafka) every write goes out at once.
    """
    if not exact_end:
        return StateWrites(table, writes, write_states(table, writes), {}, persist_heads=True)
    tails = last_per_partition({user: changelog_partition(event, table, user) for user, (event, _) in writes.items()})
    heads = {user: write for user, write in writes.items() if user not in tails}
    futures = write_states(table, heads, persist_offset=False)
    pending = StateWrites(table, heads, futures, {user: writes[user] for user in tails}, persist_heads=False)
    pending.flushing = asyncio.ensure_future(_flush_writes(pending, retry_delay_s))
    return pending


async def until_flushed(pending: StateWrites, *, retry_delay_s: float = 0.5) -> None:
    """Return once the broker holds every write of ``pending``: the heads, then the tails (see :func:`start_writes`).

    Cancelling this cancels the task that sends the tails (the batch is not acked then anyway)."""
    if pending.flushing is not None:
        await pending.flushing
    else:
        await _flush_writes(pending, retry_delay_s)


def store_written(pending: StateWrites) -> None:
    """Write the micro-batch's states to the local store, once the broker holds them and its training records.

    Why last: after a SIGKILL the restarted worker judges a redelivered event by the state in its local
    store (RocksDB keeps what was written before the kill). Written before the acknowledgements, a state
    could hold an event whose training record never reached the broker: the replay was then a duplicate,
    logged no record, and the trainer never learned that event. Written after them, a replay finds the
    store without the event and applies and logs it again (the trainer drops a record it has learned).
    """
    store_states(pending.table, {**pending.heads, **pending.tails})


async def _flush_writes(pending: StateWrites, retry_delay_s: float) -> None:
    await until_written(
        pending.table, pending.heads, pending.futures, persist_offset=pending.persist_heads, retry_delay_s=retry_delay_s
    )
    if pending.tails:
        futures = write_states(pending.table, pending.tails)
        await until_written(pending.table, pending.tails, futures, retry_delay_s=retry_delay_s)


def key_partition(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner (aiokafka's, murmur2 as in Java) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class RecordSends:
    """Keyed records on their way to a topic (:func:`start_sends`): ``heads`` sent (``futures``), ``tails``
    waiting (``flushing``: the task that sends them once the heads are acknowledged)."""

    topic: Any
    heads: list[Record]
    futures: list[Any]
    tails: list[Record]
    flushing: asyncio.Task[None] | None = None


async def start_sends(
    topic: Any, records: Sequence[tuple[bytes, bytes]], *, partitions: int | None, retry_delay_s: float = 0.5
) -> RecordSends:
    """Send keyed records; with ``partitions`` (the topic's count), hold back the last of each partition.

    Why: the training topic's end offsets are read too (the trainer's restart check, ``training_ends``
    in the benchmarks and the evaluation), so, like the changelog, each partition a batch wrote ends
    with a one-record batch, sent by a task once the rest is acknowledged (:func:`until_delivered` waits
    for it). The records go where the producer's default
    partitioner would put them. ``partitions=None``: every record at once, placed by the producer.
    """
    if partitions is None:
        placed: list[Record] = [(key, value, None) for key, value in records]
        tails: set[int] = set()
    else:
        placed = [(key, value, key_partition(key, partitions)) for key, value in records]
        tails = last_per_partition({n: p for n, (_, _, p) in enumerate(placed) if p is not None})
    heads = [r for n, r in enumerate(placed) if n not in tails]
    futures = [await topic.send(key=k, value=v, partition=p) for k, v, p in heads]
    pending = RecordSends(topic, heads, futures, [placed[n] for n in sorted(tails)])
    if pending.tails:
        pending.flushing = asyncio.ensure_future(_deliver(pending, retry_delay_s))
    return pending


async def until_delivered(pending: RecordSends, *, retry_delay_s: float = 0.5) -> None:
    """Return once the broker holds every record of ``pending``: the heads, then the tails (see :func:`start_sends`)."""
    if pending.flushing is not None:
        await pending.flushing
    else:
        await _deliver(pending, retry_delay_s)


async def _deliver(pending: RecordSends, retry_delay_s: float) -> None:
    await until_sent(pending.topic, pending.heads, pending.futures, retry_delay_s=retry_delay_s)
    if pending.tails:
        futures = [await pending.topic.send(key=k, value=v, partition=p) for k, v, p in pending.tails]
        await until_sent(pending.topic, pending.tails, futures, retry_delay_s=retry_delay_s)
