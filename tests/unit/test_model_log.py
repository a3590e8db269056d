"""The trainer's records, snapshot chunks and deltas: bytes, assembly, version rules, and that a worker
logging records plus a trainer learning them equals a worker training in its own memory."""

from __future__ import annotations

import itertools
import random
import threading
import time

import numpy as np
import pytest

from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.model_log import (
    CHUNK_BYTES,
    LogFormatError,
    ModelDelta,
    ModelSnapshot,
    SnapshotAssembler,
    TrainingRecord,
    chunk_snapshot,
    decode_chunk,
    decode_delta,
    decode_record,
    encode_chunk,
    encode_delta,
    encode_record,
    encode_schedule,
    load_schedule,
    pack,
    records_of,
    split_records,
)
from ranking.online import OnlineModels
from ranking.ranker import Example
from ranking.recommender import RankingParams
from ranking.signal import Observation
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModel, UserModelParams, UserState
from streams.model_updates import ModelUpdates


def observation(n: int, vector: bool = True) -> Observation:
    vec = np.arange(8, dtype=np.float32) * n if vector else None
    return Observation(
        f"e{n}", f"u{n % 3}", f"v{n}", InteractionType.like, 100.0 + n, 1.5, Feed.short_video, ("v1", "v2"), vec
    )


# --- records -------------------------------------------------------------------------------------------------
def test_a_record_round_trips_with_its_vector_and_each_arms_example() -> None:
    ob = observation(7)
    examples = {
        "a": Example("e7", np.random.default_rng(1).normal(size=(64, 40)).astype(np.float16)),
        "b": Example("e7", np.ones((3, 41), np.float16), weight=0.5),
    }
    data = encode_record(TrainingRecord(ob, examples))
    back = decode_record(data)
    assert back.observation.event_id == "e7" and back.observation.context == ("v1", "v2")
    assert back.observation.type is InteractionType.like and back.observation.feed is Feed.short_video
    np.testing.assert_array_equal(back.observation.vector, ob.vector)
    assert set(back.examples) == {"a", "b"} and back.examples["b"].weight == 0.5
    np.testing.assert_array_equal(back.examples["a"].features, examples["a"].features)
    # compact: the arrays' bytes plus a small header (no npz/zip framing, no pickle)
    assert len(data) < 64 * 40 * 2 + 3 * 41 * 2 + 8 * 4 + 400


def test_a_record_without_vector_or_example_and_bad_bytes() -> None:
    back = decode_record(encode_record(TrainingRecord(observation(1, vector=False))))
    assert back.observation.vector is None and back.examples == {}
    with pytest.raises(LogFormatError):
        decode_record(b"\x00\x00\x00\x05hello")
    with pytest.raises(LogFormatError):
        pack({}, {"x": np.array([object()], dtype=object)})
    with pytest.raises(LogFormatError):
        encode_record(TrainingRecord(observation(1), {"a": Example("other", np.zeros((2, 2), np.float16))}))


def test_records_pair_each_observation_with_its_examples_and_split_back() -> None:
    obs = [observation(n) for n in range(4)]
    ex = {"a": [Example("e1", np.zeros((2, 3), np.float16))], "b": [Example("e3", np.zeros((2, 3), np.float16))]}
    recs = records_of(obs, ex)
    assert [set(r.examples) for r in recs] == [set(), {"a"}, set(), {"b"}]
    back_obs, back_ex = split_records([decode_record(encode_record(r)) for r in recs], ["a", "b"])
    assert [o.event_id for o in back_obs] == ["e0", "e1", "e2", "e3"]
    assert [e.event_id for e in back_ex["a"]] == ["e1"] and [e.event_id for e in back_ex["b"]] == ["e3"]


# --- chunks and assembly -------------------------------------------------------------------------------------
def snapshot(version: int, sizes: dict[str, int], arm: str = "a") -> ModelSnapshot:
    rng = np.random.default_rng(version)
    models = {name: rng.integers(0, 255, size=n, dtype=np.uint8).tobytes() for name, n in sizes.items()}
    return ModelSnapshot(arm, version, 0, "cfg", {"livelens.training:0": version}, models)


def test_chunks_fit_a_message_and_reassemble_in_any_order() -> None:
    snap = snapshot(10, {"co": int(CHUNK_BYTES * 2.5), "ranker": 1000, "taste": 0})
    chunks = chunk_snapshot(snap)
    assert [c.chunks for c in chunks if c.model == "co"] == [3, 3, 3]
    assert all(len(encode_chunk(c)) < 1_000_000 for c in chunks)  # the broker's 1 MiB limit, with room for the key
    assert len({c.key for c in chunks}) == len(chunks)
    random.Random(1).shuffle(chunks)
    asm = SnapshotAssembler()
    done = [s for c in chunks if (s := asm.add(decode_chunk(encode_chunk(c)))) is not None]
    assert len(done) == 1 and done[0].models == snap.models and done[0].version == 10
    assert done[0].offsets == {"livelens.training:0": 10}


def test_incomplete_sets_are_ignored_and_the_newest_complete_set_wins() -> None:
    asm = SnapshotAssembler()
    old, new = snapshot(5, {"co": 300, "ranker": 100}), snapshot(9, {"co": 300, "ranker": 100})
    new_chunks = chunk_snapshot(new, chunk_bytes=100)
    for c in new_chunks[:-1]:  # v9 lacks its last chunk
        assert asm.add(c) is None
    got = [s for c in chunk_snapshot(old, chunk_bytes=100) if (s := asm.add(c)) is not None]
    assert [s.version for s in got] == [5]  # the older complete set is served meanwhile
    assert asm.add(new_chunks[-1]).version == 9  # type: ignore[union-attr]
    # older or duplicate versions after that: ignored
    assert all(asm.add(c) is None for c in chunk_snapshot(old, chunk_bytes=100))
    assert all(asm.add(c) is None for c in new_chunks)
    # compaction leftovers: a chunk key of an older, longer version is never mixed into a newer set
    asm2 = SnapshotAssembler()
    stale = chunk_snapshot(snapshot(3, {"co": 500, "ranker": 100}), chunk_bytes=100)
    fresh = chunk_snapshot(snapshot(4, {"co": 200, "ranker": 100}), chunk_bytes=100)
    results = [asm2.add(c) for c in [*stale[2:5], *fresh]]
    assert [r.version for r in results if r is not None] == [4]
    assert results[-1].models == snapshot(4, {"co": 200, "ranker": 100}).models  # type: ignore[union-attr]


def test_a_delta_round_trips_and_its_header_reads_alone() -> None:
    delta = ModelDelta(10, 13, (observation(1), observation(2, vector=False), observation(3)), "cfg")
    data = encode_delta(delta)
    back = decode_delta(data)
    assert (back.from_version, back.to_version, back.config_id) == (10, 13, "cfg")
    assert [o.event_id for o in back.observations] == ["e1", "e2", "e3"]
    assert back.observations[1].vector is None
    np.testing.assert_array_equal(back.observations[2].vector, observation(3).vector)
    assert decode_delta(data, header_only=True).observations == ()


# --- worker + trainer == worker training alone ----------------------------------------------------------------
VECS = {f"v{n}": np.eye(6, dtype=np.float32)[n % 6] + 0.1 * n for n in range(12)}


def catalogue() -> InMemoryIndex:
    idx = InMemoryIndex(6)
    idx.upsert([IndexedItem(i, Feed.short_video, False, 0.0, i, v / np.linalg.norm(v)) for i, v in VECS.items()])
    return idx


def models(arm: str = "a") -> OnlineModels:
    weights = {InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    from ranking.ranker import RankerParams
    from ranking.training import ScheduleParams

    return OnlineModels(
        UserModel(UserModelParams(event_weights=weights)),
        params=RankingParams(),
        ranker_params=RankerParams(hidden=8),
        schedule_params=ScheduleParams(label_one_in=1, ranker_batch=4, rehearse_every=16),
        arm=arm,
    )


def stream(n: int) -> list[Interaction]:
    rng = np.random.default_rng(5)
    return [
        Interaction(f"e{k}", f"u{k % 5}", f"v{int(rng.integers(12))}", InteractionType.like, float(k), 1.0)
        for k in range(n)
    ]


def test_a_worker_logging_records_and_a_trainer_learning_them_equal_a_worker_training_alone() -> None:
    idx = catalogue()
    alone, worker, trainer = models(), models(), models()
    users_alone: dict[str, UserState] = {}
    users: dict[str, UserState] = {}
    evs = stream(80)
    for start in range(0, len(evs), 8):
        part = [(ev, idx.get([ev.item_id])[ev.item_id]) for ev in evs[start : start + 8]]
        for ev, _ in part:
            users_alone.setdefault(ev.user_id, UserState())
            users.setdefault(ev.user_id, UserState())
        alone.learn_batch(users_alone, part, idx)
        observed = worker.observe_batch(users, part, idx)
        wire = [encode_record(r) for r in records_of(observed.observations, observed.examples)]
        obs, ex = split_records([decode_record(w) for w in wire], ["a"])
        trainer.learn_shared(obs, ex["a"])
        # the worker serves the trainer's snapshot before its next batch
        fresh = models()
        fresh.restore_shared(trainer.shared_snapshot(), trainer.trained_events)
        worker.adopt(fresh)
        assert worker.version == trainer.version == alone.version
    assert alone.ranker.steps == trainer.ranker.steps > 0  # type: ignore[union-attr]
    now = 1_000.0
    states = [users_alone[u] for u in sorted(users_alone)]
    a = alone.recommend(states, Feed.short_video, idx, now, sorted(users_alone))
    w = worker.recommend([users[u] for u in sorted(users)], Feed.short_video, idx, now, sorted(users))
    assert [[(i.item_id, i.score) for i in lst] for lst in a] == [[(i.item_id, i.score) for i in lst] for lst in w]


def test_the_schedule_state_round_trips() -> None:
    m = models()
    width = len(m.columns)
    m.schedule.add([Example(f"x{n}", np.full((3, width), n, np.float16)) for n in range(6)], 20)  # type: ignore[union-attr]
    other = models()
    load_schedule(other.schedule, encode_schedule(m.schedule))  # type: ignore[arg-type]
    s, o = m.schedule, other.schedule
    assert (o.events, o.bursts) == (s.events, s.bursts)  # type: ignore[union-attr]
    assert [e.event_id for e in o.pending] == [e.event_id for e in s.pending]  # type: ignore[union-attr]
    assert [e.event_id for e in o.buffer] == [e.event_id for e in s.buffer]  # type: ignore[union-attr]
    np.testing.assert_array_equal(o.buffer[-1].features, s.buffer[-1].features)  # type: ignore[union-attr]


# --- the worker's version rules ---------------------------------------------------------------------------------
def test_a_brand_new_worker_applies_deltas_from_version_0_until_the_first_snapshot() -> None:
    trainer = models()
    served = {"a": models()}
    updates = ModelUpdates(None, lambda arm: models(arm))  # type: ignore[arg-type]
    updates.configs = {"a": trainer.config_id}

    def delta(frm: int, to: int, obs: list[Observation]) -> None:
        updates._on_delta(encode_delta(ModelDelta(frm, to, tuple(obs), trainer.config_id)))

    def counted() -> int:
        return len(served["a"].signal("trending").model.scores.get(Feed.short_video, {}))  # type: ignore[attr-defined]

    delta(0, 2, [observation(0), observation(1)])
    assert not updates.apply(served) and counted() == 0  # not read to the end yet: a snapshot may be there
    updates._target = {}  # read to the end: no snapshot at all
    assert updates.apply(served) and counted() == 2 and updates.ready
    delta(3, 5, [observation(3), observation(4)])  # a gap (2 -> 3 missing): wait for a snapshot
    assert not updates.apply(served) and counted() == 2 and updates.delta_version == 2
    delta(2, 3, [observation(2)])
    updates.apply(served)
    assert counted() == 5 and updates.delta_version == 5 and [v for v, _ in updates.applied] == [2, 5]
    # the first snapshot (v3) is adopted and the deltas past it are applied to it again
    trainer.learn_shared([observation(n) for n in range(3)], [])
    for c in chunk_snapshot(ModelSnapshot("a", 3, 0, trainer.config_id, {}, trainer.shared_snapshot())):
        updates._on_chunk(encode_chunk(c))
    assert updates.apply(served) and served["a"].version.endswith(":3") and counted() == 5


def test_a_worker_serves_newer_snapshots_only_and_deltas_past_its_snapshot() -> None:
    trainer = models()
    served = {"a": models()}
    updates = ModelUpdates(None, lambda arm: models(arm))  # type: ignore[arg-type]
    updates.configs = {"a": trainer.config_id}

    def publish(version: int) -> None:
        snap = ModelSnapshot("a", version, 0, trainer.config_id, {}, trainer.shared_snapshot())
        for c in chunk_snapshot(snap):
            updates._on_chunk(encode_chunk(c))

    def delta(frm: int, to: int, obs: list[Observation]) -> None:
        updates._on_delta(encode_delta(ModelDelta(frm, to, tuple(obs), trainer.config_id)))

    trainer.learn_shared([observation(n) for n in range(5)], [])
    publish(5)
    assert updates.apply(served) and served["a"].version.endswith(":5")
    trending = served["a"].signal("trending").model  # type: ignore[attr-defined]
    assert len(trending.scores[Feed.short_video]) == 5
    delta(0, 5, [observation(n) for n in range(5)])  # already in the snapshot: ignored
    delta(5, 7, [observation(5), observation(6)])
    updates.apply(served)
    trending = served["a"].signal("trending").model  # type: ignore[attr-defined]
    assert len(trending.scores[Feed.short_video]) == 7 and served["a"].version.endswith(":5")
    publish(3)  # older: ignored
    assert not updates.apply(served) and served["a"].version.endswith(":5")
    # a newer snapshot (without the delta's events) still serves them: deltas past it are applied again
    trainer.learn_shared([observation(n) for n in range(5, 6)], [])
    publish(6)
    updates.apply(served)
    trending = served["a"].signal("trending").model  # type: ignore[attr-defined]
    assert served["a"].version.endswith(":6") and len(trending.scores[Feed.short_video]) == 7
    # the counts' versions as served, in order, each once, with when (what the model-freshness bench reads)
    assert [v for v, _ in updates.applied] == [5, 7]
    assert updates.status()["applied"] == [[v, round(t, 4)] for v, t in updates.applied]
    assert all(0 < time.time() - t < 60 for _, t in updates.applied)
    # another configuration's snapshot is never served
    other = ModelSnapshot("a", 99, 0, "deadbeef", {}, trainer.shared_snapshot())
    for c in chunk_snapshot(other):
        updates._on_chunk(encode_chunk(c))
    assert not updates.apply(served) and served["a"].version.endswith(":6")


def test_a_large_delta_is_split_under_the_limit_into_contiguous_version_ranges() -> None:
    from ranking.model_log import encode_deltas

    obs = [observation(n) for n in range(40)]
    whole = encode_deltas(10, obs, "cfg")
    assert len(whole) == 1
    parts = [decode_delta(p) for p in encode_deltas(10, obs, "cfg", limit=len(whole[0]) // 5)]
    assert len(parts) > 1 and all(
        len(p) <= len(whole[0]) // 5 for p in encode_deltas(10, obs, "cfg", len(whole[0]) // 5)
    )
    assert parts[0].from_version == 10 and parts[-1].to_version == 50
    assert all(a.to_version == b.from_version for a, b in itertools.pairwise(parts))
    assert [o.event_id for p in parts for o in p.observations] == [o.event_id for o in obs]
    assert all(p.to_version - p.from_version == len(p.observations) for p in parts)


def test_apply_until_ready_serves_a_snapshot_that_arrives_while_it_waits() -> None:
    """What a restarting worker runs before its event loop (``streams.app.start_loading``): it waits for the
    topic to be read to its end and the snapshot found there to be served, and gives up at its timeout."""
    trainer = models()
    served = {"a": models()}
    updates = ModelUpdates(None, lambda arm: models(arm))  # type: ignore[arg-type]
    updates.configs = {"a": trainer.config_id}
    assert not updates.apply_until_ready(served, timeout=0.2)  # nothing read yet
    trainer.learn_shared([observation(n) for n in range(4)], [])

    def arrive() -> None:
        time.sleep(0.3)
        for c in chunk_snapshot(ModelSnapshot("a", 4, 0, trainer.config_id, {}, trainer.shared_snapshot())):
            updates._on_chunk(encode_chunk(c))
        updates._target = {"a": 4}  # the reader reached the end and found v4 there

    threading.Thread(target=arrive).start()
    assert updates.apply_until_ready(served, timeout=30.0)
    assert updates.served == {"a": 4} and served["a"].version.endswith(":4") and updates.first_served_at
