import numpy as np
import pytest

from ranking.coengagement import CoEngagement, CoEngagementParams
from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import UserModel, UserModelParams, UserState


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
    index = InMemoryIndex(2)
    index.upsert(
        [
            item("seen", [1, 0]),
            item("similar", [1, 0]),
            item("watched_next", [0, 1]),
            item("live_next", [0, 1], Feed.live),
        ]
    )
    index.upsert(
        [IndexedItem("seen", Feed.short_video, False, 0.0, "Grandma's dumplings", np.asarray([1, 0], np.float32))]
    )
    models = OnlineModels(
        UserModel(UserModelParams(event_weights={InteractionType.like: 1.2})),
        params=RankingParams(top_k=5, freshness_weight=0.0, explore_slots=0, seq_weight=0.0),
    )
    co = models.signal("co").model
    for _ in range(3):
        co.learn_sequence(["seen", "watched_next"])
        co.learn_sequence(["seen", "live_next"])
    state = UserState()
    ev = Interaction(event_id="e1", user_id="u", item_id="seen", type=InteractionType("like"), ts=0.0)
    models.learn_one(state, ev, index.get(["seen"])["seen"], shared=False)
    recs = models.recommend([state], Feed.short_video, index, 0.0)[0]
    assert [r.item_id for r in recs] == ["watched_next", "similar"]  # live_next is not a short video
    assert recs[0].reason == "people who watched “Grandma's dumplings” also watched this"
    assert recs[1].reason == "because you liked “Grandma's dumplings”"
