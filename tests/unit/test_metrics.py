"""Metric names follow Prometheus conventions, the exposition parses, and the timing proxies, lag and readiness work."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams import metrics

NAME = re.compile(r"^livelens_[a-z][a-z0-9_]*$")
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
OTHER_TIME_UNITS = ("_ms", "_millis", "_milliseconds", "_us", "_micros", "_microseconds", "_minutes", "_hours")
UNITLESS_HISTOGRAMS = {"livelens_batch_size", "livelens_encoder_batch_size", "livelens_candidates"}


def families() -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}


def test_exposition_parses_and_declares_every_metric() -> None:
    parsed = families()
    # The text format names an Info metric's family after its one sample, ``<name>_info``.
    declared = {
        f.name + ("_info" if f.type == "info" else "")
        for collector in metrics.REGISTRY._collector_to_names
        for f in collector.describe()
    }
    assert declared <= set(parsed), declared - set(parsed)
    for name in (
        "livelens_events_consumed",
        "livelens_dead_letter",
        "livelens_freshness_seconds",
        "livelens_processing_seconds",
        "livelens_encoder_seconds",
        "livelens_encoder_batch_size",
        "livelens_retrieval_seconds",
        "livelens_candidates",
        "livelens_consumer_lag",
        "livelens_table_keys",
        "livelens_live_streams",
        "livelens_model_info",
        "livelens_online_interactions",
        "livelens_online_hits",
        "livelens_online_ndcg",
        "livelens_online_ndcg_squares",
        "livelens_online_unscored",
        "livelens_model_version",
        "livelens_ranker_steps",
        "livelens_arm_info",
    ):
        assert name in parsed, name


def test_names_follow_prometheus_conventions() -> None:
    for name, family in families().items():
        assert NAME.match(name), name
        assert not name.endswith(OTHER_TIME_UNITS), f"{name}: use base units (seconds)"
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        else:
            assert not name.endswith("_total"), f"{name}: only counters end in _total"
        if family.type == "histogram":
            assert name.endswith("_seconds") or name in UNITLESS_HISTOGRAMS, f"{name}: histogram of seconds?"
            assert "seconds" not in name[: -len("_seconds")], name
    for collector in metrics.REGISTRY._collector_to_names:
        for label in getattr(collector, "_labelnames", ()):
            assert LABEL.match(label) and label not in ("le", "quantile"), label


def test_counter_exposes_total_and_labels() -> None:
    metrics.DEAD_LETTERS.labels("t.unit", "invalid_json").inc()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families()["livelens_dead_letter"].samples}
    assert samples[("livelens_dead_letter_total", (("reason", "invalid_json"), ("topic", "t.unit")))] >= 1


class FakeEncoder:
    name = "fake"
    dim = 3
    device = "cuda:0"

    def encode(self, inputs: list[str]) -> np.ndarray:
        return np.ones((len(inputs), self.dim), dtype=np.float32)


def _sample(name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_timed_encoder_observes_batch_size_and_latency_per_modality_and_device() -> None:
    enc = metrics.TimedEncoder(FakeEncoder(), modality="text")
    labels = {"modality": "text", "device": "cuda:0"}
    before = _sample("livelens_encoder_seconds_count", labels)
    before_sum = _sample("livelens_encoder_batch_size_sum", labels)
    assert enc.encode(["a", "b", "c"]).shape == (3, 3)
    assert enc.name == "fake" and enc.dim == 3 and enc.device == "cuda:0"
    assert _sample("livelens_encoder_seconds_count", labels) == before + 1
    assert _sample("livelens_encoder_batch_size_sum", labels) == before_sum + 3


@dataclass
class FakeFeed:
    value: str


class FakeIndex:
    def search(self, queries: list[Any], feed: Any, limit: int, with_vectors: bool = False) -> list[list[int]]:
        return [list(range(limit)) for _ in queries]

    def count(self) -> int:
        return 7


def test_timed_index_observes_retrieval_and_candidates_per_source() -> None:
    index = metrics.TimedIndex(FakeIndex())
    before = _sample("livelens_retrieval_seconds_count", {"feed": "live"})
    before_candidates = _sample("livelens_candidates_sum", {"source": "content"})
    assert len(index.search([1, 2], FakeFeed("live"), limit=4)) == 2
    assert index.count() == 7  # everything else passes through
    assert _sample("livelens_retrieval_seconds_count", {"feed": "live"}) == before + 1
    assert _sample("livelens_candidates_sum", {"source": "content"}) == before_candidates + 8


class FakeIdsIndex(FakeIndex):
    def search_ids(self, queries: list[Any], feed: Any, limit: int) -> list[list[str]]:
        return [[f"i{n}" for n in range(limit)] for _ in queries]


@dataclass
class FakeHit:
    item_id: str


class FakeHitsIndex:
    """An index without ``search_ids`` (a Milvus catalogue with the tier off): ids come from its hits."""

    def search(self, queries: list[Any], feed: Any, limit: int, with_vectors: bool = False) -> list[list[FakeHit]]:
        return [[FakeHit(f"h{n}") for n in range(limit)] for _ in queries]


def test_timed_index_counts_the_ranking_paths_id_searches_too() -> None:
    """Ranking searches through ``search_ids``: the dashboard's retrieval and candidate panels must see it."""
    for inner, expected in ((FakeIdsIndex(), ["i0", "i1", "i2"]), (FakeHitsIndex(), ["h0", "h1", "h2"])):
        index = metrics.TimedIndex(inner)
        before = _sample("livelens_retrieval_seconds_count", {"feed": "short_video"})
        before_candidates = _sample("livelens_candidates_sum", {"source": "content"})
        assert index.search_ids([1, 2], FakeFeed("short_video"), limit=3) == [expected, expected]
        assert _sample("livelens_retrieval_seconds_count", {"feed": "short_video"}) == before + 1
        assert _sample("livelens_candidates_sum", {"source": "content"}) == before_candidates + 6


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned = {TP("in", 0), TP("in", 1), TP("in", 2), TP("in", 3), TP("changelog", 0)}
        self.high = {TP("in", 0): 10, TP("in", 1): 5, TP("in", 2): 4, TP("in", 3): 10, TP("changelog", 0): 99}
        self._read_offset = {TP("in", 0): 9, TP("in", 1): None, TP("in", 3): 9}
        self._committed_offset = {TP("in", 1): 2, TP("in", 3): 4}

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int:
        return self.high[tp]


def test_consumer_lag_per_input_partition_and_revoked_partitions_removed() -> None:
    consumer = FakeConsumer()
    lags = metrics.update_consumer_lag(consumer, {"in"})
    # read up to offset 9 of 10: caught up; nothing read but committed 2 of 5: 3; nothing known: whole partition;
    # read 9 but only 4 processed and committed: 6 still in flight count as lag.
    assert lags == {("in", 0): 0, ("in", 1): 3, ("in", 2): 4, ("in", 3): 6}
    assert _sample("livelens_consumer_lag", {"topic": "in", "partition": "1"}) == 3
    consumer.assigned = {TP("in", 0)}
    metrics.update_consumer_lag(consumer, {"in"})
    exposed = {s.labels["partition"] for s in families()["livelens_consumer_lag"].samples if s.labels["topic"] == "in"}
    assert exposed == {"0"}


def test_table_keys_are_throttled() -> None:
    table = {"a": 1, "b": 2}
    metrics.update_table_keys({"unit_table": table}, every_s=60)
    table["c"] = 3
    metrics.update_table_keys({"unit_table": table}, every_s=60)
    assert _sample("livelens_table_keys", {"table": "unit_table"}) == 2
    metrics.update_table_keys({"unit_table": table}, every_s=0)
    assert _sample("livelens_table_keys", {"table": "unit_table"}) == 3


class FakeService:
    started = True
    crashed = False


class FakeApp:
    producer = FakeService()
    consumer = FakeService()


class FakeServices:
    def __init__(self, ready: bool) -> None:
        self.ready = ready

    async def handlers(self) -> Any:
        class H:
            index = FakeIndex()

        return H()


class FakeSettings:
    def confluent_config(self) -> dict[str, str]:
        return {"bootstrap.servers": "unit:1"}


@pytest.mark.parametrize(
    ("models", "topics", "ready", "failing"),
    [
        (True, {"a", "b", "other"}, True, set()),
        (True, {"a"}, False, {"broker"}),
        (False, {"a", "b"}, False, {"models", "milvus"}),
    ],
)
def test_readiness_reports_each_check(
    monkeypatch: pytest.MonkeyPatch, models: bool, topics: set[str], ready: bool, failing: set[str]
) -> None:
    monkeypatch.setattr(metrics, "_broker_topics", lambda conf, timeout: topics)
    ok, body = asyncio.run(metrics.readiness(FakeApp(), FakeServices(models), FakeSettings(), ["a", "b"]))
    assert ok is ready and body["status"] == ("ready" if ready else "not_ready")
    assert {name for name, check in body["checks"].items() if not check["ok"]} == failing
    if models:
        assert body["checks"]["milvus"]["items"] == 7


def test_readiness_when_broker_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(conf: Any, timeout: float) -> set[str]:
        raise RuntimeError("KafkaError{code=_TRANSPORT}")

    monkeypatch.setattr(metrics, "_broker_topics", unreachable)
    ok, body = asyncio.run(metrics.readiness(FakeApp(), FakeServices(True), FakeSettings(), ["a"]))
    assert not ok and "_TRANSPORT" in body["checks"]["broker"]["detail"]
