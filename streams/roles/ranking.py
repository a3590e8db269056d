"""The ranking role: apply live status changes, and turn interactions into user state, training records
and recommendations.

Bodies take their dependencies explicitly (:class:`Ranking`) and one event or micro-batch;
:func:`register` wires them as the app's agents and the trainer-following timer.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faust.types import EventT

from streams import metrics
from streams.handlers import Handlers, dead_letter, parse_batch
from streams.roles.shell import (
    Worker,
    send_fanout,
    start_sends,
    start_writes,
    store_written,
    until_delivered,
    until_flushed,
)
from streams.schemas import FanOutEvent, InteractionEvent, LiveState, LiveStatusEvent, Recommendation, RejectedEvent

if TYPE_CHECKING:
    from streams.model_updates import ModelUpdates
    from streams.rec_sink import RecommendationSink


@dataclass
class Ranking:
    """The ranking role's dependencies: ``table`` is the ``user_state`` changelog table (``get`` to read;
    written through ``streams.roles.shell.start_writes``); ``updates`` reads the trainer's models
    (None without a trainer); ``sink`` sends recommendations with confluent-kafka (None: Faust topics)."""

    worker: Worker
    table: Any
    updates: ModelUpdates | None = None
    sink: RecommendationSink | None = None

    async def apply_model_updates(self, handlers: Handlers) -> None:
        """Swap in the trainer's latest models in the thread that ranks, between batches (see model_updates)."""
        w = self.worker
        if self.updates is not None and await w.run_in(w.services.index_pool, self.updates.apply, handlers.arms):
            metrics.record_arms(handlers.arms)  # the served version shows at once, not at the next batch


async def live_status(w: Worker, raw: bytes | None) -> None:
    """Mark an item live or ended in the index; dead-letter a status for an unknown item."""
    s, services = w.settings, w.services
    started = time.perf_counter()
    handlers = await services.handlers()
    parsed = parse_batch(LiveStatusEvent, s.topic_live_status, [raw])
    await w.send_dead(parsed.dead)
    for _, ev in parsed.events:
        metrics.EVENTS_CONSUMED.labels(s.topic_live_status, ev.status.value).inc()
        try:
            item = await w.run_in(services.index_pool, handlers.apply_live_status, ev)
        except RejectedEvent as exc:
            await w.send_dead([dead_letter(s.topic_live_status, raw, exc)])
            continue
        if ev.status is LiveState.live:
            metrics.LIVE_NOW.inc()
            await send_fanout(w, [item])  # followers' live lists, without any event from them
        else:
            metrics.LIVE_NOW.dec()
    metrics.PROCESSING.labels("live_status").observe(time.perf_counter() - started)


async def interactions_batch(r: Ranking, events: Sequence[EventT]) -> None:
    """Fold a micro-batch of interactions into user state; send recommendations, training records and live
    comments; return only once the broker holds every state written and every training record (Faust
    acks the batch's events when the agent's body for it returns, and commits acked offsets)."""
    w, table, updates = r.worker, r.table, r.updates
    s, services, topics = w.settings, w.services, w.topics
    started = time.perf_counter()
    handlers = await services.handlers()
    if updates is not None and not updates.waited:  # cold start: rank with the trainer's latest snapshot
        await updates.wait_ready(functools.partial(r.apply_model_updates, handlers), timeout=60.0)
    parsed = parse_batch(InteractionEvent, s.topic_interactions, [e.value for e in events])
    await w.send_dead(parsed.dead)
    for _, ev in parsed.events:
        metrics.EVENTS_CONSUMED.labels(s.topic_interactions, ev.type.value).inc()
    users = {ev.user_id for _, ev in parsed.events}
    states = {u: table.get(u) for u in users}
    result = await w.run_in(services.index_pool, handlers.process_interactions, parsed.events, states)
    await w.send_dead([letter for _, letter in result.dead])
    metrics.DUPLICATES.inc(result.duplicates)
    metrics.record_online(result.online, result.unscored)
    metrics.record_arms(handlers.arms)
    last_event_of = {ev.user_id: events[pos] for pos, ev in parsed.events}
    writes = {user: (last_event_of[user], state) for user, state in result.states.items()}
    # sent now, awaited at the end: recommendations go out meanwhile
    sent = start_writes(table, writes, exact_end=s.exact_end_offsets)
    # training records, like the state writes, must be with the broker before the offsets commit
    training_topic = topics[s.topic_training]
    training = [(user.encode(), record) for user, record in result.training]
    logged = await start_sends(training_topic, training, partitions=s.partitions if s.exact_end_offsets else None)
    for segment in result.live_comments:
        await topics[s.topic_live_segments].send(key=segment.item_id.encode(), value=segment.model_dump_json().encode())
    await send_recommendations(r, result.recommendations)
    # Faust acks the batch's events when this body returns, and commits acked offsets: not before
    # the broker holds every state written for them (and each partition ends with a one-record batch).
    await asyncio.gather(until_flushed(sent), until_delivered(logged))
    store_written(sent)  # only now: the local store is never ahead of the changelog and the training log
    metrics.BATCH_SIZE.labels("interactions").observe(len(events))
    metrics.PROCESSING.labels("interactions").observe(time.perf_counter() - started)


async def send_recommendations(r: Ranking, recommendations: Sequence[Recommendation]) -> None:
    """Each list to its feed's topic (with the confluent sink when configured), counted and timed."""
    w, sink = r.worker, r.sink
    s, services, topics = w.settings, w.services, w.topics
    feed_topic_names: Mapping[str, str] = s.feed_topics()
    if sink is not None:
        records = [
            (feed_topic_names[rec.feed.value], rec.user_id.encode(), rec.model_dump_json().encode())
            for rec in recommendations
        ]
        if records:
            await w.run_in(services.sink_pool, sink.deliver, records)
    for rec in recommendations:
        if sink is None:
            await topics[feed_topic_names[rec.feed.value]].send(
                key=rec.user_id.encode(), value=rec.model_dump_json().encode()
            )
        metrics.RECOMMENDATIONS.labels(rec.feed.value).inc()
        if rec.trigger_ts is not None:
            metrics.FRESHNESS.labels(rec.feed.value).observe(max(0.0, time.time() - rec.trigger_ts))


async def fanout_batch(r: Ranking, events: Sequence[EventT]) -> None:
    """Refresh and emit the lists of followers named by fan-out records (a followed creator's new upload or
    stream gone live): no state is written, so nothing waits for the changelog."""
    w, table = r.worker, r.table
    s, services = w.settings, w.services
    started = time.perf_counter()
    handlers = await services.handlers()
    parsed = parse_batch(FanOutEvent, s.topic_fanout, [e.value for e in events])
    await w.send_dead(parsed.dead)
    good = [ev for _, ev in parsed.events]
    for ev in good:
        metrics.EVENTS_CONSUMED.labels(s.topic_fanout, ev.feed.value).inc()
    states = {u: table.get(u) for u in {ev.user_id for ev in good}}
    recs = await w.run_in(services.index_pool, handlers.process_fanout, good, states)
    await send_recommendations(r, recs)
    metrics.BATCH_SIZE.labels("fanout").observe(len(events))
    metrics.PROCESSING.labels("fanout").observe(time.perf_counter() - started)


def register(app: Any, r: Ranking, topic: Any) -> None:
    """The ranking role's agents (and, with a trainer, the timer that follows it) on ``app``."""
    w = r.worker
    s = w.settings

    async def live_status_agent(stream: Any) -> None:
        async for raw in stream:
            await live_status(w, raw)

    async def interaction_agent(stream: Any) -> None:
        async for events in stream.take_events(s.interaction_batch_size, within=s.interaction_batch_wait_s):
            await interactions_batch(r, events)

    async def fanout_agent(stream: Any) -> None:
        async for events in stream.take_events(s.interaction_batch_size, within=s.interaction_batch_wait_s):
            await fanout_batch(r, events)

    # Concurrency stays 1: with more, Faust can commit offsets of events still being processed.
    app.agent(topic(s.topic_live_status), concurrency=1)(live_status_agent)
    app.agent(topic(s.topic_interactions), concurrency=1)(interaction_agent)
    app.agent(topic(s.topic_fanout), concurrency=1)(fanout_agent)
