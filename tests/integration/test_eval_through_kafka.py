"""`livelens eval --through-kafka` on real MicroLens users agrees with the in-process evaluation: the
trainer learns what two ranking workers (two partitions) log, and the workers rank with its models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ranking.datasets import load_dataset
from ranking.evaluation import Protocol, dataset_splits
from streams.kafka_eval import UnsupportedProtocol, evaluate_through_kafka
from tests.conftest import base_settings

pytestmark = pytest.mark.integration


def test_replay_through_the_trainer_and_two_workers_scores_like_the_in_process_run(
    datasets_dir: Path, tmp_path: Path
) -> None:
    settings = base_settings(tmp_path, datasets_dir=datasets_dir)
    data = load_dataset("microlens-50k", datasets_dir).head(30)
    # pace = the worker's micro-batch: the trainer learns the stream batch by batch, as offline
    result = evaluate_through_kafka(
        settings, data, Protocol(target="valid"), tmp_path / "stack", ranking_workers=2, pace=64
    )
    assert result.users >= 20 and len(result.ranks_kafka) == result.users
    assert result.ranking_workers == 2
    # the scored lists were ranked with the trainer's models holding every history event
    splits = dataset_splits(data, Protocol(target="valid"))
    assert result.trainer_version == sum(len(sp.history) for sp in splits.values())
    assert any(r is not None for r in result.ranks_kafka), "no hit at all: the agreement would be vacuous"
    # Same events, same vectors, same code and training schedule. What the ranker is taught depends on
    # how the stream is cut into micro-batches (each user's first labelled event of a batch is labelled
    # from their state before it), by arrival in the worker and by a fixed size offline: so most users
    # land at the same place, and the figures agree within a standard error.
    agreement = f"{result.same_rank_users}/{result.users} same rank; {result.in_process} vs {result.through_kafka}"
    assert result.same_rank_users >= 0.6 * result.users, agreement
    n = result.users
    for k in ("HR@10", "HR@20"):
        p = max(result.in_process[k], 1 / n)
        assert abs(result.through_kafka[k] - result.in_process[k]) <= math.sqrt(p * (1 - p) / n) + 1e-9, agreement
        assert result.agreement()[k]["within_one_se"], agreement


def test_the_strict_test_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedProtocol):
        evaluate_through_kafka(base_settings(tmp_path), None, Protocol(target="test"), tmp_path)  # type: ignore[arg-type]
