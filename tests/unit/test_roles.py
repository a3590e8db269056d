"""The roles' agent bodies driven with fakes, without Faust's runtime or a broker.

The interaction body must not return (and so let Faust ack and commit the batch's offsets) before the
broker holds every state it wrote and every training record it sent; a failed write is written again.
With ``exact_end_offsets`` the last write of each partition goes out alone, after the others are
acknowledged (the embedded broker's end offsets are exact only after a one-record batch).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from ranking.domain import ContentKind, Feed
from streams.faust_internals import current_event
from streams.handlers import ContentResult, InteractionResult
from streams.roles import encoder, ranking
from streams.roles.shell import Worker, key_partition, last_per_partition
from streams.schemas import ContentEvent, DeadLetter, InteractionEvent, InteractionType, Recommendation, RejectedEvent
from streams.settings import Settings


class FakeEvent:
    def __init__(self, value: bytes, partition: int = 0) -> None:
        self.value = value
        self.message = SimpleNamespace(partition=partition)


class FakeTopic:
    """Records sends; each send's future stays pending until the test resolves it (``auto``: at once)."""

    def __init__(self, auto: bool = True) -> None:
        self.auto = auto
        self.sent: list[tuple[bytes | None, bytes | None]] = []
        self.partitions: list[int | None] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(
        self, key: bytes | None = None, value: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((key, value))
        self.partitions.append(partition)
        future = asyncio.get_running_loop().create_future()
        if self.auto:
            future.set_result(None)
        self.futures.append(future)
        return future


class FakeTable:
    """The calls ``streams.faust_internals.set_in_partition_of`` makes on a Faust table; each changelog
    send records the event the write is pinned to (and its partition, and whether it moves the store's
    persisted offset), and its future stays pending until the test resolves it."""

    key_serializer = value_serializer = None

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.changelog: list[tuple[str, Any, Any]] = []
        self.partitions: list[int] = []
        self.persisted: list[bool] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.changelog_topic = SimpleNamespace(send_soon=self.send_soon)

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def partition_for_key(self, key: str) -> int:
        event = current_event()
        return event.message.partition if event is not None else 0

    def send_changelog(self, partition: int, key: str, value: Any) -> asyncio.Future[Any]:
        """``Table.send_changelog``: with the callback that moves the persisted offset."""
        return self._record(partition, key, value, persisted=True)

    def send_soon(self, *, key: str, value: Any, partition: int, **_: Any) -> asyncio.Future[Any]:
        """``changelog_topic.send_soon`` without a callback: the persisted offset stays."""
        return self._record(partition, key, value, persisted=False)

    def _record(self, partition: int, key: str, value: Any, *, persisted: bool) -> asyncio.Future[Any]:
        self.changelog.append((key, value, current_event()))
        self.partitions.append(partition)
        self.persisted.append(persisted)
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class FakeServices:
    def __init__(self, handlers: Any) -> None:
        self._handlers = handlers
        self.encoder_pool = ThreadPoolExecutor(1)
        self.index_pool = ThreadPoolExecutor(1)
        self.sink_pool = ThreadPoolExecutor(1)
        self.last_error: str | None = None
        self.ready = True

    async def handlers(self) -> Any:
        return self._handlers


def interaction(event_id: str, user: str, item: str = "i1") -> bytes:
    return (
        InteractionEvent(event_id=event_id, user_id=user, item_id=item, type=InteractionType.like)
        .model_dump_json()
        .encode()
    )


def recommendation(user: str) -> Recommendation:
    return Recommendation(
        user_id=user, feed=Feed.short_video, items=[], generated_at=time.time(), model_version="a:3f9c1a2b:0"
    )


class FakeRanker:
    """``process_interactions`` of a ranker: every user touched gets a state, a list and a training record."""

    def __init__(self) -> None:
        self.arms: dict[str, Any] = {}
        self.calls: list[tuple[list[tuple[int, InteractionEvent]], dict[str, Any]]] = []

    def process_interactions(self, events: Any, states: Any) -> InteractionResult:
        self.calls.append((list(events), dict(states)))
        users = sorted({ev.user_id for _, ev in events})
        return InteractionResult(
            states={u: {"seen": [ev.event_id for _, ev in events if ev.user_id == u]} for u in users},
            recommendations=[recommendation(u) for u in users],
            dead=[],
            training=[(u, f"record-{u}".encode()) for u in users],
        )


def ranking_role(
    table: FakeTable, training: FakeTopic, exact_end: bool = True
) -> tuple[ranking.Ranking, dict[str, FakeTopic], FakeRanker]:
    s = Settings(exact_end_offsets=exact_end)
    topics = {name: FakeTopic() for name in (s.topic_dead_letter, s.topic_live_segments, *s.feed_topics().values())}
    topics[s.topic_training] = training
    handlers = FakeRanker()
    return ranking.Ranking(Worker(s, FakeServices(handlers), topics), table), topics, handlers  # type: ignore[arg-type]


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_an_interaction_batch_writes_pinned_states_and_returns_only_once_the_broker_holds_them() -> None:
    async def scenario() -> None:
        table = FakeTable({"u1": {"seen": ["old"]}})
        training = FakeTopic(auto=False)
        r, topics, handlers = ranking_role(table, training, exact_end=False)  # all at once (real Kafka)
        s = r.worker.settings
        events = [
            FakeEvent(interaction("e1", "u1")),
            FakeEvent(interaction("e2", "u2")),
            FakeEvent(interaction("e3", "u1")),
        ]
        body = asyncio.create_task(ranking.interactions_batch(r, events))
        await until(lambda: len(training.sent) == 2 and len(table.changelog) == 2)

        # the handlers got the batch in order, with the table's states of its users
        ((batch, states),) = handlers.calls
        assert [(pos, ev.event_id) for pos, ev in batch] == [(0, "e1"), (1, "e2"), (2, "e3")]
        assert states == {"u1": {"seen": ["old"]}, "u2": None}
        # one write per user, pinned to the user's last event of the batch; the local store keeps the old
        # states until the broker holds the new ones and the training records (store_written)
        pinned = {key: (value, event) for key, value, event in table.changelog}
        assert pinned["u1"] == ({"seen": ["e1", "e3"]}, events[2])
        assert pinned["u2"] == ({"seen": ["e2"]}, events[1])
        assert table.data == {"u1": {"seen": ["old"]}}
        assert sorted(training.sent) == [(b"u1", b"record-u1"), (b"u2", b"record-u2")]
        feed = topics[s.feed_topics()[Feed.short_video.value]]
        assert sorted(key for key, _ in feed.sent) == [b"u1", b"u2"]  # recommendations go out meanwhile

        # while a changelog record is not acknowledged, the body is still awaiting: the batch is not acked
        for future in training.futures:
            future.set_result(None)
        await asyncio.sleep(0.1)
        assert not body.done(), "returned before the state writes were acknowledged"
        table.futures[0].set_result(None)
        await asyncio.sleep(0.1)
        assert not body.done(), "returned with one state write unacknowledged"
        assert table.data == {"u1": {"seen": ["old"]}}, "stored before every write was acknowledged"
        table.futures[1].set_result(None)
        await asyncio.wait_for(body, 5.0)
        assert table.data == {"u1": {"seen": ["e1", "e3"]}, "u2": {"seen": ["e2"]}}

    asyncio.run(scenario())


def test_a_failed_changelog_write_is_written_again_before_the_body_returns() -> None:
    async def scenario() -> None:
        table = FakeTable()
        r, _, _ = ranking_role(table, FakeTopic(), exact_end=False)
        events = [FakeEvent(interaction("e1", "u1")), FakeEvent(interaction("e2", "u2"))]
        body = asyncio.create_task(ranking.interactions_batch(r, events))
        await until(lambda: len(table.changelog) == 2)
        first = {key: future for (key, _, _), future in zip(table.changelog, table.futures, strict=True)}
        first["u1"].set_exception(RuntimeError("broker said no"))
        first["u2"].set_result(None)
        await until(lambda: len(table.changelog) == 3)  # after the retry delay (0.5 s)
        assert table.changelog[2] == ("u1", {"seen": ["e1"]}, events[0])  # same state, same partition
        assert not body.done()
        table.futures[2].set_result(None)
        await asyncio.wait_for(body, 5.0)

    asyncio.run(scenario())


def test_a_failed_training_record_is_sent_again_before_the_body_returns() -> None:
    async def scenario() -> None:
        table = FakeTable()
        training = FakeTopic(auto=False)
        r, _, _ = ranking_role(table, training, exact_end=False)
        body = asyncio.create_task(ranking.interactions_batch(r, [FakeEvent(interaction("e1", "u1"))]))
        await until(lambda: len(training.sent) == 1 and len(table.futures) == 1)
        table.futures[0].set_result(None)
        training.futures[0].set_exception(RuntimeError("request timed out"))
        await until(lambda: len(training.sent) == 2)
        assert training.sent[1] == (b"u1", b"record-u1")
        assert not body.done()
        training.futures[1].set_result(None)
        await asyncio.wait_for(body, 5.0)

    asyncio.run(scenario())


class FakeIndexer:
    def __init__(self) -> None:
        self.calls: list[list[ContentEvent]] = []

    def index_content(self, events: Any) -> ContentResult:
        self.calls.append(list(events))
        return ContentResult(dead=[(events[1], RejectedEvent("media_unreadable", "no such file"))])


def test_a_content_batch_is_indexed_and_what_cannot_be_is_dead_lettered() -> None:
    s = Settings()
    dlq = FakeTopic()
    handlers = FakeIndexer()
    w = Worker(s, FakeServices(handlers), {s.topic_dead_letter: dlq})  # type: ignore[arg-type]
    good = [
        ContentEvent(item_id=f"i{n}", kind=ContentKind.short_video, title=f"title {n}").model_dump_json().encode()
        for n in range(2)
    ]
    events = [FakeEvent(good[0]), FakeEvent(b"{not json"), FakeEvent(good[1])]
    asyncio.run(encoder.content_batch(w, events))
    ((indexed,),) = [handlers.calls]
    assert [ev.item_id for ev in indexed] == ["i0", "i1"]
    letters = [DeadLetter.model_validate_json(value) for _, value in dlq.sent]
    assert [(letter.source_topic, letter.reason) for letter in letters] == [
        (s.topic_content, letters[0].reason),
        (s.topic_content, "media_unreadable"),
    ]
    assert letters[0].payload == "{not json" and letters[1].payload.startswith('{"item_id":"i1"')


@pytest.mark.parametrize("role", ["encoder", "ranking", "all"])
def test_build_app_wires_the_agents_of_its_role(role: str, tmp_path: Any) -> None:
    from streams.app import build_app

    s = Settings(worker_role=role, data_dir=tmp_path, trainer=False, kafka_broker="127.0.0.1:1")
    app = build_app(s)
    topics = {next(iter(agent.channel.topics)) for agent in app.agents.values()}
    encoder_inputs = {s.topic_content, s.topic_live_segments}
    ranking_inputs = {s.topic_live_status, s.topic_interactions, s.topic_fanout}
    expected = {"encoder": encoder_inputs, "ranking": ranking_inputs, "all": encoder_inputs | ranking_inputs}
    assert topics == expected[role]


class FakeUpdates:
    """A trainer's reader as ``ModelUpdates`` shows itself to the body: the first batch waits for its models."""

    def __init__(self) -> None:
        self.waited = False
        self.applied: list[Any] = []

    async def wait_ready(self, apply: Any, timeout: float) -> bool:
        self.waited = True
        await apply()  # called as ModelUpdates.wait_ready calls it: without arguments
        return True

    def apply(self, arms: Any) -> bool:
        self.applied.append(arms)
        return False


def test_last_per_partition_keeps_the_last_key_of_each_partition() -> None:
    assert last_per_partition({"a": 0, "b": 1, "c": 0, "d": 2, "e": 1}) == {"c", "d", "e"}
    assert last_per_partition({}) == set()


def test_key_partition_is_the_producers_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for n in range(200):
        key = f"user-{n}".encode()
        assert key_partition(key, 4) == DefaultPartitioner()(key, [0, 1, 2, 3], [0, 1, 2, 3])


def test_with_exact_end_the_last_state_of_each_partition_is_written_alone_after_the_rest() -> None:
    async def scenario() -> None:
        table = FakeTable()
        r, _, _ = ranking_role(table, FakeTopic())
        events = [
            FakeEvent(interaction("e1", "u1"), partition=0),
            FakeEvent(interaction("e2", "u2"), partition=0),
            FakeEvent(interaction("e3", "u3"), partition=0),
            FakeEvent(interaction("e4", "u4"), partition=1),
        ]
        body = asyncio.create_task(ranking.interactions_batch(r, events))
        await until(lambda: len(table.changelog) == 2)
        await asyncio.sleep(0.1)
        # the heads: partition 0 but its last write; they leave the store's persisted offset alone
        assert [key for key, _, _ in table.changelog] == ["u1", "u2"]
        assert table.persisted == [False, False]
        table.futures[0].set_result(None)
        await asyncio.sleep(0.1)
        assert len(table.changelog) == 2, "a tail went out with a head still unacknowledged"
        table.futures[1].set_result(None)
        # then one record per partition, each alone in its partition, moving the persisted offset
        await until(lambda: len(table.changelog) == 4)
        assert sorted(zip([k for k, _, _ in table.changelog[2:]], table.partitions[2:], strict=True)) == [
            ("u3", 0),
            ("u4", 1),
        ]
        assert table.persisted[2:] == [True, True]
        assert table.changelog[2][2] is events[2] or table.changelog[3][2] is events[2]  # still pinned
        assert not body.done()
        for future in table.futures[2:]:
            future.set_result(None)
        await asyncio.wait_for(body, 5.0)
        assert len(table.changelog) == 4  # every state written once

    asyncio.run(scenario())


def test_with_exact_end_a_failed_head_is_written_again_before_the_tails_go() -> None:
    async def scenario() -> None:
        table = FakeTable()
        r, _, _ = ranking_role(table, FakeTopic())
        events = [FakeEvent(interaction("e1", "u1")), FakeEvent(interaction("e2", "u2"))]
        body = asyncio.create_task(ranking.interactions_batch(r, events))
        await until(lambda: len(table.changelog) == 1)
        table.futures[0].set_exception(RuntimeError("broker said no"))
        await until(lambda: len(table.changelog) == 2)  # after the retry delay (0.5 s)
        assert table.changelog[1][0] == "u1" and table.persisted[1] is False
        table.futures[1].set_result(None)
        await until(lambda: len(table.changelog) == 3)
        assert table.changelog[2][0] == "u2" and table.persisted[2] is True
        table.futures[2].set_result(None)
        await asyncio.wait_for(body, 5.0)

    asyncio.run(scenario())


def test_with_exact_end_the_last_training_record_of_each_partition_is_sent_after_the_rest() -> None:
    async def scenario() -> None:
        table = FakeTable()
        training = FakeTopic(auto=False)
        r, _, _ = ranking_role(table, training)
        partitions = r.worker.settings.partitions
        users = [f"u{n}" for n in range(12)]
        placed = {u: key_partition(u.encode(), partitions) for u in users}
        tails = last_per_partition({u: placed[u] for u in sorted(users)})  # FakeRanker logs users sorted
        body = asyncio.create_task(ranking.interactions_batch(r, [FakeEvent(interaction(f"e{u}", u)) for u in users]))
        await until(lambda: len(training.sent) == len(users) - len(tails))
        # every record goes where the producer's partitioner would have put it
        assert all(p == placed[k.decode()] for (k, _), p in zip(training.sent, training.partitions, strict=True))
        assert {k.decode() for k, _ in training.sent}.isdisjoint(tails)
        for future in table.futures:
            future.set_result(None)
        await asyncio.sleep(0.1)
        assert len(training.sent) == len(users) - len(tails), "a tail went out with heads unacknowledged"
        for future in list(training.futures):
            future.set_result(None)
        await until(lambda: len(training.sent) == len(users))
        assert {k.decode() for k, _ in training.sent[-len(tails) :]} == tails
        assert not body.done()
        for future in training.futures[-len(tails) :]:
            future.set_result(None)
        await until(lambda: len(table.futures) == len(users))  # the state tail, after its heads
        table.futures[-1].set_result(None)
        await asyncio.wait_for(body, 5.0)

    asyncio.run(scenario())


def test_the_first_interaction_batch_waits_for_the_trainers_models_and_later_ones_do_not() -> None:
    async def scenario() -> None:
        table = FakeTable()
        r, _, handlers = ranking_role(table, FakeTopic())
        updates = FakeUpdates()
        r.updates = updates  # type: ignore[assignment]
        for n in range(2):
            body = asyncio.create_task(ranking.interactions_batch(r, [FakeEvent(interaction(f"e{n}", "u1"))]))
            await until(lambda n=n: len(table.futures) == n + 1)
            table.futures[n].set_result(None)
            await asyncio.wait_for(body, 5.0)
        assert updates.applied == [handlers.arms]  # applied to the ranking handlers' arms, once

    asyncio.run(scenario())


def test_handlers_started_early_are_built_once_and_a_failed_early_build_is_retried(monkeypatch: Any) -> None:
    """``livelens worker`` starts loading before Faust runs (``start_loading``): the first ``handlers()``
    takes that build, and the callback (which serves the trainer's snapshot) ran with it in the index thread."""
    from streams.roles.services import Services

    outcomes: list[Any] = []
    built: list[str] = []

    def build(self: Services) -> Any:
        outcome = outcomes.pop(0)
        built.append(str(outcome))
        if isinstance(outcome, Exception):
            raise outcome
        return SimpleNamespace(name=outcome)

    monkeypatch.setattr(Services, "_build", build)
    seen: list[tuple[str, str]] = []

    def then(handlers: Any) -> None:
        seen.append((handlers.name, threading.current_thread().name))

    services = Services(Settings())
    outcomes[:] = ["early"]
    services.start_loading(then)
    services.start_loading(then)  # a second call starts nothing
    assert asyncio.run(services.handlers()).name == "early" and services.ready
    assert built == ["early"] and len(seen) == 1 and seen[0][0] == "early"
    assert seen[0][1].startswith("livelens-index")  # where ranking runs: the snapshot is swapped in there

    again = Services(Settings())
    outcomes[:] = [RuntimeError("Milvus not up yet"), "second"]
    seen.clear()
    again.start_loading(then)
    assert asyncio.run(again.handlers()).name == "second"  # retried after the failed early build
    assert built[-2:] == ["Milvus not up yet", "second"] and seen == []  # no callback without handlers


def test_loaded_handlers_are_frozen_out_of_the_cyclic_collector(monkeypatch: Any) -> None:
    """What loading built lives as long as the worker: ``gc.freeze`` keeps full collections off it."""
    import gc

    from streams.roles.services import Services

    loaded = [SimpleNamespace(n=n) for n in range(1000)]
    monkeypatch.setattr(Services, "_build", lambda self: SimpleNamespace(loaded=loaded))
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        handlers = asyncio.run(Services(Settings()).handlers())
        assert handlers.loaded is loaded and gc.get_freeze_count() >= len(loaded)
    finally:
        gc.unfreeze()


def test_the_faust_worker_leaves_the_root_logger_at_the_configured_level() -> None:
    """Faust's start-up spinner set the root logger to DEBUG for good: every aiokafka debug call built a record."""
    import logging

    import faust

    from streams.faust_internals import faust_worker

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        worker = faust_worker(faust.App("spinner-check", broker="memory://"), "warn", quiet=True)
        worker._setup_logging()
        assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
        assert root.getEffectiveLevel() == logging.WARNING
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
