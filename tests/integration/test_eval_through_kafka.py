"""`livelens eval --through-kafka` on real MicroLens users agrees exactly with the in-process evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranking.datasets import load_dataset
from ranking.evaluation import Protocol
from streams.kafka_eval import UnsupportedProtocol, evaluate_through_kafka
from tests.conftest import base_settings

pytestmark = pytest.mark.integration


def test_replay_through_the_broker_and_a_worker_scores_like_the_in_process_run(
    datasets_dir: Path, tmp_path: Path
) -> None:
    settings = base_settings(tmp_path, datasets_dir=datasets_dir)
    data = load_dataset("microlens-50k", datasets_dir).head(30)
    result = evaluate_through_kafka(settings, data, Protocol(target="valid"), tmp_path / "stack")
    assert result.users >= 20 and len(result.ranks_kafka) == result.users
    assert any(r is not None for r in result.ranks_kafka), "no hit at all: the agreement would be vacuous"
    # Same events, same vectors, same code: every user's target lands at the same place.
    assert result.ranks_kafka == result.ranks_in_process
    assert result.through_kafka == result.in_process


def test_the_strict_test_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedProtocol):
        evaluate_through_kafka(base_settings(tmp_path), None, Protocol(target="test"), tmp_path)  # type: ignore[arg-type]
