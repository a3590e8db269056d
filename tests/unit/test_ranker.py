"""The learned ranker and its training schedule: planted preferences, reasons, snapshots, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.ranker import Example, Ranker, RankerParams, sample_negatives
from ranking.recommender import RankingParams
from ranking.signal import decode_snapshot
from ranking.training import ScheduleParams, TrainingScheduler
from ranking.user_state import UserModel, UserModelParams, UserState

COLUMNS = ("good.score", "noise.a", "noise.b", "noise.c")
GROUPS = {"good": [0], "noise": [1, 2, 3]}


def planted(n: int, seed: int, candidates: int = 20) -> list[Example]:
    """Examples where only ``good.score`` tells the engaged item (row 0) from the others."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        x = rng.standard_normal((candidates, len(COLUMNS))).astype(np.float32)
        x[0, 0] += 2.5  # the positive stands out on the one informative column
        out.append(Example(f"e{seed}-{k}", x.astype(np.float16)))
    return out


def top1(ranker: Ranker, examples: list[Example]) -> float:
    """Share of examples whose positive (row 0) scores strictly above every other row (ties count against)."""
    scores = [ranker.score(e.features.astype(np.float32)) for e in examples]
    return float(np.mean([(s[1:] < s[0]).all() for s in scores]))


def test_the_ranker_learns_a_planted_preference_and_names_it() -> None:
    ranker = Ranker(COLUMNS, RankerParams(prior={}, learning_rate=3e-3))
    held_out = planted(300, seed=2)
    assert top1(ranker, held_out) < 0.2  # an untrained ranker is at chance (1 in 20)
    schedule = TrainingScheduler(ranker, params=ScheduleParams(ranker_batch=32))
    for _ in range(3):
        schedule.add(planted(2_000, seed=1), events=2_000)
    assert top1(ranker, held_out) > 0.5  # the best possible here is about 0.7 (the shift is 2.5 sd)
    best = [e.features.astype(np.float32)[:1] for e in held_out[:50]]
    contrib = ranker.contributions(np.concatenate(best), GROUPS)
    assert (contrib["good"] > contrib["noise"]).mean() > 0.9  # its explanation names the signal that matters


def test_a_restored_ranker_scores_and_learns_identically() -> None:
    ranker = Ranker(COLUMNS)
    schedule = TrainingScheduler(ranker, params=ScheduleParams(ranker_batch=16))
    schedule.add(planted(200, seed=3), events=200)
    copy = Ranker(COLUMNS)
    copy.restore(ranker.snapshot())
    x = np.concatenate([e.features.astype(np.float32) for e in planted(20, seed=4)])
    np.testing.assert_array_equal(ranker.score(x), copy.score(x))
    more = planted(16, seed=5)
    ranker.step(more)
    copy.step(more)
    np.testing.assert_allclose(ranker.score(x), copy.score(x), rtol=1e-6)
    with pytest.raises(ValueError, match="columns"):
        Ranker(COLUMNS[:3]).restore(ranker.snapshot())


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def rehearse(self, count: int, seed: int) -> None:
        self.calls.append((count, seed))


def trained_by(chunks: list[int]) -> tuple[bytes, list[tuple[int, int]]]:
    examples = planted(500, seed=6)
    ranker, recorder = Ranker(COLUMNS), Recorder()
    schedule = TrainingScheduler(ranker, [recorder], ScheduleParams(ranker_batch=32, rehearse_every=100))
    start = 0
    for size in chunks:
        schedule.add(examples[start : start + size], events=size)
        start += size
    assert start == len(examples)
    return ranker.snapshot(), recorder.calls


def test_the_schedule_gives_the_same_models_however_the_stream_is_cut() -> None:
    one, calls_one = trained_by([500])
    many, calls_many = trained_by([1, 7, 32, 100, 3, 57, 300])
    assert calls_one == calls_many and len(calls_one) == 5  # a rehearsal burst every 100 events
    (meta1, a1), (meta2, a2) = decode_snapshot(one, "ranker", 1), decode_snapshot(many, "ranker", 1)
    assert meta1 == meta2
    for key in a1:
        np.testing.assert_array_equal(a1[key], a2[key])


def test_negatives_are_a_seeded_sample_with_the_positive_first() -> None:
    picked = sample_negatives("event-1", 200, positive=17, keep=63)
    assert picked[0] == 17 and len(picked) == 64 and len(set(picked.tolist())) == 64
    np.testing.assert_array_equal(picked, sample_negatives("event-1", 200, positive=17, keep=63))
    assert not np.array_equal(picked, sample_negatives("event-2", 200, positive=17, keep=63))


# --- through OnlineModels: labelling and reasons -----------------------------------------------------
def catalogue() -> InMemoryIndex:
    index = InMemoryIndex(2)
    index.upsert(
        [
            IndexedItem("a", Feed.short_video, False, 0.0, "Grandma's dumplings", np.asarray([1, 0], np.float32)),
            IndexedItem("b", Feed.short_video, False, 0.0, "Street noodles", np.asarray([0, 1], np.float32)),
            IndexedItem("c", Feed.short_video, False, 0.0, "More dumplings", np.asarray([0.95, 0.31], np.float32)),
        ]
    )
    return index


def models(prior: dict[str, float]) -> OnlineModels:
    return OnlineModels(
        UserModel(UserModelParams(event_weights={InteractionType.comment: 1.5})),
        params=RankingParams(top_k=2, freshness_weight=0.0, explore_slots=0, mmr_lambda=1.0),
        ranker_params=RankerParams(prior=prior, hidden=0),
    )


@pytest.mark.parametrize(
    ("prior", "first", "reason"),
    [
        ({"co.score": 10.0}, "b", "people who watched “Grandma's dumplings” also watched this"),
        ({"taste.sim": 1.0}, "c", "because you commented on “Grandma's dumplings”"),
    ],
)
def test_the_reason_follows_the_ranker_weights(prior: dict[str, float], first: str, reason: str) -> None:
    index = catalogue()
    m = models(prior)
    co = m.signal("co").model  # type: ignore[attr-defined]
    for _ in range(3):
        co.learn_sequence(["a", "b"])
    state = UserState()
    ev = Interaction(event_id="e1", user_id="u", item_id="a", type=InteractionType("comment"), ts=0.0)
    m.learn_one(state, ev, index.get(["a"])["a"], shared=False)
    recs = m.recommend([state], Feed.short_video, index, 0.0)[0]
    assert recs[0].item_id == first and recs[0].reason == reason


def test_each_labelled_event_teaches_the_ranker_its_candidates() -> None:
    index = catalogue()
    m = OnlineModels(
        UserModel(UserModelParams(event_weights={InteractionType.comment: 1.5})),
        params=RankingParams(top_k=2, freshness_weight=0.0, explore_slots=0),
        schedule_params=ScheduleParams(label_one_in=1, ranker_batch=1),
    )
    states = {"u": UserState()}
    first = Interaction(event_id="u:0", user_id="u", item_id="a", type=InteractionType("comment"), ts=0.0)
    m.learn_batch(states, [(first, index.get(["a"])["a"])], index)  # no taste yet: nothing to label
    assert m.ranker is not None and m.ranker.examples == 0
    second = Interaction(event_id="u:1", user_id="u", item_id="c", type=InteractionType("comment"), ts=1.0)
    m.learn_batch(states, [(second, index.get(["c"])["c"])], index)
    assert m.ranker.examples == 1 and m.ranker.steps == 1  # "c" was among the candidates before it


def test_an_averaged_ranker_scores_with_the_average_and_restores_it() -> None:
    """With ``average`` the scoring weights trail the latest ones (smoother), and the average is part of the
    snapshot, so a restored ranker scores identically."""
    examples = planted(400, seed=8)
    latest = Ranker(COLUMNS, RankerParams(prior={}, learning_rate=3e-3))
    averaged = Ranker(COLUMNS, RankerParams(prior={}, learning_rate=3e-3, average=0.99))
    TrainingScheduler(latest, params=ScheduleParams(ranker_batch=16)).add(examples, events=400)
    TrainingScheduler(averaged, params=ScheduleParams(ranker_batch=16)).add(examples, events=400)
    x = np.concatenate([e.features.astype(np.float32) for e in planted(20, seed=9)])
    # the same steps taught both; only the scoring weights differ
    for a, b in zip(latest.linear.parameters(), averaged.linear.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6)
    assert not np.allclose(latest.score(x), averaged.score(x))
    assert top1(averaged, planted(300, seed=2)) > 0.3
    copy = Ranker(COLUMNS, RankerParams(prior={}, learning_rate=3e-3, average=0.99))
    copy.restore(averaged.snapshot())
    np.testing.assert_array_equal(averaged.score(x), copy.score(x))


def test_shadow_rankers_are_taught_the_same_steps() -> None:
    """``--compare-rankers`` is a paired comparison: a shadow with the served ranker's own parameters ends up
    identical to it, and one with other parameters differs."""
    ranker = Ranker(COLUMNS)
    same, other = Ranker(COLUMNS), Ranker(COLUMNS, RankerParams(learning_rate=3e-3))
    schedule = TrainingScheduler(ranker, params=ScheduleParams(ranker_batch=16), shadows={"same": same, "o": other})
    schedule.add(planted(300, seed=10), events=300)
    x = np.concatenate([e.features.astype(np.float32) for e in planted(20, seed=11)])
    assert same.steps == other.steps == ranker.steps > 0
    np.testing.assert_array_equal(ranker.score(x), same.score(x))
    assert not np.allclose(ranker.score(x), other.score(x))


def test_contributions_are_each_group_replaced_by_its_mean() -> None:
    ranker = Ranker(COLUMNS, RankerParams())
    for batch in range(4):
        ranker.step(planted(16, batch))
    x = np.random.default_rng(9).standard_normal((37, len(COLUMNS))).astype(np.float32)
    got = ranker.contributions(x, {**GROUPS, "empty": []})
    assert list(got) == ["good", "noise"]  # a group without columns is left out
    for name, cols in GROUPS.items():
        replaced = x.copy()
        replaced[:, cols] = ranker.mean[cols].astype(np.float32)
        np.testing.assert_allclose(got[name], ranker.score(x) - ranker.score(replaced), rtol=1e-6, atol=1e-6)
    assert ranker.contributions(x[:0], GROUPS) == {"good": pytest.approx([]), "noise": pytest.approx([])}
