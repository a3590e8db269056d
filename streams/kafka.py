"""Kafka client configuration derived from Settings, in one place for Faust, confluent-kafka and admin."""

from __future__ import annotations

import ssl
from typing import Any

from streams.settings import Settings


def faust_broker_options(settings: Settings) -> dict[str, Any]:
    """Faust app options that talk to the broker; the same for the worker and the conformance tests.

    ``producer_max_batch_size`` (bytes per partition): Faust's producer batches normally. The embedded
    broker's ListOffsets "latest" is exact only when the last batch holds one record, and Faust's table
    recovery reads it: the ranking role ends each micro-batch's changelog writes with a one-record batch
    per partition instead (``Settings.exact_end_offsets``, ``streams.roles.shell.start_writes``).
    """
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.broker_url().replace(',', ';kafka://')}",
        "producer_max_batch_size": settings.producer_max_batch_bytes,
        "broker_session_timeout": settings.broker_session_timeout_s,
        "broker_heartbeat_interval": settings.broker_heartbeat_interval_s,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
    }
    credentials = faust_credentials(settings)
    if credentials is not None:
        options["broker_credentials"] = credentials
    return options


def faust_credentials(settings: Settings) -> Any:
    import faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if protocol in ("SSL", "SASL_SSL"):
        ssl_context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context)
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
        ssl_context=ssl_context,
    )
