import numpy as np

from ranking.index import Hit
from ranking.recommender import RankingParams, rank
from ranking.user_state import RecentItem, UserState
from streams.schemas import Feed, InteractionType

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
