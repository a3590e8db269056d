"""The scaling sweep's control flow, with the measurement faked (the real one needs a broker and minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bench.scaling as scaling


def fake_point(capacity: float) -> Any:
    def measure(stack: Any, data: Any, rate: float, duration: float, feed_of_item: Any, console: Any) -> dict:
        processed = min(rate, capacity)
        return {"rate": rate, "livelens": {"processed_per_s": processed, "latency_ms": {"p99": 100.0}}}

    return measure


@pytest.mark.parametrize(
    ("capacity", "measured"),
    [(100.0, [250.0, 500.0, 1_000.0, 2_000.0]), (5_000.0, [250.0, 500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0])],
)
def test_every_named_rate_is_measured_then_doubling_until_saturated(
    monkeypatch: pytest.MonkeyPatch, capacity: float, measured: list[float]
) -> None:
    monkeypatch.setattr(scaling, "measure_freshness", fake_point(capacity))
    points = scaling.by_rate(None, None, {}, 5.0, None)  # type: ignore[arg-type]
    assert [p["rate"] for p in points] == measured
    first_saturated = next(p["rate"] for p in points if scaling.saturated(p))
    assert first_saturated == (250.0 if capacity == 100.0 else 8_000.0)


def test_a_partial_rerun_keeps_the_other_part_and_says_where_it_came_from(tmp_path: Path) -> None:
    earlier = {"started_at": "2026-11-29T11:52:00Z", "options": {"items": 1_000_000}, "by_items": [{"items": 10}]}
    earlier |= {"by_rate": [{"rate": 250.0}], "items_sweep_stopped": None}
    (tmp_path / "scaling.json").write_text(json.dumps(earlier))
    kept = scaling.kept_part(tmp_path / "scaling.json", "by_items")
    assert kept["by_items"] == [{"items": 10}] and "by_rate" not in kept
    assert kept["kept_from"]["by_items"]["started_at"] == "2026-11-29T11:52:00Z"
    assert scaling.kept_part(tmp_path / "none.json", "by_rate") == {}


def test_tier_recall_is_one_below_the_ivf_threshold_and_measured_against_exact_above_it() -> None:
    from bench.stack import synthetic_items
    from ranking.feed_matrix import SearchTierParams

    vectors = scaling.short_video_vectors(synthetic_items(0, 3_000, 32, 0, 0.0))
    exact = scaling.tier_recall(vectors, SearchTierParams(exact_below=10_000), queries=20)
    assert exact["searched_exactly"] and exact["recall_at_100"] == 1.0
    # probing every list finds every row: only the float16 codes differ, and hits are rescored exactly
    every_list = scaling.tier_recall(vectors, SearchTierParams(exact_below=100, nlist=16, nprobe=16), queries=20)
    assert not every_list["searched_exactly"] and every_list["nlist"] == 16
    assert every_list["recall_at_100"] >= 0.99
    # one list of 16 misses most of the true neighbours of a three-item taste: the figure is not constant
    one_list = scaling.tier_recall(vectors, SearchTierParams(exact_below=100, nlist=16, nprobe=1), queries=20)
    assert one_list["recall_at_100"] < every_list["recall_at_100"]
