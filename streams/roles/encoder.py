"""The encoder role: index content, fold live comments into their stream's window, re-encode live streams.

Bodies take a :class:`~streams.roles.shell.Worker` and one event or micro-batch; :func:`register`
wires them as the app's agents and timer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from faust.types import EventT

from ranking.index import IndexedItem
from ranking.model_log import ContentRecord, encode_content
from streams import metrics
from streams.handlers import dead_letter, parse_batch
from streams.roles.shell import Worker, send_fanout, start_sends, until_delivered
from streams.schemas import ContentEvent, LiveSegmentEvent, RejectedEvent


async def content_batch(w: Worker, events: Sequence[EventT]) -> None:
    """Encode and index a micro-batch of content events; dead-letter what cannot be indexed."""
    s, services = w.settings, w.services
    started = time.perf_counter()
    handlers = await services.handlers()
    parsed = parse_batch(ContentEvent, s.topic_content, [e.value for e in events])
    await w.send_dead(parsed.dead)
    good = [ev for _, ev in parsed.events]
    for ev in good:
        metrics.EVENTS_CONSUMED.labels(s.topic_content, ev.kind.value).inc()
    content = await w.run_in(services.encoder_pool, handlers.index_content, good)
    await w.send_dead([dead_letter(s.topic_content, ev.model_dump_json().encode(), err) for ev, err in content.dead])
    for reason in content.media_errors:
        metrics.MEDIA_ERRORS.labels(reason).inc()
    for item in content.items:
        metrics.ITEMS_INDEXED.labels(item.feed.value).inc()
        if item.is_live:
            metrics.LIVE_NOW.inc()
    await follow_graph(w, content.items, refresh=False)
    metrics.BATCH_SIZE.labels("content").observe(len(events))
    metrics.PROCESSING.labels("content").observe(time.perf_counter() - started)


async def follow_graph(w: Worker, items: Sequence[IndexedItem], refresh: bool) -> None:
    """What indexed items mean for creators: with a trainer, a content record for its creator vectors
    (``ranking.model_log.ContentRecord``); for a new upload or stream, one fan-out record per follower
    (``streams.roles.ranking.fanout_batch`` refreshes their lists). Returns once the broker holds them."""
    s = w.settings
    with_creator = [it for it in items if it.creator_id]
    if not with_creator:
        return
    if s.trainer:
        record = encode_content(ContentRecord(tuple(with_creator), refresh=refresh))
        logged = await start_sends(
            w.topics[s.topic_training],
            [(with_creator[0].creator_id.encode(), record)],
            partitions=s.partitions if s.exact_end_offsets else None,
        )
        await until_delivered(logged)
    if not refresh:
        await send_fanout(w, with_creator)


async def live_segment(w: Worker, raw: bytes | None) -> None:
    """Fold a segment into its stream's window; the refresh timer does the encoding, at a bounded rate."""
    s = w.settings
    handlers = await w.services.handlers()
    parsed = parse_batch(LiveSegmentEvent, s.topic_live_segments, [raw])
    await w.send_dead(parsed.dead)
    for _, ev in parsed.events:
        metrics.EVENTS_CONSUMED.labels(s.topic_live_segments, "segment").inc()
        try:
            handlers.add_live_segment(ev)
        except RejectedEvent as exc:
            await w.send_dead([dead_letter(s.topic_live_segments, raw, exc)])


async def refresh_live_streams(w: Worker) -> None:
    """Re-encode the live streams whose window is due (each at most once per live_refresh_interval_s)."""
    services = w.services
    if not services.ready:
        return
    handlers = await services.handlers()
    due = handlers.live_windows.due(time.time())
    if not due:
        return
    started = time.perf_counter()
    refreshed = await w.run_in(services.encoder_pool, handlers.refresh_live, due)
    await follow_graph(w, refreshed.items, refresh=True)
    metrics.LIVE_REFRESHES.inc(len(refreshed.items))
    for reason in refreshed.media_errors:
        metrics.MEDIA_ERRORS.labels(reason).inc()
    metrics.PROCESSING.labels("live_refresh").observe(time.perf_counter() - started)


def register(app: Any, w: Worker, topic: Any) -> None:
    """The encoder role's agents and timer on ``app``; ``topic(name)`` gives an input topic."""
    s = w.settings

    async def content_agent(stream: Any) -> None:
        async for events in stream.take_events(s.encoder_batch_size, within=s.encoder_batch_wait_s):
            await content_batch(w, events)

    async def live_segment_agent(stream: Any) -> None:
        async for raw in stream:
            await live_segment(w, raw)

    async def refresh_live_streams_timer() -> None:
        await refresh_live_streams(w)

    # Concurrency stays 1: with more, Faust can commit offsets of events still being processed.
    app.agent(topic(s.topic_content), concurrency=1)(content_agent)
    app.agent(topic(s.topic_live_segments), concurrency=1)(live_segment_agent)
    # checks often; each stream refreshes at most once per live_refresh_interval_s (LiveWindows.due)
    app.timer(max(0.2, min(1.0, s.live_refresh_interval_s / 2)))(refresh_live_streams_timer)
