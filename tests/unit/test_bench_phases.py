"""The wait between a streaming benchmark's LiveLens phase and its reference, and the phase record."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import bench.phases as phases
from bench.echo import note_delivery
from bench.phases import Phases, describe, drain_timeout, events_behind, quiet_stack, wait_until

OFFSET_INVALID = -1001  # librdkafka's offset of a partition the group never committed


def test_events_behind_counts_what_the_group_has_not_committed_below_the_acknowledged_ends() -> None:
    ends = {0: 10, 1: 5, 2: 7}
    assert events_behind(ends, {0: 10, 1: 5, 2: 7}) == 0
    assert events_behind(ends, {0: 4, 1: 5, 2: 7}) == 6
    # never committed (absent, None or OFFSET_INVALID): counted from offset 0
    assert events_behind(ends, {0: OFFSET_INVALID, 1: None, 2: 7}) == 15
    assert events_behind(ends, {}) == 22
    # past the end (an earlier commit, a broker that counts more): covered; partitions not in ends: not ours
    assert events_behind(ends, {0: 12, 1: 5, 2: 7, 3: 0}) == 0
    assert events_behind({}, {0: 3}) == 0
    # the trainer's offsets are keyed "topic:partition"
    assert events_behind({"t:0": 3, "t:1": 2}, {"t:0": 3}) == 2


def test_the_drain_wait_allows_a_minute_plus_the_backlog_at_50_per_s_and_at_most_ten_minutes() -> None:
    assert drain_timeout(0) == 60.0
    assert drain_timeout(1_000) == 80.0
    assert drain_timeout(10_000_000) == 600.0


def test_delivery_reports_keep_one_past_the_highest_acknowledged_offset_per_partition() -> None:
    ends: dict[int, int] = {}
    report = note_delivery(ends)

    def msg(partition: int, offset: int) -> Any:
        return SimpleNamespace(partition=lambda: partition, offset=lambda: offset)

    for p, o in ((0, 3), (0, 1), (1, 0), (2, 9)):
        report(None, msg(p, o))
    report("delivery failed", msg(1, 50))  # never stored: not waited for
    report(None, msg(3, OFFSET_INVALID))
    assert ends == {0: 4, 1: 1, 2: 10}


def test_wait_until_stops_at_zero_keeps_the_last_answer_through_errors_and_gives_up_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(phases, "POLL_S", 0.0)
    answers = iter([5, 3, RuntimeError("timed out"), 0])

    def behind() -> int:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert wait_until(behind, timeout=60)[0] == 0

    def failing() -> int:
        raise RuntimeError("no broker")

    assert wait_until(failing, timeout=0) == (-1, 0.0)  # asked once even with no time to wait
    assert wait_until(lambda: 7, timeout=0.05)[0] == 7


class FakeWorker:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def fake_stack(workers: list[FakeWorker]) -> Any:
    settings = SimpleNamespace(app_id="livelens", topic_interactions="livelens.interactions")
    first = workers[0] if workers else None
    return SimpleNamespace(settings=settings, workers=workers, worker=first, ranking_workers=workers, trainer=None)


def fake_offsets(answers: list[dict[int, int]]) -> type:
    """A GroupOffsets stand-in whose committed offsets move through ``answers`` (the last one stays)."""

    class Offsets:
        closed = False

        def __init__(self, settings: Any, group: str, topic: str) -> None:
            assert (group, topic) == ("livelens", "livelens.interactions")
            self.left = list(answers)

        def committed(self, partitions: list[int]) -> dict[int, int]:
            return self.left.pop(0) if len(self.left) > 1 else self.left[0]

        def close(self) -> None:
            type(self).closed = True

    return Offsets


def test_quiet_stack_waits_until_the_worker_committed_every_event_published(monkeypatch: pytest.MonkeyPatch) -> None:
    offsets = fake_offsets([{0: 2, 1: 0}, {0: 6, 1: 3}, {0: 10, 1: 5}])
    monkeypatch.setattr(phases, "GroupOffsets", offsets)
    monkeypatch.setattr(phases, "POLL_S", 0.0)
    worker = FakeWorker()
    out = quiet_stack(fake_stack([worker]), {0: 10, 1: 5}, stop_worker=False)
    assert out["worker_behind_at_end"] == 13  # reported, however the wait ends
    assert (out["worker"], out["worker_behind_after_wait"]) == ("drained", 0)
    assert out["trainer"] is None and not worker.stopped and offsets.closed
    assert "13 events uncommitted" in describe(out) and "no trainer" in describe(out)


def test_quiet_stack_says_when_the_worker_is_still_behind_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phases, "GroupOffsets", fake_offsets([{0: 1}]))
    monkeypatch.setattr(phases, "drain_timeout", lambda behind: 0.05)
    monkeypatch.setattr(phases, "POLL_S", 0.01)
    out = quiet_stack(fake_stack([FakeWorker()]), {0: 10}, stop_worker=False)
    assert (out["worker"], out["worker_behind_after_wait"]) == ("still behind", 9)


def test_quiet_stack_can_stop_every_worker_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phases, "GroupOffsets", fake_offsets([{0: 4}]))
    workers = [FakeWorker(), FakeWorker()]
    out = quiet_stack(fake_stack(workers), {0: 10}, stop_worker=True)
    assert out["worker"] == "stopped" and out["worker_behind_at_end"] == 6
    assert all(w.stopped for w in workers)


def test_each_phase_records_wall_time_load_average_and_cpu_at_its_start_and_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads = iter([1.0, 2.5, 2.0, 0.5])
    monkeypatch.setattr(phases.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    stack = SimpleNamespace(broker=None, milvus=None, trainer=None, workers=[], worker=None, ranking_workers=[])
    p = Phases(stack)  # type: ignore[arg-type]
    with p.phase("livelens"):
        pass
    with pytest.raises(KeyError), p.phase("echo"):  # a phase that fails still gets its end
        raise KeyError("x")
    out = p.result()
    assert out["load_average"] == {"livelens_start": 1.0, "livelens_end": 2.5, "echo_start": 2.0, "echo_end": 0.5}
    livelens = out["phases"]["livelens"]
    assert livelens["started_at"] <= livelens["ended_at"] and livelens["cpu_s"] == {}
    assert set(livelens) >= {"wall_s", "cores_busy", "load_average_start", "load_average_end"}
    assert p.summary().startswith("load average (1 min): livelens 1.0 → 2.5")
