import numpy as np
import pytest

from ranking.coengagement import CoEngagement, CoEngagementParams
from ranking.domain import Feed, InteractionType
from ranking.index import Hit, IndexedItem
from ranking.online import FeedContext, OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import RecentItem, UserModel, UserModelParams, UserState


def test_links_follow_the_sequence_and_decay_with_distance() -> None:
    co = CoEngagement(CoEngagementParams(window=2, distance_decay=0.5, backward_weight=0.2))
    co.learn_sequence(["a", "b", "c"])
    assert co.neighbours("a") == {"b": 1.0, "c": 0.5}  # forward: what followed a
    assert co.neighbours("c") == {"b": 0.2, "a": pytest.approx(0.1)}  # backward links are weaker
    co.learn_one(["a"], "b", weight=-1.0)  # a skip links nothing
    assert co.neighbours("a")["b"] == 1.0


def test_memory_is_bounded() -> None:
    co = CoEngagement(CoEngagementParams(window=1, max_neighbours=3, max_items=10))
    for n in range(50):
        co.learn_one(["hub"], f"i{n}", weight=1.0 + n)  # later items are linked more strongly
    assert len(co.neighbours("hub")) <= 6
    assert "i49" in co.neighbours("hub")
    assert len(co.links) <= 10


def test_popularity_is_bounded_even_for_items_without_links() -> None:
    co = CoEngagement(CoEngagementParams(max_items=10))
    for n in range(50):
        co.learn_one([], f"solo{n}", weight=1.0)  # a first interaction: no previous item, no link
    assert len(co.popularity) <= 10 and not co.links


def test_eviction_is_amortised_once_the_map_is_full() -> None:
    """Full map: evicting one item per new item meant a sort of every row on every event."""
    co = CoEngagement(CoEngagementParams(window=1, max_items=1_000))
    for n in range(11_000):
        co.learn_one([f"a{n}"], f"b{n}", weight=1.0)  # two new items per event
    assert len(co.links) <= 1_000 and len(co.popularity) <= 1_000
    assert co.evictions <= 2 * 11_000 * 2 // 100 + 2  # about one sort per 100 new items, not one per item


def test_recent_items_weigh_more_and_sources_are_named() -> None:
    co = CoEngagement(CoEngagementParams(window=1))
    co.learn_sequence(["old", "x"])
    co.learn_sequence(["new", "y"])
    scores, source = co.scores_with_source(["old", "new"], recency_decay=0.5)
    assert scores["y"] > scores["x"]
    assert source == {"x": "old", "y": "new"}


def item(i: str, vec: list[float], feed: Feed = Feed.short_video) -> IndexedItem:
    return IndexedItem(i, feed, feed is Feed.live, 0.0, f"title {i}", np.asarray(vec, np.float32))


def test_co_engaged_items_join_the_candidates_and_carry_their_reason() -> None:
    items = {
        "seen": item("seen", [1, 0]),
        "similar": item("similar", [1, 0]),
        "watched_next": item("watched_next", [0, 1]),
        "live_next": item("live_next", [0, 1], Feed.live),
    }
    co = CoEngagement()
    for _ in range(3):
        co.learn_sequence(["seen", "watched_next"])
        co.learn_sequence(["seen", "live_next"])
    state = UserState(recent=[RecentItem("seen", InteractionType.like, 0.0, 1.2)])
    q = np.asarray([1.0, 0.0], np.float32)
    content_hits = [Hit("similar", 1.0, Feed.short_video, 0.0, "title similar", None)]
    recent = {"seen": (items["seen"].vector, "Grandma's dumplings")}

    def lookup(ids):
        return {i: items[i] for i in ids if i in items}

    models = OnlineModels(UserModel(UserModelParams(event_weights={})), co=co)
    ctx = FeedContext(trending=[], trending_scaled={}, boosts={}, new=[], items={})
    recs = models.recommend_user(state, q, Feed.short_video, content_hits, ctx, lookup, recent, 0.0, RankingParams())
    assert [r.item_id for r in recs] == ["watched_next", "similar"]  # live_next is not a short video
    assert recs[0].reason == "people who watched “Grandma's dumplings” also watched this"
    assert recs[1].reason == "because you liked “Grandma's dumplings”"
