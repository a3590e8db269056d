"""The streaming benchmarks' references on the embedded broker: the Faust forwarder (``bench throughput``'s
framework ceiling) forwards a whole backlog and ends cleanly, and the publisher's delivery reports give
each partition's true end (what ``bench.phases`` compares the worker's committed offsets with)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.echo import create_topics, producer, publish_paced
from bench.faust_ceiling import faust_max_throughput
from streams.broker import EmbeddedBroker
from tests.conftest import base_settings

pytestmark = pytest.mark.integration


def backlog(n: int) -> list[tuple[bytes, dict[str, Any]]]:
    return [(f"user{i % 13}".encode(), {"event_id": f"e{i}", "user_id": f"user{i % 13}", "ts": 0.0}) for i in range(n)]


def test_the_faust_forwarder_forwards_a_backlog_and_exits_cleanly(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        s = base_settings(tmp_path, kafka_broker=broker.bootstrap, log_level="warn")
        for batched in (False, True):
            out = faust_max_throughput(s, tmp_path, backlog(500), batched=batched)
            assert (out["sent"], out["received"]) == (500, 500), out
            assert out["exit_code"] == 0 and "log_tail" not in out, out
            assert out["events_per_s"] > 0 and out["forwarder_cpu_s"] > 0


def test_delivery_reports_give_each_partitions_end_in_multi_record_batches(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        s = base_settings(tmp_path, kafka_broker=broker.bootstrap)
        topic = f"bench-ends-{uuid.uuid4().hex[:6]}"
        create_topics(s, [topic], 2)
        ends: dict[int, int] = {}
        publish_paced(producer(s, linger_ms=5), topic, backlog(300), None, ends)
        publish_paced(producer(s, linger_ms=5), topic, backlog(200), None, ends)
        assert sum(ends.values()) == 500 and set(ends) == {0, 1}
