"""Prometheus metrics: one registry per process, named after Prometheus conventions (base units)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_CONSUMED = Counter(
    "livelens_events_consumed_total", "Events read from input topics.", ["topic", "type"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "livelens_dead_letter_total", "Events rejected to the dead-letter topic.", ["topic", "reason"], registry=REGISTRY
)
RECOMMENDATIONS = Counter(
    "livelens_recommendations_total", "Recommendation lists produced.", ["feed"], registry=REGISTRY
)
DUPLICATES = Counter(
    "livelens_duplicate_events_total", "Interactions ignored because their event_id was applied.", registry=REGISTRY
)
ITEMS_INDEXED = Counter("livelens_items_indexed_total", "Items upserted into the index.", ["feed"], registry=REGISTRY)
FRESHNESS = Histogram(
    "livelens_freshness_seconds",
    "From the interaction's timestamp to its refreshed recommendation being produced.",
    ["feed"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
PROCESSING = Histogram(
    "livelens_processing_seconds",
    "Time an agent spends on one micro-batch.",
    ["agent"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "livelens_batch_size",
    "Events per micro-batch.",
    ["agent"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
PROCESSING_ERRORS = Counter(
    "livelens_processing_errors_total", "Failed attempts at a batch (retried).", ["step", "error"], registry=REGISTRY
)
LIVE_NOW = Gauge("livelens_live_streams", "Live streams this worker saw start minus end.", registry=REGISTRY)
MODEL_INFO = Info("livelens_model", "Encoder and ranking model versions.", registry=REGISTRY)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
