"""The trainer end to end on the embedded broker: a ranking worker with LIVELENS_TRAINER=true logs training
records, the trainer learns them and publishes snapshots, the worker's lists carry the trainer's version,
a freshly started second worker ranks with the snapshot, and a SIGKILLed trainer resumes exactly."""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from ranking.domain import Feed
from ranking.model_log import decode_record, split_records
from streams.consumer import TopicReader, as_recommendation
from streams.local import LocalStack, WorkerProcess
from streams.params import online_models_from_settings
from streams.ports import free_port
from streams.replay import publish_raw
from streams.schemas import ContentEvent, InteractionEvent
from streams.settings import Settings
from streams.trainer import read_snapshots
from tests.conftest import base_settings

pytestmark = pytest.mark.integration

ITEMS = {
    "v_cook1": "Grandma's homemade dumplings recipe, pork and cabbage filling",
    "v_cook2": "Spicy Sichuan noodles cooked at home in ten minutes",
    "v_cook3": "How to bake fluffy bread rolls in your kitchen",
    "v_ball1": "Football highlights: last minute goal wins the derby",
    "v_ball2": "Top ten soccer goals of the season, amazing strikes",
    "v_ball3": "Goalkeeper saves a penalty in the football cup final",
}
USERS = [f"user{n}" for n in range(6)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    root = tmp_path_factory.mktemp("trainer")
    settings = base_settings(root, trainer=True, snapshot_interval_s=2.0, text_encoder="hash")
    with LocalStack(settings, root) as local:
        s = local.settings
        for item_id, title in ITEMS.items():
            publish_raw(
                s,
                s.topic_content,
                item_id,
                ContentEvent(item_id=item_id, kind="short_video", title=title).model_dump_json(),
            )
        assert local.worker is not None
        local.worker.wait_for("livelens_items_indexed", len(ITEMS), timeout=120)
        yield local


def interact(s: Settings, n: int) -> str:
    user = USERS[n % len(USERS)]
    item = list(ITEMS)[(n * 7 + n // 6) % len(ITEMS)]
    ev = InteractionEvent(event_id=f"t{n}", user_id=user, item_id=item, type="like")
    publish_raw(s, s.topic_interactions, user, ev.model_dump_json())
    return ev.event_id


def ready(worker: WorkerProcess) -> dict[str, Any] | None:
    try:
        return worker.get("/ready")  # type: ignore[no-any-return]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_lists_carry_the_trainers_version_and_a_new_worker_ranks_with_its_snapshot(trained: LocalStack) -> None:
    s = trained.settings
    assert trained.trainer is not None and trained.worker is not None
    reader = TopicReader(s, [s.topic_recs_short_video], from_beginning=True)
    reader.wait_assigned()
    for n in range(30):
        interact(s, n)
    status = trained.trainer.wait_for("version", 30, timeout=90)
    assert status["records"] == 30
    # a snapshot with every event goes out within the interval; the worker then serves it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and trained.worker.get("/stats")["trainer_models"]["served"].get("a") != 30:
        time.sleep(0.2)
    assert trained.worker.get("/stats")["trainer_models"]["served"] == {"a": 30}
    last = interact(s, 30)
    rec = None
    for got in reader.iterate(60):
        rec = as_recommendation(got)
        if rec.trigger_event_id == last:
            break
    reader.close()
    assert rec is not None and rec.trigger_event_id == last
    assert rec.model_version.split(":")[2] == "30", rec.model_version  # ranked by the trainer's snapshot v30
    config = online_models_from_settings(s).config_id
    assert rec.model_version.split(":")[1] == config

    # a second worker, started now, loads the latest complete snapshot before it says ready
    trained.trainer.wait_for("version", 31, timeout=60)
    snaps = read_snapshots(s)
    deadline = time.monotonic() + 30
    while snaps.get("a") is None or snaps["a"].version < 31:
        assert time.monotonic() < deadline, snaps
        time.sleep(0.5)
        snaps = read_snapshots(s)
    root = Path(s.data_dir).parent
    # its own data dir (RocksDB) and web port; same group: it takes over some interaction partitions
    second = WorkerProcess(
        s.model_copy(update={"web_port": free_port(), "data_dir": root / "worker2"}), root / "worker2.log"
    )
    started = time.monotonic()
    try:
        second.start()
        body = ready(second)
        while body is None or body.get("status") != "ready":
            assert time.monotonic() - started < 120, body
            time.sleep(0.1)
            body = ready(second)
        took = time.monotonic() - started
        served = body["checks"]["trainer_models"]
        assert served["served"] == {"a": snaps["a"].version}
        rec2 = second.get(f"/recommendations/{USERS[0]}?feed=short_video")
        assert rec2["model_version"].split(":")[2] == str(snaps["a"].version)
        version, restore = snaps["a"].version, served["restore_s"]
        print(f"\nsecond worker ready with snapshot v{version} in {took:.1f}s (restore {restore:.3f}s)")
    finally:
        second.stop()


def training_log(s: Settings) -> list[bytes]:
    """Every record on the training topic, partition by partition."""
    consumer = Consumer({**s.confluent_config(), "group.id": "check", "enable.partition.eof": True})
    meta = consumer.list_topics(s.topic_training, timeout=10).topics[s.topic_training]
    consumer.assign([TopicPartition(s.topic_training, p, OFFSET_BEGINNING) for p in meta.partitions])
    left, out = set(meta.partitions), []
    while left:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                left.discard(msg.partition())
            continue
        out.append(msg.value())
    consumer.close()
    return out


def test_a_sigkilled_trainer_resumes_from_its_snapshot_and_counts_every_event_once(trained: LocalStack) -> None:
    s = trained.settings
    assert trained.trainer is not None
    before = trained.trainer.wait_for("snapshots", 1, timeout=60)["version"]
    for n in range(100, 140):
        interact(s, n)
    trained.trainer.wait_for("version", before + 40, timeout=90)
    trained.restart_trainer(signal.SIGKILL, log_name="trainer2.log")
    for n in range(140, 160):
        interact(s, n)
    total = before + 60
    status = trained.trainer.wait_for("version", total, timeout=120)
    time.sleep(1.0)
    trained.restart_trainer(signal.SIGTERM, log_name="trainer3.log")  # publishes its final snapshot on the way out
    assert trained.trainer.status()["version"] == total, status  # type: ignore[index]
    # an uninterrupted run: every logged record learned once, in one process
    records = [decode_record(v) for v in training_log(s)]
    assert len({r.observation.event_id for r in records}) == len(records) == total
    reference = online_models_from_settings(s)
    obs, ex = split_records(records, ["a"])
    reference.learn_shared(obs, ex["a"])
    snap = read_snapshots(s)["a"]
    assert snap.version == total
    restored = online_models_from_settings(s)
    restored.restore_shared(snap.models, snap.version)
    for name in ("trending", "co"):
        mine, theirs = restored.signal(name).model, reference.signal(name).model  # type: ignore[attr-defined]
        if name == "trending":
            a, b = mine.scores[Feed.short_video], theirs.scores[Feed.short_video]
            assert set(a) == set(b)
            assert all(a[i][0] == pytest.approx(b[i][0]) for i in a)
        else:
            assert mine.popularity == pytest.approx(theirs.popularity)
            assert {k: pytest.approx(v) for k, v in mine.links.items()} == theirs.links


def applied_counts(worker: WorkerProcess) -> dict[str, int]:
    """Events each user's table value says were applied (``n_events``), as the worker serves it."""
    return {u: int(worker.get(f"/state/{u}")["n_events"]) for u in USERS}


def test_a_sigkilled_ranking_worker_mid_stream_applies_and_logs_every_event_once(trained: LocalStack) -> None:
    """The worker is SIGKILLed while interactions flow in (the trainer keeps running): the restarted worker
    ends with every event applied once, the trainer learns each exactly once, and the time from the new
    process's start until it ranks with the trainer's latest snapshot is measured."""
    s = trained.settings
    assert trained.trainer is not None and trained.worker is not None
    base = trained.wait_models_current(120)
    before = applied_counts(trained.worker)
    events = range(300, 360)
    expected = {u: 0 for u in USERS}
    for n in events:
        expected[USERS[n % len(USERS)]] += 1
    published: list[str] = []

    def publish() -> None:
        for n in events:
            published.append(interact(s, n))
            time.sleep(0.05)

    sender = threading.Thread(target=publish, daemon=True)
    sender.start()
    while len(published) < 20:  # a third of the stream is out: the worker is processing when it dies
        time.sleep(0.02)
    snapshot_before = read_snapshots(s)["a"].version
    trained.stop_worker(signal.SIGKILL)
    killed_at = len(published)
    started, launched_at = time.monotonic(), time.time()
    worker = WorkerProcess(s, trained.work_dir / "worker-after-kill.log").launch()
    trained.worker = worker
    trained.workers[:1] = [worker]
    body = ready(worker)
    while body is None or body.get("status") != "ready":
        assert time.monotonic() - started < 120, body
        time.sleep(0.1)
        body = ready(worker)
    ready_s = time.monotonic() - started
    served = body["checks"]["trainer_models"]["served"]
    assert served.get("a", -1) >= snapshot_before, served  # cold start loaded a snapshot at least as new
    model_s = body["checks"]["trainer_models"]["first_served_at"] - launched_at
    # it loads while the group forms (it waits out the killed member's session): 6-8 s here, 17-18 s before
    assert model_s < 15.0, f"the trainer's snapshot was served {model_s:.1f}s after the worker's start"
    sender.join(60)
    assert len(published) == len(events)
    version = trained.wait_models_current(120)
    current_s = time.monotonic() - started
    # the trainer learned each event once, however often the restarted worker re-read the uncommitted part
    assert version == base + len(events), (base, version)
    after = applied_counts(worker)
    assert {u: after[u] - before[u] for u in USERS} == expected
    logged = [decode_record(v).observation.event_id for v in training_log(s)]
    mine = [e for e in logged if e in set(published)]
    assert set(mine) == set(published)
    print(
        f"\nworker SIGKILLed after {killed_at}/{len(events)} events; restarted worker ready with snapshot "
        f"v{served.get('a')} (>= v{snapshot_before}) served {model_s:.1f}s after its start, /ready after "
        f"{ready_s:.1f}s, serving the trainer's "
        f"current v{version} after {current_s:.1f}s; {len(mine) - len(set(mine))} duplicate training records "
        "on the topic, none learned twice"
    )


def test_a_brand_new_deployment_is_ready_and_serves_before_any_snapshot(tmp_path: Path) -> None:
    """Trainer on (the default) but nothing published yet (snapshot interval far away): the worker must
    not hang at /ready; it ranks with its own content and taste, then serves the trainer's deltas."""
    settings = base_settings(tmp_path, snapshot_interval_s=3600.0, text_encoder="hash")
    assert settings.trainer  # the default
    with LocalStack(settings, tmp_path) as local:
        s = local.settings
        assert local.worker is not None and local.trainer is not None
        body = ready(local.worker)
        deadline = time.monotonic() + 60
        while body is None or body.get("status") != "ready":
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
            body = ready(local.worker)
        assert body["checks"]["trainer_models"]["served"] == {}
        assert not read_snapshots(s, timeout=10)  # really nothing published
        for item_id, title in ITEMS.items():
            ev = ContentEvent(item_id=item_id, kind="short_video", title=title)
            publish_raw(s, s.topic_content, item_id, ev.model_dump_json())
        local.worker.wait_for("livelens_items_indexed", len(ITEMS), timeout=120)
        reader = TopicReader(s, [s.topic_recs_short_video], from_beginning=True)
        try:
            reader.wait_assigned()
            first = interact(s, 0)
            rec = next((r for r in map(as_recommendation, reader.iterate(60)) if r.trigger_event_id == first), None)
        finally:
            reader.close()
        assert rec is not None and rec.items, "no list from a worker without a snapshot"
        assert rec.model_version.split(":")[2] == "0"  # nothing shared learned in the worker
        # the trainer learns the event and the worker applies its delta, without any snapshot
        assert local.wait_models_current(60) == 1
        applied = local.worker.get("/stats")["trainer_models"]["applied"]
        assert applied and applied[-1][0] == 1
