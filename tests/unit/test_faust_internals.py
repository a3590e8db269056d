"""The patch that keeps a worker's input partitions paused through Faust's end of recovery (no broker:
the wrapped step is a stand-in that records what Faust's own step does in order)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery

from streams.faust_internals import (
    _ActivePartitions,
    _holding_inputs,
    resume_inputs_after_seek,
)


class Consumer:
    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log

    def resume_partitions(self, tps: Any) -> None:
        self.log.append(("resume", frozenset(tps)))


def recovery_end(log: list[tuple[Any, ...]]) -> Any:
    """What ``Recovery.on_recovery_completed`` does, in its order: resume inputs, seek, clear the queues."""

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        self.app.consumer.resume_partitions({"interactions-0", "interactions-1"})
        await asyncio.sleep(0)  # the seek: the fetcher runs meanwhile
        log.append(("seek",))
        log.append(("clear queues",))

    return on_recovery_completed


def test_the_input_partitions_are_resumed_only_after_the_seek_and_the_clear() -> None:
    log: list[tuple[Any, ...]] = []
    consumer = Consumer(log)
    recovery = SimpleNamespace(app=SimpleNamespace(consumer=consumer, consumer_generation_id=7))
    asyncio.run(_holding_inputs(recovery_end(log))(recovery, 7))
    assert log == [("seek",), ("clear queues",), ("resume", frozenset({"interactions-0", "interactions-1"}))]
    assert "resume_partitions" not in vars(consumer)  # the consumer's own method is back


def test_after_a_rebalance_during_the_seek_the_next_recovery_resumes_the_inputs() -> None:
    log: list[tuple[Any, ...]] = []
    consumer = Consumer(log)
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=7)
    inner = recovery_end(log)

    async def rebalanced_meanwhile(self: Any, generation_id: int = 0) -> None:
        await inner(self, generation_id)
        app.consumer_generation_id = 8

    asyncio.run(_holding_inputs(rebalanced_meanwhile)(SimpleNamespace(app=app), 7))
    assert log == [("seek",), ("clear queues",)]
    assert "resume_partitions" not in vars(consumer)


def test_a_failed_step_resumes_nothing_and_restores_the_consumer() -> None:
    log: list[tuple[Any, ...]] = []
    consumer = Consumer(log)

    async def fails(self: Any, generation_id: int = 0) -> None:
        self.app.consumer.resume_partitions({"interactions-0"})
        raise RuntimeError("rebalance again")

    recovery = SimpleNamespace(app=SimpleNamespace(consumer=consumer, consumer_generation_id=1))
    with pytest.raises(RuntimeError):
        asyncio.run(_holding_inputs(fails)(recovery, 1))
    assert log == [] and "resume_partitions" not in vars(consumer)


def test_faust_recovery_is_wrapped_once() -> None:
    resume_inputs_after_seek()
    first = Recovery.on_recovery_completed
    resume_inputs_after_seek()
    assert Recovery.on_recovery_completed is first and getattr(first, "livelens_holds_inputs", False)


def test_the_fetch_filter_is_live_and_never_reads_as_every_partition() -> None:
    live = {"changelog-0"}
    partitions = _ActivePartitions(live)
    live.clear()  # Faust pauses the last active partition while the fetch waits in the consumer's thread
    # aiokafka's Fetcher.fetched_records skips a buffered partition when `partitions and tp not in partitions`
    assert partitions and "interactions-0" not in partitions
    live.add("interactions-0")
    assert "interactions-0" in partitions and list(partitions) == ["interactions-0"]
