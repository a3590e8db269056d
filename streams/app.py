"""The flow: Faust app, topics and table, described from Settings, with each role's agents wired in
(running it is the CLI's job).

What the agents do lives in ``streams.roles`` (one module per role, bodies as plain coroutines); they
gather micro-batches, hand them to ``streams.handlers`` in executor threads so inference and Milvus
calls never block the event loop, write user state back into the changelog table, and send
recommendations and dead letters. Agent concurrency stays 1 (see README). Faust's private API is
used only in ``streams.faust_internals``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import faust

from streams import metrics
from streams.faust_internals import cap_faust_fetch_wait, fetch_only_active_partitions, resume_inputs_after_seek
from streams.kafka import faust_broker_options
from streams.pages import USER_ID, register_pages
from streams.params import online_models_from_settings
from streams.roles import encoder, ranking
from streams.roles.services import Services
from streams.roles.shell import Worker, until_delivered, until_flushed, until_sent, until_written
from streams.settings import Settings

if TYPE_CHECKING:
    from ranking.online import OnlineModels
    from streams.handlers import Handlers
    from streams.model_updates import ModelUpdates

__all__ = [
    "USER_ID",
    "Services",
    "build_app",
    "model_updates_of",
    "rocksdb_options",
    "until_delivered",
    "until_flushed",
    "until_sent",
    "until_written",
]

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


def build_app(settings: Settings) -> faust.App:
    s = settings
    s.data_dir.mkdir(parents=True, exist_ok=True)
    if s.consumer_fetch_wait_ms is not None:
        cap_faust_fetch_wait(s.consumer_fetch_wait_ms)
    # else a recovery can commit events no agent saw (docs/reliability.md)
    resume_inputs_after_seek()
    fetch_only_active_partitions()
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

    inputs = {name: topic(name) for name in (s.topic_content, s.topic_live_status, s.topic_interactions)}
    inputs[s.topic_live_segments] = segments_topic = topic(s.topic_live_segments)
    inputs[s.topic_fanout] = fanout_topic = topic(s.topic_fanout)
    outputs = {name: topic(name) for name in (s.topic_dead_letter, s.topic_training, *s.feed_topics().values())}
    outputs[s.topic_live_segments] = segments_topic
    outputs[s.topic_fanout] = fanout_topic
    worker = Worker(s, services, outputs, log=app.log)
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
    ranker = ranking.Ranking(worker, user_state, updates, sink)

    if s.worker_role in ("all", "encoder"):
        encoder.register(app, worker, inputs.__getitem__)
    if s.worker_role in ("all", "ranking"):
        ranking.register(app, ranker, inputs.__getitem__)

    @app.task
    async def warm_up() -> None:
        """Load the encoder and connect to Milvus before the first event, so /health can say ready."""
        handlers = await services.handlers()
        if updates is not None:
            updates.start(arm_configs(handlers))

    if updates is not None:

        @app.timer(s.delta_interval_s)  # as often as the trainer publishes deltas: a model never waits a tick longer
        async def follow_trainer() -> None:
            if services.ready:
                await ranker.apply_model_updates(await services.handlers())

    input_topics = (s.topic_content, s.topic_live_status, s.topic_interactions)

    @app.timer(5.0)
    async def observe_lag_and_tables() -> None:
        """Consumer lag per input partition every 5 s; table sizes every 30 s (len scans RocksDB keys)."""
        metrics.update_consumer_lag(app.consumer, input_topics)
        metrics.update_table_keys({"user_state": user_state}, every_s=30.0)

    register_pages(app, s, services, user_state, updates, input_topics)
    return app


def arm_configs(handlers: Handlers) -> dict[str, str]:
    """Arm -> configuration id of its models: which snapshots on the models topic are this worker's."""
    return {arm: m.config_id for arm, m in handlers.arms.items()}


def start_loading(app: faust.App) -> None:
    """Build the handlers and serve the trainer's latest snapshot now, in the thread that ranks, before
    Faust starts: the consumer group's join (seconds; after a SIGKILL it also waits out the dead member's
    session) then overlaps the loading instead of preceding it. Without it both happen on first use."""
    services: Services = app.livelens_services  # type: ignore[attr-defined]
    updates: ModelUpdates | None = app.livelens_model_updates  # type: ignore[attr-defined]
    if updates is None:
        services.start_loading()
        return

    def serve_snapshot(handlers: Handlers) -> None:
        updates.start(arm_configs(handlers))
        if updates.apply_until_ready(handlers.arms, timeout=60.0):
            metrics.record_arms(handlers.arms)

    services.start_loading(serve_snapshot)


def model_updates_of(s: Settings) -> ModelUpdates:
    """The worker's reader of the trainer's snapshots and deltas (started once the handlers exist)."""
    from streams.model_updates import ModelUpdates

    def build(arm: str) -> OnlineModels:
        return online_models_from_settings(s if arm == "a" else s.variant(), arm=arm)

    return ModelUpdates(s, build)
