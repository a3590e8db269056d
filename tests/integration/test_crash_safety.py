"""Crash safety: a worker killed mid-stream, again and again, ends with exactly the state of a clean run.

A fixed slice of MicroLens-50K (real users and items, fixed event times) is replayed through the
embedded broker into a real ``livelens worker`` with the production RocksDB table store. Run A is
uninterrupted; run B SIGKILLs the worker at seeded random points while events flow and restarts it
(five times, plus once 0-2 s after a restart); run C does the same with SIGTERM. One restart per run
also starts from an empty local store (the RocksDB directory wiped), so the state must come back from
the changelog alone.
Every user's durable state (``GET /state/{user_id}``) after B and C must equal A's: nothing lost,
nothing applied twice (``ranking.user_state.state_differences``). Run D makes one cause of the losses
these runs showed deterministic: offsets committed before the micro-batch's state reached the
changelog (``streams.roles.shell.until_written``). Run E makes the other one deterministic: events
delivered while Faust seeks the input partitions at the end of a recovery, dropped by its queue clear
and committed as a gap (``streams.faust_internals.resume_inputs_after_seek``).

Each run has its own consumer group, interaction topic and RocksDB directory; the broker and the
Milvus Lite index (filled once by run A, hash text encoder) are shared. The figures measured (kills,
recovery times, duplicates absorbed) are printed; run with ``-s`` to see them. The kill schedule's
seed is printed too and can be replayed with ``LIVELENS_TEST_CRASH_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import textwrap
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ranking.datasets import Dataset, load_microlens
from ranking.user_state import state_differences
from streams.local import LocalStack, WorkerProcess
from streams.ports import free_port
from streams.replay import interaction_events, make_producer, publish_content
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import base_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

USERS, MIN_EVENTS = 60, 10  # the first 60 MicroLens-50K users with 10+ interactions: 908 events, 844 items
KILLS = 5
RATE = 4.0  # events/s while the kills happen: the paced part lasts ~200 s, twice the kill phase here
TAIL = 0.1  # this share of the stream waits for the last restart, so every kill lands mid-stream
BASE_TS, STEP_S = 1_700_000_000.0, 600.0  # fixed event times: a user's n-th interaction at BASE + n*STEP


def crash_dataset(root: Path) -> Dataset:
    """A deterministic real slice: long enough sequences that dedupe state matters, small enough to run here."""
    full = load_microlens(root)
    users = [u for u, seq in full.sequences.items() if len(seq) >= MIN_EVENTS][:USERS]
    return Dataset(full.name, full.items, {u: full.sequences[u] for u in users})


def event_ts(user: str, pos: int) -> float:
    return BASE_TS + STEP_S * pos


@dataclass
class Stream:
    dataset: Dataset
    events: list[tuple[str, str, bytes]]  # (user, event_id, payload) in publish order

    @property
    def expected_ids(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for user, event_id, _ in self.events:
            out.setdefault(user, []).append(event_id)
        return out


@pytest.fixture(scope="module")
def stream(datasets_dir: Path) -> Stream:
    dataset = crash_dataset(datasets_dir)
    events = [(ev.user_id, ev.event_id, ev.model_dump_json().encode()) for ev in interaction_events(dataset, event_ts)]
    return Stream(dataset, events)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, stream: Stream) -> Iterator[LocalStack]:
    """Broker + Milvus Lite, with the slice's catalogue published once on the shared content topic."""
    root = tmp_path_factory.mktemp("crash")
    settings = base_settings(
        root, text_encoder="hash", image_encoder="none", audio_encoder="none", table_store="rocksdb://"
    )
    with LocalStack(settings, root, start_worker=False) as local:
        publish_content(local.settings, stream.dataset, stream.dataset.touched_items())
        yield local


def metric(worker: WorkerProcess, name: str) -> float:
    """One unlabelled sample (or the sum over labels) from the worker's Prometheus exposition."""
    total = 0.0
    for line in worker.get_text("/metrics").splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Incarnation:
    """What one worker process did before it was stopped (read just before the signal: a lower bound)."""

    consumed: float = 0.0
    duplicates: float = 0.0
    batches: float = 0.0  # interaction micro-batches completed
    recovery_s: float | None = None  # from the previous worker's signal to this one processing again


@dataclass
class Run:
    """One replay of the stream into its own consumer group, topic and RocksDB directory."""

    name: str
    settings: Settings
    work_dir: Path
    worker: WorkerProcess | None = None
    incarnations: list[Incarnation] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # for the worker processes

    @classmethod
    def create(cls, shared: LocalStack, name: str, index_content: bool) -> Run:
        updates: dict[str, Any] = {
            "app_id": f"crash-{name}",
            "topic_interactions": f"crash-{name}.interactions",
            "topic_dead_letter": f"crash-{name}.dead-letter",
            "data_dir": shared.work_dir / f"run-{name}",
            "web_port": free_port(),
        }
        if not index_content:  # runs B and C keep the index exactly as run A filled it
            updates["topic_content"] = f"crash-{name}.content"
        settings = shared.settings.model_copy(update=updates)
        ensure_topics(settings)
        return cls(name, settings, shared.work_dir)

    def start(self) -> WorkerProcess:
        n = len(self.incarnations)
        log = self.work_dir / f"worker-{self.name}-{n}.log"
        self.worker = WorkerProcess(self.settings, log, extra_env=self.extra_env).start()
        self.incarnations.append(Incarnation())
        return self.worker

    def snapshot(self) -> Incarnation:
        """Refresh the current incarnation's counters from its /stats and /metrics."""
        assert self.worker is not None
        current = self.incarnations[-1]
        current.consumed = float(self.worker.get("/stats").get("livelens_events_consumed", 0))
        current.duplicates = metric(self.worker, "livelens_duplicate_events_total")
        current.batches = metric(self.worker, 'livelens_processing_seconds_count{agent="interactions"}')
        return current

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.worker is not None:
            self.worker.stop(sig)
            self.worker = None

    def wait_processing(self, timeout: float = 120.0) -> None:
        """Until this incarnation has processed an interaction (group joined, state recovered)."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.worker.get("/stats").get("livelens_events_consumed", 0) > 0:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"worker did not resume within {timeout}s:\n{self.worker.log_tail()}")

    def committed(self) -> int:
        """Offsets the run's consumer group committed on its interaction topic, all partitions."""
        s = self.settings
        consumer = Consumer({**s.confluent_config(), "group.id": s.app_id, "enable.auto.commit": False})
        try:
            tps = [TopicPartition(s.topic_interactions, p) for p in range(s.partitions)]
            return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
        finally:
            consumer.close()

    def wait_done(self, total: int, timeout: float = 120.0) -> None:
        """Until every event is processed and committed: nothing left that a restart could redeliver."""
        deadline = time.monotonic() + timeout
        while (done := self.committed()) < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"run {self.name}: {done}/{total} events committed after {timeout}s")
            time.sleep(0.5)

    def states(self, users: list[str]) -> dict[str, dict[str, Any]]:
        assert self.worker is not None
        out: dict[str, dict[str, Any]] = {}
        for user in users:
            try:
                out[user] = self.worker.get(f"/state/{user}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
        return out


class Publisher(threading.Thread):
    """Sends the stream at ``rate`` until ``release`` is set; the last ``TAIL`` of it only after that."""

    def __init__(self, settings: Settings, events: list[tuple[str, str, bytes]], rate: float | None) -> None:
        super().__init__(daemon=True)
        self.settings, self.events, self.rate = settings, events, rate
        self.release = threading.Event()
        self.held_from = int(len(events) * (1 - TAIL))
        self.published = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = make_producer(self.settings)
            started = time.monotonic()
            for n, (user, _, payload) in enumerate(self.events):
                if n == self.held_from:
                    self.release.wait()
                if self.rate and not self.release.is_set():
                    time.sleep(max(0.0, started + n / self.rate - time.monotonic()))
                producer.produce(self.settings.topic_interactions, key=user.encode(), value=payload)
                producer.poll(0)
                self.published = n + 1
            if producer.flush(60):
                raise RuntimeError("events left unsent")
        except BaseException as exc:
            self.error = exc


def finish(run: Run, stream: Stream, publisher: Publisher) -> dict[str, dict[str, Any]]:
    publisher.release.set()
    publisher.join(120)
    assert publisher.error is None and publisher.published == len(stream.events), publisher.error
    run.wait_done(len(stream.events))
    run.snapshot()
    return run.states(list(stream.expected_ids))


@dataclass
class Clean:
    states: dict[str, dict[str, Any]]
    seconds: float


@pytest.fixture(scope="module")
def clean_run(shared: LocalStack, stream: Stream) -> Iterator[Clean]:
    """Run A: the stream into one worker that is never interrupted; it also fills the shared index."""
    started = time.monotonic()
    run = Run.create(shared, "a", index_content=True)
    worker = run.start()
    try:
        worker.wait_for("livelens_items_indexed", len(stream.dataset.touched_items()), timeout=120)
        publisher = Publisher(run.settings, stream.events, rate=None)
        publisher.start()
        states = finish(run, stream, publisher)
    finally:
        run.stop()
    seconds = time.monotonic() - started
    print(f"\n[crash] run A: {len(stream.events)} events, {len(states)} users, {seconds:.1f}s")
    yield Clean(states, seconds)


def test_clean_run_applied_every_event_once(clean_run: Clean, stream: Stream) -> None:
    """The reference itself is checked against the stream, so B and C are compared to the truth."""
    expected = stream.expected_ids
    assert set(clean_run.states) == set(expected)
    for user, ids in expected.items():
        state = clean_run.states[user]
        assert state["applied_event_ids"] == ids, user
        assert state["n_events"] == len(ids) == sum(state["counts"].values())
        assert state["last_ts"] == event_ts(user, len(ids) - 1)
        assert state["long_term"] is not None


def crash_and_restart(shared: LocalStack, stream: Stream, clean: Clean, sig: signal.Signals) -> None:
    """KILLS signals while the worker processes the stream; for SIGKILL one more right after a restart."""
    name = {signal.SIGKILL: "b", signal.SIGTERM: "c"}[sig]
    seed = int(os.environ.get("LIVELENS_TEST_CRASH_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    print(f"\n[crash] run {name.upper()} ({sig.name}): seed {seed} (LIVELENS_TEST_CRASH_SEED={seed} replays it)")
    startup_kill = rng.randrange(KILLS) if sig is signal.SIGKILL else None
    wipe_kill = rng.randrange(KILLS)  # as on a fresh node; it lost events before run E's fix
    started = time.monotonic()
    run = Run.create(shared, name, index_content=False)
    run.start()
    publisher = Publisher(run.settings, stream.events, rate=RATE)
    publisher.start()
    signals = 0

    def stop_and_restart(when: str, wipe: bool = False) -> float:
        nonlocal signals
        before = run.snapshot()
        published = publisher.published
        signalled = time.monotonic()
        run.stop(sig)
        signals += 1
        if wipe:  # as on a fresh node: the state must come back from the changelog topic alone
            shutil.rmtree(run.settings.data_dir / "faust")
            when += ", local RocksDB wiped"
        assert published < publisher.held_from, "the paced part of the stream ran out before the kill: lower RATE"
        print(
            f"[crash]   {sig.name} #{signals} {when}: {published}/{len(stream.events)} published; this worker had "
            f"consumed {before.consumed:.0f} in {before.batches:.0f} batches and absorbed "
            f"{before.duplicates:.0f} duplicates; the group had committed {run.committed()}"
        )
        run.start()
        return signalled

    try:
        run.wait_processing()
        for kill in range(KILLS):
            time.sleep(rng.uniform(0.2, 6.0))  # before or after the first commit (~3 s in)
            signalled = stop_and_restart("while processing", wipe=kill == wipe_kill)
            if kill == startup_kill:  # group join, changelog recovery or first batch
                time.sleep(rng.uniform(0.0, 2.0))
                signalled = stop_and_restart("0-2 s after a restart")
            run.wait_processing()
            run.incarnations[-1].recovery_s = time.monotonic() - signalled
        states = finish(run, stream, publisher)
    finally:
        publisher.release.set()
        run.stop()
    seconds = time.monotonic() - started

    recoveries = [i.recovery_s for i in run.incarnations if i.recovery_s is not None]
    consumed = sum(i.consumed for i in run.incarnations)
    duplicates = sum(i.duplicates for i in run.incarnations)
    print(
        f"[crash] run {name.upper()}: {len(stream.events)} events, {len(states)} users, {signals} {sig.name}s, "
        f"{len(run.incarnations) - 1} restarts, recovery (signal to processing again) "
        f"{', '.join(f'{r:.1f}' for r in recoveries)} s (max {max(recoveries):.1f}); "
        f"{consumed:.0f} events consumed, {duplicates:.0f} duplicates absorbed by dedupe (at least); {seconds:.1f}s"
    )
    assert len(recoveries) == KILLS and signals >= KILLS
    diffs = state_differences(clean.states, states)
    assert not diffs, (
        f"{len(diffs)} differences from the clean run (seed {seed}; worker logs in {shared.work_dir}), "
        f"first: {diffs[:10]}"
    )


def test_sigkill_restarts_lose_nothing_and_apply_nothing_twice(
    shared: LocalStack, stream: Stream, clean_run: Clean
) -> None:
    crash_and_restart(shared, stream, clean_run, signal.SIGKILL)


def test_sigterm_restarts_lose_nothing_and_apply_nothing_twice(
    shared: LocalStack, stream: Stream, clean_run: Clean
) -> None:
    crash_and_restart(shared, stream, clean_run, signal.SIGTERM)


# Each changelog record waits this long before Faust's producer hands it to the client, as when the
# broker (or the worker's event loop) is starved of CPU: more than the 0.1 s after which Faust's
# producer.flush() stops waiting for its buffer (faust/transport/producer.py, flush_atmost).
SLOW_CHANGELOG_S = 0.2
SLOW_EVENTS = 90  # every user's first event and 30 users' second: two micro-batches, ~90 state writes


def worker_hook_env(hook_dir: Path, source: str) -> dict[str, str]:
    """Env for a worker process that runs ``source`` first (a ``sitecustomize`` module in ``hook_dir``)."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH")) if p)}


def slow_changelog_env(hook_dir: Path) -> dict[str, str]:
    """Env for a worker whose changelog records each take ``SLOW_CHANGELOG_S`` to be accepted."""
    return worker_hook_env(
        hook_dir,
        f"""
            import asyncio

            import aiokafka

            _send = aiokafka.AIOKafkaProducer.send


            async def send(self, topic, *args, **kwargs):
                if topic.endswith("-changelog"):
                    await asyncio.sleep({SLOW_CHANGELOG_S})
                return await _send(self, topic, *args, **kwargs)


            aiokafka.AIOKafkaProducer.send = send
            """,
    )


def changelog_states(settings: Settings) -> dict[str, dict[str, Any]]:
    """The last value of every key on the ``user_state`` changelog: what a restart from an empty store gets."""
    topic = f"{settings.app_id}-user_state-changelog"
    consumer = Consumer(
        {
            **settings.confluent_config(),
            "group.id": f"{settings.app_id}-changelog-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    states: dict[str, dict[str, Any]] = {}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)])
        at_end: set[int] = set()
        deadline = time.monotonic() + 60
        while len(at_end) < settings.partitions and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise RuntimeError(msg.error())
            states[json.loads(msg.key())] = json.loads(msg.value())
        assert len(at_end) == settings.partitions, f"changelog {topic} not read to its end"
    finally:
        consumer.close()
    return states


def test_offsets_are_committed_only_after_the_state_reached_the_changelog(
    shared: LocalStack, stream: Stream, clean_run: Clean
) -> None:
    """The cause of the changelog-only restore that lost a micro-batch, made deterministic.

    Faust commits acked offsets every ~3 s after ``producer.flush()``, which returns once a changelog
    record takes over 0.1 s to go out, with the rest still queued. Under CPU load that let a commit
    cover a micro-batch whose state writes were still in the queue: a SIGKILL then, and a restart from
    the changelog alone, lost that micro-batch. Here every changelog record is slowed past that 0.1 s;
    the worker is SIGKILLed as soon as the group has committed every event, and the changelog must
    then already hold every user's state with every one of its committed events.
    """
    run = Run.create(shared, "d", index_content=False)
    run.extra_env = slow_changelog_env(shared.work_dir / "slow-changelog-hook")
    run.start()
    events = stream.events[:SLOW_EVENTS]
    expected: dict[str, list[str]] = {}
    for user, event_id, _ in events:
        expected.setdefault(user, []).append(event_id)
    try:
        producer = make_producer(run.settings)
        for user, _, payload in events:
            producer.produce(run.settings.topic_interactions, key=user.encode(), value=payload)
        assert producer.flush(30) == 0
        run.wait_done(len(events), timeout=180)
    finally:
        run.stop(signal.SIGKILL)  # the moment the offsets cover every event: nothing flushes after this
    states = changelog_states(run.settings)
    missing = {
        user: [i for i in ids if i not in states.get(user, {}).get("applied_event_ids", [])]
        for user, ids in expected.items()
    }
    missing = {user: ids for user, ids in missing.items() if ids}
    print(f"\n[crash] run D (changelog slowed {SLOW_CHANGELOG_S}s a record): {len(expected)} users, missing {missing}")
    assert not missing, f"committed events whose state is not on the changelog ({len(missing)} users): {missing}"


# Faust's end of recovery resumes the input partitions, awaits the seek to their committed offsets, then
# clears the stream queues. This long a pause right after the seek (as when the worker is starved of CPU,
# or has just read a whole changelog) lets the fetcher deliver the backlog into the queues meanwhile.
SLOW_SEEK_S = 2.0
FIRST_EVENTS = 120  # committed before the restart, so the restart seeks to offsets > 0


def slow_seek_env(hook_dir: Path) -> dict[str, str]:
    """Env for a worker whose seek to the committed offsets returns ``SLOW_SEEK_S`` late."""
    return worker_hook_env(
        hook_dir,
        f"""
            import asyncio

            from faust.transport.drivers import aiokafka

            _seek = aiokafka.AIOKafkaConsumerThread.seek_to_committed


            async def seek_to_committed(self):
                offsets = await _seek(self)
                await asyncio.sleep({SLOW_SEEK_S})
                return offsets


            aiokafka.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
            """,
    )


def test_a_restart_with_a_backlog_commits_only_events_an_agent_saw(
    shared: LocalStack, stream: Stream, clean_run: Clean
) -> None:
    """The cause of the lost and reordered events after a restart from an empty local store, made deterministic.

    The worker applies and commits the stream's first events, stops, loses its local store, and comes
    back (its seek slowed by ``SLOW_SEEK_S``) to a backlog of the rest. A recovery that reads the
    changelog starts Faust's fetcher before the seek (one that reads nothing starts it after), so before
    the fix the fetcher delivered part of the backlog during the seek and the queue clear dropped it:
    here the commits then stopped short of the stream (377-568 of 908 in three runs), and in the crash
    runs the hole was committed as a gap, so users lost events no worker processed. Every event must be
    committed, every user's state must equal the clean run's, and every waiting event must be consumed.
    """
    run = Run.create(shared, "e", index_content=False)
    first, backlog = stream.events[:FIRST_EVENTS], stream.events[FIRST_EVENTS:]
    producer = make_producer(run.settings)

    def publish(events: list[tuple[str, str, bytes]]) -> None:
        for user, _, payload in events:
            producer.produce(run.settings.topic_interactions, key=user.encode(), value=payload)
        assert producer.flush(30) == 0

    try:
        run.start()
        publish(first)
        run.wait_done(len(first))
        run.stop(signal.SIGTERM)
        shutil.rmtree(run.settings.data_dir / "faust")  # the state comes back from the changelog: a recovery runs
        publish(backlog)  # all waiting when the worker comes back
        run.extra_env = slow_seek_env(shared.work_dir / "slow-seek-hook")
        run.start()
        run.wait_done(len(stream.events), timeout=180)
        consumed = run.snapshot().consumed
        states = run.states(list(stream.expected_ids))
    finally:
        run.stop()
    print(f"\n[crash] run E (seek {SLOW_SEEK_S}s late): {len(backlog)} waiting, {consumed:.0f} consumed after restart")
    diffs = state_differences(clean_run.states, states)
    assert not diffs, f"{len(diffs)} differences from the clean run, first: {diffs[:10]}"
    assert consumed >= len(backlog), f"the restarted worker consumed {consumed:.0f} of {len(backlog)} waiting events"
