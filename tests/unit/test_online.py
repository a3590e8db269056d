"""OnlineModels: the learn/rank path shared by the agent and the evaluation, on an exact in-memory index."""

import numpy as np
import pytest

from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModel, UserModelParams, UserState

VECS = {
    "v1": [1, 0, 0],
    "v2": [0.9, 0.1, 0],
    "v3": [0, 1, 0],
    "l1": [1, 0, 0],
    "l2": [0, 1, 0],
    "l3": [0, 0, 1],
}
PARAMS = RankingParams(top_k=5, freshness_weight=0.0, explore_slots=0)


@pytest.fixture()
def index() -> InMemoryIndex:
    idx = InMemoryIndex(3)
    idx.upsert(
        [
            IndexedItem(
                i,
                Feed.live if i.startswith("l") else Feed.short_video,
                i.startswith("l"),
                0.0,
                i,
                np.asarray(v, np.float32),
            )
            for i, v in VECS.items()
        ]
    )
    return idx


def models(params: RankingParams = PARAMS) -> OnlineModels:
    weights = {InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    return OnlineModels(UserModel(UserModelParams(event_weights=weights)), params=params)


def learn(m: OnlineModels, index: InMemoryIndex, state: UserState, eid: str, item: str, kind: str, ts: float) -> bool:
    ev = Interaction(eid, f"user-{id(state)}", item, InteractionType(kind), ts, value=1.0)
    return m.learn_one(state, ev, index.get([item])[item])


def test_unknown_user_gets_trending_per_feed(index: InMemoryIndex) -> None:
    m = models()
    crowd = UserState()
    learn(m, index, crowd, "e1", "v3", "like", 0.0)
    learn(m, index, crowd, "e2", "v3", "share", 1.0)
    learn(m, index, crowd, "e3", "v1", "view", 2.0)
    learn(m, index, crowd, "e4", "l2", "gift", 3.0)
    feeds = (Feed.short_video, Feed.live, Feed.music)
    short, live, music = (m.recommend([UserState()], feed, index, 0.0)[0] for feed in feeds)
    assert [r.item_id for r in short] == ["v3", "v1"]  # like 1.2 + share 1.8 > a short view
    assert {r.reason for r in short} == {"trending now"}
    assert [(r.item_id, r.reason) for r in live] == [("l2", "trending live now")]
    assert music == [], "no music in this index: the music feed has nothing to trend"


def test_first_interaction_makes_a_personal_list_and_replays_change_nothing(index: InMemoryIndex) -> None:
    m = models()
    state = UserState()
    assert learn(m, index, state, "e1", "v1", "like", 0.0)
    trending_before = dict(m.signal("trending").model.scores[Feed.short_video])
    assert not learn(m, index, state, "e1", "v1", "like", 0.0)  # same event id: a replay
    assert m.signal("trending").model.scores[Feed.short_video] == trending_before
    recs = m.recommend([state], Feed.short_video, index, 0.0)[0]
    assert recs[0].item_id == "v2" and "v1" not in [r.item_id for r in recs]
    assert all(r.reason for r in recs) and recs[0].reason == "because you liked “v1”"


def test_an_ended_live_stream_is_never_returned(index: InMemoryIndex) -> None:
    m = models()
    fan = UserState()
    for n in range(5):
        learn(m, index, UserState(), f"g{n}", "l1", "gift", float(n))  # l1 is hot: trending + velocity
    learn(m, index, fan, "f1", "l3", "comment", 5.0)
    before = m.recommend([fan, UserState()], Feed.live, index, 0.0)
    assert before[0][0].item_id == "l1" and before[0][0].reason.startswith("live now: 5 gifts")
    assert before[1][0].item_id == "l1"
    index.set_live("l1", False)  # the index alone already keeps it out, before the models forget it
    after = m.recommend([fan, UserState()], Feed.live, index, 0.0)
    assert all("l1" not in [r.item_id for r in recs] for recs in after)
    m.end_live("l1")
    assert "l1" not in m.signal("trending").model.scores[Feed.live] and "l1" not in m.signal("live").model.events


def test_new_items_fill_the_exploration_slot_and_the_cold_start(index: InMemoryIndex) -> None:
    m = models()
    m.learn_content([IndexedItem("v3", Feed.short_video, False, 50.0, "v3", np.asarray(VECS["v3"], np.float32))])
    m.learn_content([IndexedItem("v2", Feed.short_video, False, 10.0, "v2", np.asarray(VECS["v2"], np.float32))])
    assert [(r.item_id, r.reason) for r in m.recommend([UserState()], Feed.short_video, index, 0.0)[0]] == [
        ("v3", "new"),
        ("v2", "new"),
    ]
    state = UserState()
    learn(m, index, state, "e1", "v1", "like", 0.0)
    m.params = RankingParams(top_k=2, freshness_weight=0.0, explore_slots=1)
    recs = m.recommend([state], Feed.short_video, index, 0.0)[0]
    assert [(r.item_id, r.reason) for r in recs] == [("v2", "because you liked “v1”"), ("v3", "new")]
