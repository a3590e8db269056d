"""Create LiveLens's topics with the configured partition count (the embedded broker never auto-creates)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from streams.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [
        settings.topic_content,
        settings.topic_live_status,
        settings.topic_interactions,
        settings.topic_live_segments,
        settings.topic_recs_short_video,
        settings.topic_recs_live,
        settings.topic_recs_creators,
        settings.topic_fanout,
        settings.topic_recs_music,
        settings.topic_dead_letter,
        settings.topic_training,
    ]


def model_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The trainer's output topics and their configs: snapshots compacted (the latest of each chunk key
    is kept), deltas deleted after an hour (a worker only needs those newer than the latest snapshot)."""
    return {
        settings.topic_models: {"cleanup.policy": "compact"},
        settings.topic_model_deltas: {"cleanup.policy": "delete", "retention.ms": str(3_600_000)},
    }


def changelog_topic(settings: Settings) -> str:
    """Faust's changelog of the ``user_state`` table (Faust names it ``<app id>-<table>-changelog``).

    Created here as well: Faust declares it only when the worker starts, so after a broker lost its
    topics (the embedded one keeps them in memory) user state would otherwise stop being durable.
    """
    return f"{settings.app_id}-user_state-changelog"


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left as they are."""
    admin = AdminClient(settings.confluent_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor)
        for name in topic_names(settings)
        if name not in existing
    ]
    for name, config in model_topics(settings).items():
        if name not in existing:
            # one partition: a snapshot's chunks and the deltas stay in the order the trainer wrote them
            wanted.append(
                NewTopic(name, num_partitions=1, replication_factor=settings.replication_factor, config=config)
            )
    if settings.worker_role != "encoder" and changelog_topic(settings) not in existing:
        wanted.append(
            NewTopic(
                changelog_topic(settings),
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config={"cleanup.policy": "compact"},
            )
        )
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc
    return [t.topic for t in wanted]
