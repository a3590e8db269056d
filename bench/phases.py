"""A streaming benchmark's phases, and the wait that makes a reference phase start on an idle machine.

A benchmark measures LiveLens, then its reference (the echo loop, the Faust forwarder) on the same
stack. A saturated worker may still be draining its backlog when the LiveLens phase's wait ends, so a
reference started right then is measured on a loaded machine (the echo loop's p99 at 500/s was 25 s).
:func:`quiet_stack` runs between the two: it stops the worker, or waits until its consumer group has
committed every event published, then waits until the trainer has learned every training record.

Where the worker is: the driver's producer keeps, per partition, one past the highest offset the
broker acknowledged (``bench.echo.note_delivery``), and the group's committed offsets are compared with
those. The broker's own end offsets are not used for the interactions topic: tansu 0.6 reports
ListOffsets "latest" as the last batch's base offset + 1, short of the true end when that batch
holds more than one record. The training topic's reported end is exact (each micro-batch's
training writes end with a one-record batch per partition, ``Settings.exact_end_offsets``); without
that setting it can only be short, so the trainer's wait may end early, never hang.

:class:`Phases` records each phase's wall-clock start and end, the 1-minute load average at both and
the CPU seconds of each process of the stack (broker, Milvus, trainer, worker) during the phase.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from bench.stack import CpuSplit
from streams.local import LocalStack, training_ends
from streams.settings import Settings

K = TypeVar("K")

DRAIN_RATE = 50.0  # ev/s: the slowest drain the wait allows for (as bench throughput's cut-off)
DRAIN_WAIT_S = (60.0, 600.0)  # shortest and longest wait for the worker to commit its backlog
TRAINER_WAIT_S = 60.0
POLL_S = 0.5  # between two reads of the committed offsets (or the trainer's status)


def load_average() -> float:
    """The 1-minute load average, rounded."""
    return round(os.getloadavg()[0], 2)


def events_behind(ends: Mapping[K, int], committed: Mapping[K, int | None]) -> int:
    """Records below ``ends`` that ``committed`` does not cover, over the partitions in ``ends`` (others
    are not waited for). A partition without a commit (missing, None, or librdkafka's negative
    OFFSET_INVALID) counts from offset 0; a commit past the end covers it."""
    return sum(max(0, end - max(committed.get(key) or 0, 0)) for key, end in ends.items())


def drain_timeout(behind: int) -> float:
    """How long to wait for ``behind`` events: a minute, plus their drain at ``DRAIN_RATE``, at most ten minutes."""
    low, high = DRAIN_WAIT_S
    return min(high, low + behind / DRAIN_RATE)


class GroupOffsets:
    """The committed offsets of a consumer group on one topic, read without joining the group."""

    def __init__(self, settings: Settings, group: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.topic = topic
        self.consumer = Consumer({**settings.confluent_config(), "group.id": group, "enable.auto.commit": False})

    def committed(self, partitions: list[int]) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        tps = self.consumer.committed([TopicPartition(self.topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}

    def close(self) -> None:
        self.consumer.close()


def wait_until(behind: Callable[[], int], timeout: float, poll_s: float | None = None) -> tuple[int, float]:
    """Poll ``behind()`` until it is 0 or ``timeout`` passes (at least once); (its last answer, -1 if every
    call raised, and the seconds waited)."""
    started = time.monotonic()
    left = -1
    while True:
        with suppress(Exception):  # a broker request timed out: keep the last answer (-1: none yet), try again
            left = behind()
        waited = time.monotonic() - started
        if left == 0 or waited >= timeout:
            return left, round(waited, 2)
        time.sleep(POLL_S if poll_s is None else poll_s)


def quiet_stack(stack: LocalStack, ends: Mapping[int, int], stop_worker: bool) -> dict[str, Any]:
    """Between a LiveLens phase and its reference: how far the worker was behind when the phase ended
    (events published, ``ends``, not yet committed by its group), then stop it (``stop_worker``) or wait
    until it has committed them all, then wait until the trainer has learned what the worker logged."""
    s = stack.settings
    started = time.monotonic()
    offsets = GroupOffsets(s, s.app_id, s.topic_interactions)
    try:
        parts = sorted(ends)
        behind_at_end, _ = wait_until(lambda: events_behind(ends, offsets.committed(parts)), timeout=0)
        out: dict[str, Any] = {"worker_behind_at_end": behind_at_end}
        if stop_worker:
            for worker in stack.ranking_workers:
                worker.stop()
            out["worker"] = "stopped"
        else:
            left, waited = wait_until(
                lambda: events_behind(ends, offsets.committed(parts)), drain_timeout(max(behind_at_end, 0))
            )
            out["worker"] = "drained" if left == 0 else "still behind"
            out["worker_behind_after_wait"] = left
            out["worker_wait_s"] = waited
    finally:
        offsets.close()
    out["trainer"] = wait_trainer(stack)
    out["waited_s"] = round(time.monotonic() - started, 2)
    return out


def describe(quiet: Mapping[str, Any]) -> str:
    """``bench.phases.quiet_stack``'s record in words."""
    worker = f"worker {quiet['worker']} ({quiet['worker_behind_at_end']} events uncommitted when the phase ended"
    if "worker_wait_s" in quiet:
        worker += f", {quiet['worker_behind_after_wait']} after {quiet['worker_wait_s']} s"
    trainer = quiet.get("trainer")
    if trainer is None:
        said = "no trainer"
    elif "wait_s" in trainer:
        state = "caught up" if trainer["caught_up"] else f"{trainer['records_behind']} records behind"
        said = f"trainer {state} after {trainer['wait_s']} s"
    else:
        said = f"trainer not checked: {trainer.get('error')}"
    return f"{worker}); {said}; {quiet['waited_s']} s in all"


def wait_trainer(stack: LocalStack, timeout: float = TRAINER_WAIT_S) -> dict[str, Any] | None:
    """Until the trainer's offsets reach the training topic's end (None without a trainer)."""
    trainer = stack.trainer
    if trainer is None or trainer.proc is None:
        return None
    try:
        ends = training_ends(stack.settings)
    except Exception as exc:  # the broker did not answer: say so, do not wait
        return {"caught_up": False, "error": str(exc)[:200]}

    def behind() -> int:
        status = trainer.status()
        return events_behind(ends, status["offsets"]) if status else sum(ends.values())

    left, waited = wait_until(behind, timeout)
    return {"caught_up": left == 0, "records_behind": left, "wait_s": waited}


class Phases:
    """Wall time, 1-minute load average and the stack's CPU seconds per process, at each phase's start and end."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.phases: dict[str, dict[str, Any]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        record: dict[str, Any] = {"started_at": round(time.time(), 3), "load_average_start": load_average()}
        self.phases[name] = record
        split = CpuSplit(self.stack)  # the processes running now: a worker stopped before it is not in it
        try:
            yield
        finally:
            cpu = split.result()
            record.update(ended_at=round(time.time(), 3), load_average_end=load_average())
            record.update(wall_s=cpu["wall_s"], cpu_s=cpu["cpu_s"], cores_busy=cpu["cores_busy"])

    def load_averages(self) -> dict[str, float]:
        """``{phase}_start`` / ``{phase}_end`` -> 1-minute load average, in phase order."""
        out: dict[str, float] = {}
        for name, record in self.phases.items():
            out[f"{name}_start"] = record["load_average_start"]
            if "load_average_end" in record:
                out[f"{name}_end"] = record["load_average_end"]
        return out

    def result(self) -> dict[str, Any]:
        return {"load_average": self.load_averages(), "phases": self.phases}

    def report(self, console: Any, label: str, quiet: Mapping[str, Any]) -> None:
        """Print how the stack was quieted before a reference phase (``quiet_stack``), then every phase."""
        console.print(f"{label}: {describe(quiet)}")
        console.print(self.summary())

    def summary(self) -> str:
        """One line: each phase's load average at start -> end and its cores busy per process."""
        parts = []
        for name, record in self.phases.items():
            busy = ", ".join(f"{role} {v}" for role, v in record.get("cores_busy", {}).items())
            parts.append(
                f"{name} {record['load_average_start']} → {record.get('load_average_end')} "
                f"({record.get('wall_s')} s; cores busy: {busy or 'none'})"
            )
        return "load average (1 min): " + " · ".join(parts)
