import math

import numpy as np
import pytest

from ranking.domain import Feed, InteractionType
from ranking.index import Hit
from ranking.recommender import RankingParams, Signals, cold_start, mmr, rank
from ranking.trending import LiveVelocity, LiveVelocityParams
from ranking.user_state import RecentItem, UserState

COOK = np.array([1.0, 0.0, 0.0], dtype=np.float32)
BALL = np.array([0.0, 1.0, 0.0], dtype=np.float32)


def hit(item: str, sim: float, vec: np.ndarray, created_at: float = 0.0) -> Hit:
    return Hit(item, sim, Feed.short_video, created_at, f"title {item}", vec)


def state_with(*recent: tuple[str, str, float]) -> UserState:
    return UserState(
        long_term=[1.0, 0.0, 0.0],
        short_term=[1.0, 0.0, 0.0],
        recent=[RecentItem(i, InteractionType(t), 0.0, w) for i, t, w in recent],
    )


def test_seen_items_are_never_recommended() -> None:
    state = state_with(("a", "like", 1.2))
    ranked = rank([hit("a", 0.99, COOK), hit("b", 0.5, COOK)], state, {}, now=0.0, params=RankingParams(top_k=5))
    assert [r.item_id for r in ranked] == ["b"]


def test_top_k_by_score_with_freshness_tiebreak() -> None:
    hits = [hit("old", 0.5, COOK, created_at=0.0), hit("new", 0.5, COOK, created_at=1e6), hit("top", 0.9, COOK)]
    ranked = rank(hits, UserState(), {}, now=1e6, params=RankingParams(top_k=2))
    assert [r.item_id for r in ranked] == ["top", "new"]
    assert ranked[0].score >= ranked[1].score


def test_reason_names_the_most_similar_positive_interaction() -> None:
    state = state_with(("cook1", "gift", 3.0), ("ball1", "like", 1.2), ("cook2", "skip", -0.6))
    recent = {"cook1": (COOK, "Grandma's dumplings"), "ball1": (BALL, "Derby highlights"), "cook2": (COOK, "x")}
    ranked = rank([hit("c", 0.8, COOK), hit("f", 0.7, BALL)], state, recent, now=0.0, params=RankingParams())
    reasons = {r.item_id: r.reason for r in ranked}
    assert reasons["c"] == "because you gifted “Grandma's dumplings”"
    assert reasons["f"] == "because you liked “Derby highlights”"


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


def test_rank_applies_mmr_through_params() -> None:
    hits = [hit("a", 0.9, COOK), hit("b", 0.85, COOK), hit("c", 0.4, BALL)]
    plain = rank(hits, UserState(), {}, now=0.0, params=RankingParams(top_k=2, freshness_weight=0.0))
    diverse = rank(hits, UserState(), {}, now=0.0, params=RankingParams(top_k=2, freshness_weight=0.0, mmr_lambda=0.5))
    assert [r.item_id for r in plain] == ["a", "b"]
    assert [r.item_id for r in diverse] == ["a", "c"]


def live_hit(item: str, sim: float) -> Hit:
    return Hit(item, sim, Feed.live, 0.0, f"title {item}", COOK)


def test_live_boost_lifts_a_stream_with_gift_velocity_and_says_why() -> None:
    velocity = LiveVelocity(LiveVelocityParams(window_s=60.0, gift_weight=3.0))
    for n in range(12):
        velocity.learn_one("l_hot", InteractionType.gift, float(n))
    boosts = velocity.boosts(["l_hot", "l_calm"], weight=0.3)
    signals = Signals(co_scores={}, co_source={}, trending={}, live_boost=boosts)
    hits = [live_hit("l_calm", 0.8), live_hit("l_hot", 0.5)]
    ranked = rank(hits, UserState(), {}, now=0.0, params=RankingParams(freshness_weight=0.0), signals=signals)
    assert [r.item_id for r in ranked] == ["l_hot", "l_calm"]
    assert ranked[0].score == pytest.approx(0.5 + 0.3 * math.log1p(36.0), abs=1e-6)  # 0.5 + 0.3 ln 37
    assert ranked[0].reason == "live now: 12 gifts in the last minute"


def test_exploration_slot_takes_the_newest_unseen_item_last() -> None:
    state = state_with(("seen_new", "like", 1.2))
    hits = [hit(i, s, COOK) for i, s in (("a", 0.9), ("b", 0.8), ("c", 0.7))]
    fresh = [hit("seen_new", 0.0, BALL), hit("brand_new", 0.1, BALL), hit("newish", 0.05, BALL)]
    signals = Signals(co_scores={}, co_source={}, trending={}, live_boost={}, fresh=fresh)
    params = RankingParams(top_k=3, freshness_weight=0.0, explore_slots=1)
    ranked = rank(hits, state, {}, now=0.0, params=params, signals=signals)
    assert [r.item_id for r in ranked] == ["a", "b", "brand_new"]
    assert ranked[-1].reason == "new"
    none = rank(hits, state, {}, now=0.0, params=RankingParams(top_k=3, freshness_weight=0.0, explore_slots=0))
    assert [r.item_id for r in none] == ["a", "b", "c"]


def test_reasons_trending_and_similar_to_a_watched_title() -> None:
    state = state_with(("w", "view", 0.5))
    recent = {"w": (COOK, "Dumpling masterclass")}
    hits = [hit("t", 0.1, BALL), hit("s", 0.6, COOK)]
    signals = Signals(co_scores={}, co_source={}, trending={"t": 1.0}, live_boost={})
    params = RankingParams(freshness_weight=0.0, trending_weight=1.0)
    ranked = rank(hits, state, recent, now=0.0, params=params, signals=signals)
    reasons = {r.item_id: r.reason for r in ranked}
    assert reasons == {"t": "trending now", "s": "similar to “Dumpling masterclass”"}
    assert ranked[0].item_id == "t" and ranked[0].score == pytest.approx(1.1)


def test_cold_start_lists_trending_then_new_without_seen_items() -> None:
    recs = cold_start(Feed.live, [("l1", 4.0), ("l2", 2.0), ("l3", 1.0)], ["l9", "l2"], {"l3"}, top_k=3)
    assert [(r.item_id, r.score, r.reason) for r in recs] == [
        ("l1", 1.0, "trending live now"),
        ("l2", 0.5, "trending live now"),
        ("l9", 0.0, "new"),
    ]
    assert cold_start(Feed.short_video, [("v", 1.0)], [], set(), 5)[0].reason == "trending now"


def test_sequence_neighbours_add_to_the_score_and_explain_themselves() -> None:
    signals = Signals(co_scores={}, co_source={}, trending={}, live_boost={}, knn={"k": 1.0, "c": 0.25})
    hits = [hit("c", 0.5, COOK), hit("k", 0.2, BALL)]
    params = RankingParams(freshness_weight=0.0, knn_weight=1.0, mmr_lambda=1.0)
    ranked = rank(hits, UserState(), {}, now=0.0, params=params, signals=signals)
    assert [(r.item_id, r.score) for r in ranked] == [("k", pytest.approx(1.2)), ("c", pytest.approx(0.75))]
    assert ranked[0].reason == "people with similar taste watched this"
