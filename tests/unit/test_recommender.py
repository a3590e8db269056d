"""Ranking a feed through OnlineModels: seen items, reasons, MMR, live boosts, exploration, cold start."""

import math

import numpy as np
import pytest

from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.recommender import RankingParams, cold_start, mmr, mmr_batch
from ranking.signal import Observation
from ranking.user_state import UserModel, UserModelParams, UserState

COOK = np.array([1.0, 0.0, 0.0], dtype=np.float32)
BALL = np.array([0.0, 1.0, 0.0], dtype=np.float32)
WEIGHTS = {InteractionType.gift: 3.0, InteractionType.like: 1.2, InteractionType.view: 0.5, InteractionType.skip: -0.6}


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def catalogue(*items: tuple[str, str, np.ndarray, Feed]) -> InMemoryIndex:
    index = InMemoryIndex(3)
    index.upsert([IndexedItem(i, feed, feed is Feed.live, 0.0, title, vec) for i, title, vec, feed in items])
    return index


def models(**params: object) -> OnlineModels:
    defaults: dict[str, object] = {"top_k": 5, "freshness_weight": 0.0, "explore_slots": 0, "mmr_lambda": 1.0}
    return OnlineModels(UserModel(UserModelParams(event_weights=WEIGHTS)), params=RankingParams(**(defaults | params)))


def user(m: OnlineModels, index: InMemoryIndex, *events: tuple[str, str]) -> UserState:
    state = UserState()
    for n, (item, kind) in enumerate(events):
        ev = Interaction(event_id=f"u:{n}", user_id="u", item_id=item, type=InteractionType(kind), ts=float(n))
        m.learn_one(state, ev, index.get([item])[item], shared=False)
    return state


def test_seen_items_are_never_recommended() -> None:
    index = catalogue(("a", "a", COOK, Feed.short_video), ("b", "b", unit([1, 0.2, 0]), Feed.short_video))
    m = models()
    recs = m.recommend([user(m, index, ("a", "like"))], Feed.short_video, index, 0.0)[0]
    assert [r.item_id for r in recs] == ["b"]


def test_reason_names_the_most_similar_positive_interaction() -> None:
    index = catalogue(
        ("cook1", "Grandma's dumplings", COOK, Feed.short_video),
        ("ball1", "Derby highlights", BALL, Feed.short_video),
        ("cook2", "x", COOK, Feed.short_video),
        ("c", "c", unit([1, 0.1, 0]), Feed.short_video),
        ("f", "f", unit([0.1, 1, 0]), Feed.short_video),
    )
    m = models()
    state = user(m, index, ("cook1", "gift"), ("ball1", "like"), ("cook2", "skip"))
    reasons = {r.item_id: r.reason for r in m.recommend([state], Feed.short_video, index, 0.0)[0]}
    assert reasons["c"] == "because you gifted “Grandma's dumplings”"
    assert reasons["f"] == "because you liked “Derby highlights”"


def test_a_view_reads_similar_to_and_trending_explains_itself() -> None:
    index = catalogue(
        ("w", "Dumpling masterclass", COOK, Feed.short_video),
        ("s", "s", unit([1, 0.3, 0]), Feed.short_video),
        ("t", "t", unit([0, 0.2, 1]), Feed.short_video),
    )
    m = models(trending_weight=3.0)
    m.signal("trending").learn(  # "t" is hot
        [Observation(f"c{n}", "crowd", "t", InteractionType.like, 0.0, 1.2, Feed.short_video, ()) for n in range(3)]
    )
    recs = m.recommend([user(m, index, ("w", "view"))], Feed.short_video, index, 0.0)[0]
    assert {r.item_id: r.reason for r in recs} == {"t": "trending now", "s": "similar to “Dumpling masterclass”"}
    assert recs[0].item_id == "t"


def test_mmr_order_hand_computed() -> None:
    # relevance scaled to [0, 1]: a = 1, b = 0.8, c = 0; b is a copy of a, c is orthogonal
    scored = [("a", 1.0), ("b", 0.9), ("c", 0.5)]
    vectors = {"a": COOK, "b": COOK, "c": BALL}
    assert mmr(scored, vectors, lam=1.0, k=3) == ["a", "b", "c"]
    # lam 0.5, after a: b = 0.5 x 0.8 - 0.5 x 1 = -0.1 < c = 0.5 x 0 - 0.5 x 0 = 0
    assert mmr(scored, vectors, lam=0.5, k=3) == ["a", "c", "b"]
    # lam 0.9: b = 0.72 - 0.1 = 0.62 > c = 0
    assert mmr(scored, vectors, lam=0.9, k=3) == ["a", "b", "c"]
    assert mmr(scored, vectors, lam=0.5, k=2) == ["a", "c"]


def test_mmr_applies_through_params() -> None:
    index = catalogue(
        ("seed", "seed", COOK, Feed.short_video),
        ("a", "a", unit([1, 0.05, 0]), Feed.short_video),
        ("b", "b", unit([1, 0.1, 0]), Feed.short_video),
        ("c", "c", unit([1, 1.5, 0]), Feed.short_video),
    )
    plain, diverse = models(top_k=2), models(top_k=2, mmr_lambda=0.1)
    state = user(plain, index, ("seed", "like"))
    assert [r.item_id for r in plain.recommend([state], Feed.short_video, index, 0.0)[0]] == ["a", "b"]
    assert [r.item_id for r in diverse.recommend([state], Feed.short_video, index, 0.0)[0]] == ["a", "c"]


def test_live_velocity_lifts_a_stream_with_gifts_and_says_why() -> None:
    index = catalogue(
        ("fan", "fan", COOK, Feed.live),
        ("l_calm", "calm", unit([1, 0.2, 0]), Feed.live),
        ("l_hot", "hot", unit([1, 1, 0]), Feed.live),
    )
    m = models(trending_weight=0.0)
    m.signal("live").learn(
        [Observation(f"g{n}", "crowd", "l_hot", InteractionType.gift, float(n), 3.0, Feed.live, ()) for n in range(12)]
    )
    recs = m.recommend([user(m, index, ("fan", "like"))], Feed.live, index, 0.0)[0]
    assert [r.item_id for r in recs] == ["l_hot", "l_calm"]
    hot_sim = float(np.dot(unit([1, 1, 0]), COOK))
    assert recs[0].score == pytest.approx(hot_sim + 0.3 * math.log1p(36.0), abs=1e-5)  # 12 gifts x 3 = 36 units
    assert recs[0].reason == "live now: 12 gifts in the last minute"


def test_the_exploration_slot_takes_the_newest_unseen_item_last() -> None:
    index = catalogue(
        *((i, i, unit([1, d, 0]), Feed.short_video) for i, d in (("a", 0.1), ("b", 0.2), ("c", 0.3))),
        ("seed", "seed", COOK, Feed.short_video),
        ("brand_new", "brand new", BALL, Feed.short_video),
    )
    m = models(top_k=3, explore_slots=1)
    m.learn_content([IndexedItem("brand_new", Feed.short_video, False, 9.0, "brand new", BALL)])
    m.learn_content([IndexedItem("seed", Feed.short_video, False, 10.0, "seed", COOK)])  # newest, but seen
    state = user(m, index, ("seed", "like"))
    recs = m.recommend([state], Feed.short_video, index, 0.0)[0]
    assert [r.item_id for r in recs] == ["a", "b", "brand_new"] and recs[-1].reason == "new"
    m.params = RankingParams(top_k=3, freshness_weight=0.0, explore_slots=0, mmr_lambda=1.0)
    assert [r.item_id for r in m.recommend([state], Feed.short_video, index, 0.0)[0]] == ["a", "b", "c"]


def test_cold_start_lists_trending_then_new_without_seen_items() -> None:
    recs = cold_start(Feed.live, [("l1", 4.0), ("l2", 2.0), ("l3", 1.0)], ["l9", "l2"], {"l3"}, top_k=3)
    assert [(r.item_id, r.score, r.reason) for r in recs] == [
        ("l1", 1.0, "trending live now"),
        ("l2", 0.5, "trending live now"),
        ("l9", 0.0, "new"),
    ]
    assert cold_start(Feed.short_video, [("v", 1.0)], [], set(), 5)[0].reason == "trending now"


def test_array_mmr_picks_what_mmr_picks_on_random_pools() -> None:
    """mmr_batch (every user's pool at once, the serving path) equals mmr pool by pool: random scores
    with ties, duplicate and zero vectors, pools of different sizes, several lambdas and list lengths."""
    rng = np.random.default_rng(15)
    for trial in range(40):
        sizes = rng.integers(0, 60, size=int(rng.integers(1, 12))).tolist()
        dim = int(rng.integers(2, 40))
        scores, vectors = [], []
        for size in sizes:
            s = np.round(rng.standard_normal(size), 1 if trial % 2 else 6)  # coarse rounding: ties
            v = rng.standard_normal((size, dim)).astype(np.float32)
            if size > 3:
                v[1] = v[0]  # a duplicate vector
                v[2] = 0.0  # no direction at all
            scores.append(s)
            vectors.append(v)
        for lam in (0.0, 0.5, 0.9, 1.0):
            for k in (1, 9, 10, 70):
                got = mmr_batch(scores, vectors, lam, k)
                for s, v, picks in zip(scores, vectors, got, strict=True):
                    ids = [f"i{n}" for n in range(len(s))]
                    want = mmr(list(zip(ids, s.tolist(), strict=True)), dict(zip(ids, v, strict=True)), lam, k)
                    assert [ids[p] for p in picks] == want
