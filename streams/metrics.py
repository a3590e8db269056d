"""Prometheus metrics and probes: one registry per process, named after Prometheus conventions.

Conventions (checked by tests/unit/test_metrics.py): every name starts with ``livelens_``, counters end in
``_total``, durations are histograms in base units ending in ``_seconds``, and unitless histograms (batch sizes,
candidate counts) carry no unit suffix. Every worker serves this registry at ``/metrics``.

Besides the metric objects, this module holds the small pieces the Faust app wires in:

- ``TimedEncoder`` / ``TimedIndex``: proxies around the encoder and the Milvus index that time ``encode`` and
  ``search`` (the calls happen inside ``streams.handlers``, which stays free of metrics code);
- ``update_consumer_lag`` / ``update_table_keys``: what the app's periodic timer records;
- ``record_online`` / ``record_arms``: the online metric per A/B arm and each arm's model version;
- ``readiness``: the checks behind ``/ready``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EVENTS_CONSUMED = Counter(
    "livelens_events_consumed_total", "Events read from input topics.", ["topic", "type"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "livelens_dead_letter_total", "Events rejected to the dead-letter topic.", ["topic", "reason"], registry=REGISTRY
)
RECOMMENDATIONS = Counter(
    "livelens_recommendations_total", "Recommendation lists produced.", ["feed"], registry=REGISTRY
)
FANOUT = Counter(
    "livelens_fanout_total",
    "Fan-out records written: a followed creator's new item or live stream, one per follower refreshed at once.",
    ["feed"],
    registry=REGISTRY,
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
    "Time an agent spends on one micro-batch (or one event, for the live-status agent).",
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
ENCODER_SECONDS = Histogram(
    "livelens_encoder_seconds",
    "Time of one encoder call (one micro-batch of items), by modality and device.",
    ["modality", "device"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ENCODER_BATCH_SIZE = Histogram(
    "livelens_encoder_batch_size",
    "Inputs per encoder call, by modality and device.",
    ["modality", "device"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
RETRIEVAL = Histogram(
    "livelens_retrieval_seconds",
    "Time of one vector search call against the index (all the queries of a micro-batch for one feed).",
    ["feed"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CANDIDATES = Histogram(
    "livelens_candidates",
    "Candidates returned per query, by candidate source.",
    ["source"],
    buckets=(0, 1, 5, 10, 25, 50, 100, 200, 500, 1000),
    registry=REGISTRY,
)
MEDIA_ERRORS = Counter(
    "livelens_media_errors_total",
    "Media of content events that could not be decoded (modality skipped).",
    ["reason"],
    registry=REGISTRY,
)
PROCESSING_ERRORS = Counter(
    "livelens_processing_errors_total", "Failed attempts at a batch (retried).", ["step", "error"], registry=REGISTRY
)
LIVE_REFRESHES = Counter(
    "livelens_live_refreshes_total",
    "Live-stream vectors refreshed from their recent window (comments, keyframes, audio).",
    registry=REGISTRY,
)
LIVE_NOW = Gauge("livelens_live_streams", "Live streams this worker saw start minus end.", registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "livelens_consumer_lag",
    "Messages in an assigned input partition not read yet (high watermark minus last read offset + 1).",
    ["topic", "partition"],
    registry=REGISTRY,
)
TABLE_KEYS = Gauge(
    "livelens_table_keys", "Keys in a table's partitions active on this worker.", ["table"], registry=REGISTRY
)
MODEL_INFO = Info("livelens_model", "Encoder and ranking model versions.", registry=REGISTRY)

# The online metric (ranking.ab): each applied positive interaction scored against the last list its user got
# for that feed, by the arm that ranked that list. HR@K = hits / interactions; NDCG@K mean = ndcg / interactions.
ONLINE_INTERACTIONS = Counter(
    "livelens_online_interactions_total",
    "Positive interactions scored against the last list emitted to their user for that feed.",
    ["arm", "feed"],
    registry=REGISTRY,
)
ONLINE_HITS = Counter(
    "livelens_online_hits_total",
    "Scored interactions whose item was in that list (online HR@K, K = the list's length).",
    ["arm", "feed"],
    registry=REGISTRY,
)
ONLINE_NDCG = Counter(
    "livelens_online_ndcg_total",
    "Sum of the NDCG@K of scored interactions (0 for a miss); divided by interactions: the mean.",
    ["arm", "feed"],
    registry=REGISTRY,
)
ONLINE_NDCG_SQUARES = Counter(
    "livelens_online_ndcg_squares_total",
    "Sum of the squared NDCG@K of scored interactions: the variance behind its confidence interval.",
    ["arm", "feed"],
    registry=REGISTRY,
)
ONLINE_UNSCORED = Counter(
    "livelens_online_unscored_total",
    "Positive interactions with no earlier list to score against (first since start, or evicted).",
    ["arm", "feed"],
    registry=REGISTRY,
)
MODEL_VERSION = Gauge(
    "livelens_model_version",
    "Events the arm's shared models have learned: the counter at the end of each list's model_version.",
    ["arm"],
    registry=REGISTRY,
)
RANKER_STEPS = Gauge("livelens_ranker_steps", "Steps the arm's learned ranker has taken.", ["arm"], registry=REGISTRY)
ARM_INFO = Info(
    "livelens_arm", "Each A/B arm's configuration id (the middle of model_version).", ["arm"], registry=REGISTRY
)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


# --- encoder and retrieval timing -------------------------------------------------------------------


class TimedEncoder:
    """An encoder proxy that records ``livelens_encoder_seconds`` and ``livelens_encoder_batch_size``.

    Everything but ``encode`` is passed through to the wrapped encoder, so handlers see the same object.
    """

    def __init__(self, inner: Any, modality: str) -> None:
        self._inner = inner
        self.name: str = inner.name
        self.dim: int = inner.dim
        self.modality = modality
        self.device = str(getattr(inner, "device", "cpu"))

    def encode(self, inputs: Sequence[Any]) -> Any:
        started = time.perf_counter()
        out = self._inner.encode(inputs)
        if len(inputs):
            ENCODER_SECONDS.labels(self.modality, self.device).observe(time.perf_counter() - started)
            ENCODER_BATCH_SIZE.labels(self.modality, self.device).observe(len(inputs))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TimedIndex:
    """An index proxy that records ``livelens_retrieval_seconds`` and ``livelens_candidates`` around ``search``
    and ``search_ids``."""

    def __init__(self, inner: Any, source: str = "content") -> None:
        self._inner = inner
        self.source = source

    def search(self, queries: Sequence[Any], feed: Any, limit: int, with_vectors: bool = False) -> Any:
        started = time.perf_counter()
        results = self._inner.search(queries, feed, limit=limit, with_vectors=with_vectors)
        if len(queries):
            RETRIEVAL.labels(getattr(feed, "value", str(feed))).observe(time.perf_counter() - started)
            for hits in results:
                CANDIDATES.labels(self.source).observe(len(hits))
        return results

    def search_ids(self, queries: Sequence[Any], feed: Any, limit: int) -> list[list[str]]:
        """The ranking path's search (ids only), timed and counted like ``search``."""
        fast = getattr(self._inner, "search_ids", None)
        if fast is None:
            return [[h.item_id for h in hits] for hits in self.search(queries, feed, limit)]
        started = time.perf_counter()
        results: list[list[str]] = fast(queries, feed, limit)
        if len(queries):
            RETRIEVAL.labels(getattr(feed, "value", str(feed))).observe(time.perf_counter() - started)
            for ids in results:
                CANDIDATES.labels(self.source).observe(len(ids))
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --- A/B and the online metric -------------------------------------------------------------------------


def record_arms(arms: Mapping[str, Any], feeds: Sequence[str] = (), describe: bool = False) -> None:
    """Each arm's model version and ranker steps; ``describe`` (at start): its config id, and every online
    series at 0, so rates and ``livelens ab report`` see both arms before their first scored interaction."""
    for arm, models in arms.items():
        MODEL_VERSION.labels(arm).set(models.trained_events)
        RANKER_STEPS.labels(arm).set(models.ranker.steps)
        if describe:
            ARM_INFO.labels(arm).info({"config": models.config_id})
            for feed in feeds:
                for counter in (ONLINE_INTERACTIONS, ONLINE_HITS, ONLINE_NDCG, ONLINE_NDCG_SQUARES, ONLINE_UNSCORED):
                    counter.labels(arm, feed)


def record_online(online: Mapping[tuple[str, Any], Any], unscored: Mapping[tuple[str, Any], int]) -> None:
    """One batch's online metric (``streams.handlers.InteractionResult``) into the counters."""
    for (arm, feed), tally in online.items():
        name = getattr(feed, "value", str(feed))
        ONLINE_INTERACTIONS.labels(arm, name).inc(tally.interactions)
        ONLINE_HITS.labels(arm, name).inc(tally.hits)
        ONLINE_NDCG.labels(arm, name).inc(tally.ndcg)
        ONLINE_NDCG_SQUARES.labels(arm, name).inc(tally.ndcg_squares)
    for (arm, feed), count in unscored.items():
        ONLINE_UNSCORED.labels(arm, getattr(feed, "value", str(feed))).inc(count)


# --- periodic gauges ----------------------------------------------------------------------------------

_lag_series: set[tuple[str, str]] = set()
_table_keys_at: dict[str, float] = {}


def update_consumer_lag(consumer: Any, topics: Collection[str]) -> dict[tuple[str, int], int]:
    """Set ``livelens_consumer_lag`` for every assigned partition of ``topics``; drop revoked partitions.

    ``consumer`` is Faust's app consumer: ``highwater(tp)`` is the broker's high watermark (next offset to be
    written) as of the last fetch, ``_read_offset[tp]`` the offset of the last message handed to the agents,
    ``_committed_offset[tp]`` the last offset committed after processing. The lag counts from the lower of the
    two, so events fetched into an agent's buffer but not processed still count; with neither, the lag is
    the whole partition (an upper bound: the consumer starts from the earliest offset).
    """
    try:
        assigned = consumer.assignment()
    except Exception:  # not started or rebalancing: keep the last values
        return {}
    read_offsets = getattr(consumer, "_read_offset", {})
    committed_offsets = getattr(consumer, "_committed_offset", {})
    lags: dict[tuple[str, int], int] = {}
    for tp in assigned:
        if tp.topic not in topics:
            continue
        try:
            high = consumer.highwater(tp)
        except Exception:
            continue
        if high is None:  # no fetch answered for it yet
            continue
        read = read_offsets.get(tp)
        committed = committed_offsets.get(tp)
        # Fetched-but-unprocessed events sit in agent buffers past the read offset: once something is
        # committed, the committed offset (processed and acked) is the honest position.
        known = [p for p in (None if read is None else read + 1, committed) if p is not None]
        position = min(known) if known else 0
        lags[(tp.topic, tp.partition)] = max(0, int(high) - int(position))
    current = {(topic, str(partition)) for topic, partition in lags}
    for labels in _lag_series - current:
        CONSUMER_LAG.remove(*labels)
    _lag_series.intersection_update(current)
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(topic, str(partition)).set(lag)
        _lag_series.add((topic, str(partition)))
    return lags


def update_table_keys(tables: Mapping[str, Any], every_s: float = 30.0) -> None:
    """Set ``livelens_table_keys`` at most every ``every_s`` per table (``len`` of a RocksDB table scans keys)."""
    now = time.monotonic()
    for name, table in tables.items():
        last = _table_keys_at.get(name)
        if last is not None and now - last < every_s:
            continue
        _table_keys_at[name] = now
        TABLE_KEYS.labels(name).set(len(table))


# --- readiness ------------------------------------------------------------------------------------------

_admin_clients: dict[str, Any] = {}


def _broker_topics(conf: Mapping[str, str], timeout: float) -> set[str]:
    from confluent_kafka.admin import AdminClient

    key = repr(sorted(conf.items()))
    admin = _admin_clients.get(key)
    if admin is None:
        admin = _admin_clients[key] = AdminClient(dict(conf))
    return set(admin.list_topics(timeout=timeout).topics)


async def readiness(
    app: Any, services: Any, settings: Any, topics: Collection[str], timeout: float = 3.0
) -> tuple[bool, dict[str, Any]]:
    """The checks behind ``/ready``: models loaded, broker reachable with our topics, Milvus answering.

    Blocking client calls run in the loop's default executor, each bounded by ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    checks: dict[str, dict[str, Any]] = {}

    checks["models"] = {"ok": bool(services.ready)}

    try:
        started = all(svc.started and not svc.crashed for svc in (app.producer, app.consumer))
        present = await asyncio.wait_for(
            loop.run_in_executor(None, _broker_topics, settings.confluent_config(), timeout), timeout + 1
        )
        missing = sorted(set(topics) - present)
        detail = "clients not started" if not started else (f"missing topics {missing}" if missing else "ok")
        checks["broker"] = {"ok": started and not missing, "detail": detail}
    except Exception as exc:
        checks["broker"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}

    if not services.ready:
        checks["milvus"] = {"ok": False, "detail": "not connected yet (models loading)"}
    else:
        try:
            handlers = await services.handlers()
            # ask Milvus itself: an in-process search tier would answer from memory while Milvus is down
            count_milvus = getattr(handlers.index, "source_count", handlers.index.count)
            count = await asyncio.wait_for(loop.run_in_executor(None, count_milvus), timeout)
            checks["milvus"] = {"ok": True, "items": count}
        except Exception as exc:
            checks["milvus"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}

    ready = all(check["ok"] for check in checks.values())
    return ready, {"status": "ready" if ready else "not_ready", "checks": checks}
