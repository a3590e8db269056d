"""The flow: Faust app, topics, table and agents, described from Settings (running it is the CLI's job).

Agents are thin: they gather micro-batches, hand them to ``streams.handlers`` in executor threads so
inference and Milvus calls never block the event loop, write user state back into the changelog
table, and send recommendations and dead letters. Agent concurrency stays 1 (see README).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import faust
from faust.streams import _current_event  # the context var Faust's tables read the partition from
from faust.types import EventT

from streams import metrics
from streams.handlers import Handlers, dead_letter, parse_batch
from streams.kafka import cap_faust_fetch_wait, faust_broker_options
from streams.params import (
    arm_split_from_settings,
    encoder_params_from_settings,
    live_windows_from_settings,
    online_arms_from_settings,
    online_models_from_settings,
    ranking_params_from_settings,
)
from streams.schemas import (
    ContentEvent,
    DeadLetter,
    Feed,
    InteractionEvent,
    LiveSegmentEvent,
    LiveState,
    LiveStatusEvent,
    RejectedEvent,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from ranking.local_tier import LocalSearchTier
    from ranking.online import OnlineModels
    from streams.model_updates import ModelUpdates

log = logging.getLogger(__name__)


def rocksdb_options(s: Settings) -> dict[str, int]:
    """Bounds on what RocksDB keeps in memory per table partition: Faust's defaults allow 2 GiB of read cache
    and 192 MiB of memtables each, so a worker's memory grew with its users until that was reached."""
    return {
        "block_cache_size": s.rocksdb_block_cache_mib * 2**20,
        "block_cache_compressed_size": s.rocksdb_block_cache_mib * 2**20,
        "write_buffer_size": s.rocksdb_write_buffer_mib * 2**20,
        "max_write_buffer_number": 2,
    }


class Services:
    """Encoder and index, created on first use inside the worker (model loading takes seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.encoder_pool = ThreadPoolExecutor(1, thread_name_prefix="livelens-encoder")
        self.index_pool = ThreadPoolExecutor(1, thread_name_prefix="livelens-index")
        self.sink_pool = ThreadPoolExecutor(1, thread_name_prefix="livelens-recs")
        self._handlers: Handlers | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self.search_tier: LocalSearchTier | None = None  # set when settings.local_search is on

    async def handlers(self) -> Handlers:
        """The handlers, built on first use; a failed build (model missing, Milvus down) is retried.

        Raising here would crash the calling agent with a micro-batch already taken, so failures
        back off like ``run_in`` and show in /health and livelens_processing_errors_total{step="load"}.
        """
        async with self._lock:
            delay = 0.5
            while self._handlers is None:
                try:
                    self._handlers = await asyncio.get_running_loop().run_in_executor(self.index_pool, self._build)
                    self.last_error = None
                except Exception as exc:
                    metrics.PROCESSING_ERRORS.labels("load", type(exc).__name__).inc()
                    self.last_error = f"load: {type(exc).__name__}: {exc}"[:500]
                    log.exception("loading the encoder or connecting to Milvus failed; retrying in %.1fs", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        return self._handlers

    def _build(self) -> Handlers:
        from encoders.pipeline import MediaPipeline
        from encoders.text import build_text_encoder
        from storage.milvus import MilvusIndex
        from storage.modalities import MilvusModalityStore

        s = self.settings
        encoder_params = encoder_params_from_settings(s)
        if s.blas_threads is not None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=s.blas_threads, user_api="blas")  # process-wide; torch has its own pool
        encoder = metrics.TimedEncoder(build_text_encoder(encoder_params), modality="text")
        milvus: Any = MilvusIndex(
            s.resolved_milvus_uri(),
            s.milvus_collection,
            encoder.dim,
            token=s.milvus_token,
            timeout=s.milvus_timeout_s,
            index_type=s.milvus_index_type,
            index_params=s.milvus_index_params,
            search_params=s.milvus_search_params,
        )
        if s.local_search:
            from ranking.local_tier import LocalSearchTier
            from storage.catalog import MilvusCatalog

            catalog = MilvusCatalog(
                s.resolved_milvus_uri(), s.milvus_collection, token=s.milvus_token, timeout=s.milvus_timeout_s
            )
            milvus = LocalSearchTier(
                milvus,
                catalog,
                encoder.dim,
                refresh_s=s.local_search_refresh_s,
                lookback_s=s.local_search_lookback_s,
            )
            self.search_tier = milvus
        index = metrics.TimedIndex(milvus)
        arms = online_arms_from_settings(s)
        metrics.MODEL_INFO.info({"text_encoder": encoder.name, "dim": str(encoder.dim), "device": encoder.device})
        metrics.record_arms(arms, [feed.value for feed in Feed], describe=True)
        return Handlers(
            index=index,
            encoder=encoder,
            user_model=arms["a"].user_model,
            ranking=ranking_params_from_settings(s),
            candidates=s.candidates,
            topics={"interactions": s.topic_interactions, "content": s.topic_content},
            media=MediaPipeline(encoder_params),
            modalities=MilvusModalityStore(
                s.resolved_milvus_uri(),
                f"{s.milvus_collection}_modalities",
                encoder.dim,
                token=s.milvus_token,
                timeout=s.milvus_timeout_s,
            ),
            live_windows=live_windows_from_settings(s),
            fusion_weights=s.fusion_weights,
            live_refresh_alpha=s.live_refresh_alpha,
            models=arms["a"],
            variant=arms.get("b"),
            split=arm_split_from_settings(s),
            online_lists=s.online_metric_lists,
            log_training=s.trainer,
        )

    def dependency_error(self) -> str | None:
        """What is failing now: a batch being retried, or the search tier's polls of Milvus (it keeps
        serving from memory meanwhile, but new items and other workers' writes stop arriving)."""
        if self.last_error is not None:
            return self.last_error
        tier_error = self.search_tier.last_refresh_error if self.search_tier is not None else None
        return f"search tier refresh: {tier_error}" if tier_error else None

    def local_index_items(self) -> int | None:
        """Items in the in-process search tier (None without one): benchmarks wait on it."""
        return self.search_tier.count() if self.search_tier is not None else None

    @property
    def ready(self) -> bool:
        return self._handlers is not None


USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


def set_in_partition_of(event: EventT, table: faust.Table, key: str, value: Any) -> asyncio.Future[Any]:
    """Write a table key as if inside ``event``'s processing; return its changelog record's future.

    A micro-batch mixes partitions, and Faust picks the changelog (and RocksDB) partition of a write
    from the current event: pin it to the event that carried this user's update, so the state lives
    in the same partition as the user's input events and recovers on the worker that owns them.

    The same two steps as ``table[key] = value`` (``Table.on_key_set`` sends the changelog record,
    then the store is written), but the record's future is kept: it resolves once the broker has
    acknowledged the record (or fails). ``table[key] = value`` drops it, and nothing else waits for it
    before the input offsets are committed (see :func:`write_states`).
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


async def until_written(
    table: faust.Table,
    writes: dict[str, tuple[EventT, Any]],
    futures: dict[str, asyncio.Future[Any]],
    *,
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

    A record that fails is written again (the same state, same partition) after a growing delay,
    like ``run_in``: the batch is not acked meanwhile, so no event is committed without its state.
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
        futures = write_states(table, {user: writes[user] for user in failed})


async def until_sent(
    topic: faust.TopicT, records: list[tuple[bytes, bytes]], futures: list[Any], *, retry_delay_s: float = 0.5
) -> None:
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
        futures = [await topic.send(key=k, value=v) for k, v in records]


def build_app(settings: Settings) -> faust.App:
    s = settings
    s.data_dir.mkdir(parents=True, exist_ok=True)
    if s.consumer_fetch_wait_ms is not None:
        cap_faust_fetch_wait(s.consumer_fetch_wait_ms)
    app = faust.App(
        # Encoder-only workers form their own consumer group: in a shared group Faust could assign them
        # interaction partitions they have no agent for.
        f"{s.app_id}-encoder" if s.worker_role == "encoder" else s.app_id,
        **faust_broker_options(s),
        store=s.table_store,
        datadir=str(s.data_dir / "faust"),
        web_host=s.web_host,
        web_port=s.web_port,
        web_enabled=True,
        autodiscover=False,
        key_serializer="raw",
        value_serializer="raw",
        recovery_consistency_check=s.table_consistency_check,
    )
    services = Services(s)
    app.livelens_services = services  # type: ignore[attr-defined]

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=s.partitions)

    content_topic = topic(s.topic_content)
    live_topic = topic(s.topic_live_status)
    interactions_topic = topic(s.topic_interactions)
    segments_topic = topic(s.topic_live_segments)
    dlq_topic = topic(s.topic_dead_letter)
    feed_topics = {feed: topic(name) for feed, name in s.feed_topics().items()}
    feed_topic_names = s.feed_topics()
    training_topic = topic(s.topic_training)
    updates = model_updates_of(s) if s.trainer and s.worker_role != "encoder" else None
    app.livelens_model_updates = updates  # type: ignore[attr-defined]
    sink = None
    if s.recs_producer == "confluent" and s.worker_role != "encoder":
        from streams.rec_sink import RecommendationSink

        sink = RecommendationSink(s)

    user_state = app.Table(
        "user_state",
        default=None,
        partitions=s.partitions,
        options=rocksdb_options(s) if s.table_store.startswith("rocksdb") else None,
        # keys and values use Faust's default json codec: no pickle anywhere
    )

    async def send_dead(letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.source_topic, letter.reason).inc()
            await dlq_topic.send(value=letter.model_dump_json().encode())

    async def run_in(pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        """Run blocking work off the loop; retry failures (Milvus down, encoder error) with backoff.

        The batch is neither skipped nor acked while it fails, so no event is lost; the failure shows
        in /health and in livelens_processing_errors_total until a retry succeeds.
        """
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
                app.log.exception("%s failed; retrying in %.1fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            services.last_error = None
            return result

    encodes = s.worker_role in ("all", "encoder")
    ranks = s.worker_role in ("all", "ranking")

    async def content_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(s.encoder_batch_size, within=s.encoder_batch_wait_s):
            started = time.perf_counter()
            handlers = await services.handlers()
            parsed = parse_batch(ContentEvent, s.topic_content, [e.value for e in events])
            await send_dead(parsed.dead)
            good = [ev for _, ev in parsed.events]
            for ev in good:
                metrics.EVENTS_CONSUMED.labels(s.topic_content, ev.kind.value).inc()
            content = await run_in(services.encoder_pool, handlers.index_content, good)
            await send_dead(
                [dead_letter(s.topic_content, ev.model_dump_json().encode(), err) for ev, err in content.dead]
            )
            for reason in content.media_errors:
                metrics.MEDIA_ERRORS.labels(reason).inc()
            for item in content.items:
                metrics.ITEMS_INDEXED.labels(item.feed.value).inc()
                if item.is_live:
                    metrics.LIVE_NOW.inc()
            metrics.BATCH_SIZE.labels("content").observe(len(events))
            metrics.PROCESSING.labels("content").observe(time.perf_counter() - started)

    async def live_status_agent(stream: faust.StreamT) -> None:
        async for raw in stream:
            started = time.perf_counter()
            handlers = await services.handlers()
            parsed = parse_batch(LiveStatusEvent, s.topic_live_status, [raw])
            await send_dead(parsed.dead)
            for _, ev in parsed.events:
                metrics.EVENTS_CONSUMED.labels(s.topic_live_status, ev.status.value).inc()
                try:
                    await run_in(services.index_pool, handlers.apply_live_status, ev)
                except RejectedEvent as exc:
                    await send_dead([dead_letter(s.topic_live_status, raw, exc)])
                    continue
                if ev.status is LiveState.live:
                    metrics.LIVE_NOW.inc()
                else:
                    metrics.LIVE_NOW.dec()
            metrics.PROCESSING.labels("live_status").observe(time.perf_counter() - started)

    async def interaction_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(s.interaction_batch_size, within=s.interaction_batch_wait_s):
            started = time.perf_counter()
            handlers = await services.handlers()
            if updates is not None and not updates.waited:  # cold start: rank with the trainer's latest snapshot
                await updates.wait_ready(functools.partial(apply_model_updates, handlers), timeout=60.0)
            parsed = parse_batch(InteractionEvent, s.topic_interactions, [e.value for e in events])
            await send_dead(parsed.dead)
            for _, ev in parsed.events:
                metrics.EVENTS_CONSUMED.labels(s.topic_interactions, ev.type.value).inc()
            users = {ev.user_id for _, ev in parsed.events}
            states = {u: user_state.get(u) for u in users}
            result = await run_in(services.index_pool, handlers.process_interactions, parsed.events, states)
            await send_dead([letter for _, letter in result.dead])
            metrics.DUPLICATES.inc(result.duplicates)
            metrics.record_online(result.online, result.unscored)
            metrics.record_arms(handlers.arms)
            last_event_of = {ev.user_id: events[pos] for pos, ev in parsed.events}
            writes = {user: (last_event_of[user], state) for user, state in result.states.items()}
            sent = write_states(user_state, writes)  # awaited at the end: recommendations go out meanwhile
            # training records, like the state writes, must be with the broker before the offsets commit
            training = [(user.encode(), record) for user, record in result.training]
            logged = [await training_topic.send(key=k, value=v) for k, v in training]
            for segment in result.live_comments:
                await segments_topic.send(key=segment.item_id.encode(), value=segment.model_dump_json().encode())
            if sink is not None:
                records = [
                    (feed_topic_names[rec.feed.value], rec.user_id.encode(), rec.model_dump_json().encode())
                    for rec in result.recommendations
                ]
                if records:
                    await run_in(services.sink_pool, sink.deliver, records)
            for rec in result.recommendations:
                if sink is None:
                    await feed_topics[rec.feed.value].send(
                        key=rec.user_id.encode(), value=rec.model_dump_json().encode()
                    )
                metrics.RECOMMENDATIONS.labels(rec.feed.value).inc()
                if rec.trigger_ts is not None:
                    metrics.FRESHNESS.labels(rec.feed.value).observe(max(0.0, time.time() - rec.trigger_ts))
            # Faust acks the batch's events when this body returns, and commits acked offsets: not before
            # the broker holds every state written for them.
            await until_written(user_state, writes, sent)
            await until_sent(training_topic, training, logged)
            metrics.BATCH_SIZE.labels("interactions").observe(len(events))
            metrics.PROCESSING.labels("interactions").observe(time.perf_counter() - started)

    async def live_segment_agent(stream: faust.StreamT) -> None:
        """Fold segments into their stream's window; the refresh timer does the encoding, at a bounded rate."""
        async for raw in stream:
            handlers = await services.handlers()
            parsed = parse_batch(LiveSegmentEvent, s.topic_live_segments, [raw])
            await send_dead(parsed.dead)
            for _, ev in parsed.events:
                metrics.EVENTS_CONSUMED.labels(s.topic_live_segments, "segment").inc()
                try:
                    handlers.add_live_segment(ev)
                except RejectedEvent as exc:
                    await send_dead([dead_letter(s.topic_live_segments, raw, exc)])

    async def refresh_live_streams() -> None:
        if not services.ready:
            return
        handlers = await services.handlers()
        due = handlers.live_windows.due(time.time())
        if not due:
            return
        started = time.perf_counter()
        refreshed = await run_in(services.encoder_pool, handlers.refresh_live, due)
        metrics.LIVE_REFRESHES.inc(len(refreshed.items))
        for reason in refreshed.media_errors:
            metrics.MEDIA_ERRORS.labels(reason).inc()
        metrics.PROCESSING.labels("live_refresh").observe(time.perf_counter() - started)

    # Concurrency stays 1: with more, Faust can commit offsets of events still being processed.
    if encodes:
        app.agent(content_topic, concurrency=1)(content_agent)
        app.agent(segments_topic, concurrency=1)(live_segment_agent)
        # checks often; each stream refreshes at most once per live_refresh_interval_s (LiveWindows.due)
        app.timer(max(0.2, min(1.0, s.live_refresh_interval_s / 2)))(refresh_live_streams)
    if ranks:
        app.agent(live_topic, concurrency=1)(live_status_agent)
        app.agent(interactions_topic, concurrency=1)(interaction_agent)

    async def apply_model_updates(handlers: Handlers) -> None:
        """Swap in the trainer's latest models in the thread that ranks, between batches (see model_updates)."""
        if updates is not None and await run_in(services.index_pool, updates.apply, handlers.arms):
            metrics.record_arms(handlers.arms)  # the served version shows at once, not at the next batch

    @app.task
    async def warm_up() -> None:
        """Load the encoder and connect to Milvus before the first event, so /health can say ready."""
        handlers = await services.handlers()
        if updates is not None:
            updates.start({arm: m.config_id for arm, m in handlers.arms.items()})

    if updates is not None:

        @app.timer(0.25)
        async def follow_trainer() -> None:
            if services.ready:
                await apply_model_updates(await services.handlers())

    input_topics = (s.topic_content, s.topic_live_status, s.topic_interactions)

    @app.timer(5.0)
    async def observe_lag_and_tables() -> None:
        """Consumer lag per input partition every 5 s; table sizes every 30 s (len scans RocksDB keys)."""
        metrics.update_consumer_lag(app.consumer, input_topics)
        metrics.update_table_keys({"user_state": user_state}, every_s=30.0)

    @app.page("/ready")
    async def ready_view(web: Any, request: Any) -> Any:
        """Readiness: models loaded, broker reachable with the input topics, Milvus answering; 200 or 503."""
        ready, body = await metrics.readiness(app, services, s, input_topics)
        if updates is not None:  # with a trainer: its latest snapshot is served (when there is one)
            body["checks"]["trainer_models"] = {"ok": updates.ready, **updates.status()}  # same shape as the others
            ready = ready and updates.ready
            body["status"] = "ready" if ready else "not_ready"
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        error = services.dependency_error()
        healthy = services.ready and error is None
        status = "ok" if healthy else ("degraded" if error else "loading")
        body = {"status": status, "models_loaded": services.ready, "error": error}
        return web.json(body, status=200 if healthy else 503)

    @app.page("/stats")
    async def stats_view(web: Any, request: Any) -> Any:
        """Counters the demo and tests poll to know the worker caught up."""
        samples = {
            family.name: sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
            for m in (
                metrics.ITEMS_INDEXED,
                metrics.RECOMMENDATIONS,
                metrics.DEAD_LETTERS,
                metrics.EVENTS_CONSUMED,
                metrics.LIVE_REFRESHES,
            )
            for family in m.collect()
        }
        local = services.local_index_items()
        extra = {} if local is None else {"local_index_items": local}
        if updates is not None:
            extra["trainer_models"] = updates.status()
        return web.json({"ready": services.ready, "users": len(user_state), **samples, **extra})

    async def page_call(pool: ThreadPoolExecutor, method: str, *args: Any) -> tuple[bool, Any]:
        """One attempt at a page's blocking call, without run_in's retry loop: a request must not hang
        while Milvus or the model is down. (False, (message, status)): 400 for bad input, 503 otherwise."""
        if not services.ready:
            return False, ("models are loading or failing to load; see /health", 503)
        handlers = await services.handlers()
        try:
            fn = getattr(handlers, method)
            result = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, fn, *args), 30.0)
        except RejectedEvent as exc:
            return False, (str(exc), 400)
        except Exception as exc:
            return False, (f"{method} failed: {type(exc).__name__}: {exc}"[:300], 503)
        return True, result

    @app.page("/search")
    async def search_view(web: Any, request: Any) -> Any:
        """GET /search?q=...&feed=short_video|live&limit=10: best-matching items for a text query."""
        query = request.query.get("q", "")
        feed_name = request.query.get("feed", "short_video")
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            limit = -1
        if feed_name not in ("short_video", "live") or not 1 <= limit <= 100 or not 0 < len(query.strip()) <= 500:
            return web.json({"error": "need q (1-500 chars), feed short_video|live, limit 1-100"}, status=400)
        ok, results = await page_call(services.encoder_pool, "search", query, Feed(feed_name), limit)
        if not ok:
            return web.json({"error": results[0]}, status=results[1])
        return web.json({"query": query, "feed": feed_name, "results": results})

    @app.page("/recommendations/{user_id}")
    async def recommendations_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /recommendations/{user_id}?feed=short_video|live: the current list from the latest state;
        a user this worker has no state for gets what is trending in that feed (cold start)."""
        feed_name = request.query.get("feed", "short_video")
        if feed_name not in ("short_video", "live") or not USER_ID.fullmatch(user_id):
            return web.json({"error": "need a valid user id and feed short_video|live"}, status=400)
        state = user_state.get(user_id)
        ok, rec = await page_call(services.index_pool, "recommend_now", user_id, state, Feed(feed_name))
        if not ok:
            return web.json({"error": rec[0]}, status=rec[1])
        return web.json(json.loads(rec.model_dump_json()))

    @app.page("/state/{user_id}")
    async def state_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /state/{user_id}: the user's table value (ids follow the event schema's Id format)."""
        if not USER_ID.fullmatch(user_id):
            return web.json({"error": "need a valid user id (1-128 of A-Z a-z 0-9 _ . : @ -)"}, status=400)
        state = user_state.get(user_id)
        if state is None:
            return web.json({"error": f"unknown user {user_id!r} on this worker"}, status=404)
        return web.json(json.loads(json.dumps(state)))

    return app


def model_updates_of(s: Settings) -> ModelUpdates:
    """The worker's reader of the trainer's snapshots and deltas (started once the handlers exist)."""
    from streams.model_updates import ModelUpdates

    def build(arm: str) -> OnlineModels:
        return online_models_from_settings(s if arm == "a" else s.variant(), arm=arm)

    return ModelUpdates(s, build)
