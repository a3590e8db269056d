"""The creators feed, follows keyed by creator and the follow graph in the item feeds, on an in-memory index.

The encoder is a bag of topic words (each topic one axis), so "similar streamer" is checkable exactly;
tests/integration/test_creators.py runs the same paths on the real broker and Milvus Lite.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ranking.creators import CreatorParams, CreatorVectors, rank_creators
from ranking.domain import Feed, Follow, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.model_log import ContentRecord, decode_any, encode_content
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.signal import RankRequest, UserContext
from ranking.user_state import UserModel, UserState
from streams.handlers import Handlers, parse_batch
from streams.params import user_model_params_from_settings
from streams.schemas import ContentEvent, InteractionEvent, LiveState, LiveStatusEvent
from streams.settings import Settings

TOPICS = ["cooking", "gaming", "music", "football"]


class TopicEncoder:
    """Counts topic words: 'gaming gaming cooking' -> (1, 2, 0, 0) normalised."""

    name = "topics"
    dim = len(TOPICS)

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(inputs), self.dim), np.float32)
        for i, text in enumerate(inputs):
            for word in text.lower().split():
                if word in TOPICS:
                    out[i, TOPICS.index(word)] += 1
            if not out[i].any():
                out[i, :] = 0.01
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def axis(name: str) -> np.ndarray:
    v = np.zeros(len(TOPICS), np.float32)
    v[TOPICS.index(name)] = 1
    return v


def user_model() -> UserModel:
    return UserModel(user_model_params_from_settings(Settings()))


def handlers() -> Handlers:
    um = user_model()
    return Handlers(
        index=InMemoryIndex(len(TOPICS)),
        encoder=TopicEncoder(),
        user_model=um,
        ranking=RankingParams(top_k=5),
        candidates=10,
        topics={"interactions": "i", "content": "c"},
        models=OnlineModels(um, params=RankingParams(top_k=5)),
    )


def content(item: str, creator: str, title: str, kind: str = "live_stream", ts: float = 1_000.0) -> ContentEvent:
    return ContentEvent(item_id=item, kind=kind, title=title, creator_id=creator, created_at=ts)  # type: ignore[arg-type]


def event(n: int, user: str, type_: str, ts: float = 2_000.0, **kw: object) -> InteractionEvent:
    return InteractionEvent(event_id=f"e{n}", user_id=user, type=type_, ts=ts, **kw)  # type: ignore[arg-type]


def streamers(h: Handlers) -> None:
    h.index_content(
        [
            content("s1a", "s1", "gaming night"),
            content("s2a", "s2", "gaming gaming speedrun"),
            content("s3a", "s3", "cooking pasta live"),
            content("s4a", "s4", "music jam"),
            content("v1", "s3", "cooking tips", kind="short_video"),
        ]
    )


def test_a_creator_vector_is_a_decayed_mean_of_their_items() -> None:
    model = CreatorVectors(CreatorParams(half_life_s=100.0), max_creators=10)
    model.add("c", axis("cooking"), 0.0)
    model.add("c", axis("gaming"), 100.0)  # one half-life later: the cooking item weighs half
    r = model.row["c"]
    np.testing.assert_allclose(model.sums[r] / model.weights[r], (0.5 * axis("cooking") + axis("gaming")) / 1.5)
    model.add("d", axis("music"), 100.0)
    assert [c for c, _ in model.search(axis("gaming")[None], 2)[0]] == ["c", "d"]


def test_creator_vectors_stay_within_max_creators_dropping_the_least_recent() -> None:
    model = CreatorVectors(CreatorParams(), max_creators=3)
    for n in range(5):
        model.add(f"c{n}", axis(TOPICS[n % 4]), float(n))
    assert set(model.row) == {"c2", "c3", "c4"}
    assert len(model.search(axis("cooking")[None], 10)[0]) == 3


def test_follows_are_part_of_the_state_idempotent_and_serialised() -> None:
    um, state = user_model(), UserState()
    assert um.learn_follow(state, Follow("f1", "u", "never-seen", 1.0))  # an unknown creator is kept
    assert not um.learn_follow(state, Follow("f1", "u", "never-seen", 1.0))  # replayed: no change
    assert um.learn_follow(state, Follow("f2", "u", "c2", 2.0))
    assert um.learn_follow(state, Follow("f3", "u", "never-seen", 3.0, on=False))
    again = UserState.from_dict(state.to_dict())
    assert again.follows == {"c2": 2.0} and again.counts == {"follow": 2, "unfollow": 1}
    assert UserState.from_dict({"n_events": 1}).follows == {}  # states written before follows existed


def test_strong_engagement_is_counted_per_creator() -> None:
    um, state = user_model(), UserState()
    for n, (kind, value) in enumerate([("gift", 5.0), ("gift", 1.0), ("view", 3.0), ("view", 40.0), ("like", 0.0)]):
        um.learn_one(
            state, Interaction(f"e{n}", "u", f"i{n}", InteractionType(kind), float(n), value), axis("gaming"), "s1"
        )
    gifts, comments, watches, weight, last = state.creators["s1"]
    assert (gifts, comments, watches, last) == (2, 0, 1, 3.0) and weight > 0  # a short view and a like do not count


def test_a_user_who_gifts_one_streamer_is_recommended_similar_streamers_with_reasons() -> None:
    h = handlers()
    streamers(h)
    result = h.process_interactions([(0, event(0, "u", "gift", item_id="s1a", value=10.0))], {})
    creators = next(r for r in result.recommendations if r.feed is Feed.creators)
    ids = [i.item_id for i in creators.items]
    assert ids.index("s2") < ids.index("s3") and ids.index("s2") < ids.index("s4")  # gaming before the rest
    reasons = {i.item_id: i.reason for i in creators.items}
    assert "you gifted 1 of their stream" in reasons["s1"]
    assert all(r.startswith("live now:") for r in reasons.values())  # every one of them is live now
    assert "u" not in ids


def test_follow_and_unfollow_change_the_creators_and_live_feeds_in_one_batch() -> None:
    h = handlers()
    streamers(h)
    warm = h.process_interactions([(0, event(0, "u", "view", item_id="v1", value=40.0))], {})
    state = warm.states["u"]
    followed = h.process_interactions([(0, event(1, "u", "follow", creator_id="s2"))], {"u": state})
    by_feed = {r.feed: r for r in followed.recommendations}
    assert set(by_feed) == {Feed.creators, Feed.live}
    assert "s2" not in [i.item_id for i in by_feed[Feed.creators].items]
    live = by_feed[Feed.live].items
    assert (live[0].item_id, live[0].reason) == ("s2a", "live now: s2, whom you follow")
    assert followed.states["u"]["follows"].keys() == {"s2"}
    unfollowed = h.process_interactions([(0, event(2, "u", "unfollow", creator_id="s2"))], followed.states)
    by_feed = {r.feed: r for r in unfollowed.recommendations}
    assert "s2" in [i.item_id for i in by_feed[Feed.creators].items]
    assert all("whom you follow" not in i.reason for i in by_feed[Feed.live].items)


def test_co_follow_proposes_what_other_followers_follow() -> None:
    h = handlers()
    streamers(h)
    states: dict[str, dict[str, object] | None] = {}
    n = 0
    for fan in ("a", "b"):
        for creator in ("s3", "s4"):
            r = h.process_interactions([(0, event(n, fan, "follow", creator_id=creator))], states)
            states.update(r.states)
            n += 1
    r = h.process_interactions([(0, event(n, "c", "follow", creator_id="s3"))], {})
    creators = next(x for x in r.recommendations if x.feed is Feed.creators)
    top = creators.items[0]
    assert top.item_id == "s4" and "people who follow s3 also follow them" in top.reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"event_id": "e", "user_id": "u", "type": "follow", "creator_id": "u"}, "self_follow"),
        ({"event_id": "e", "user_id": "u", "type": "follow", "creator_id": "bad id!"}, "schema"),
        ({"event_id": "e", "user_id": "u", "type": "unfollow"}, "schema"),
        ({"event_id": "e", "user_id": "u", "type": "view", "creator_id": "c"}, "schema"),
        ({"event_id": "e", "user_id": "u", "type": "follow", "creator_id": "c", "bogus": 1}, "schema"),
    ],
)
def test_bad_follows_are_dead_lettered_with_a_reason(payload: dict[str, object], reason: str) -> None:
    h = handlers()
    parsed = parse_batch(InteractionEvent, "i", [__import__("json").dumps(payload).encode()])
    letters = [d.reason for d in parsed.dead]
    if parsed.events:
        result = h.process_interactions(parsed.events, {})
        letters += [d.reason for _, d in result.dead]
        assert not result.states  # nothing applied
    assert letters == [reason]


def test_a_follow_of_an_unknown_creator_is_kept_and_the_older_item_form_still_works() -> None:
    h = handlers()
    streamers(h)
    r = h.process_interactions(
        [(0, event(0, "u", "follow", creator_id="nobody-yet")), (1, event(1, "u", "follow", item_id="s4a"))], {}
    )
    assert not r.dead
    assert r.states["u"]["follows"].keys() == {"nobody-yet", "s4"}
    # the creator follow, then the item form: an interaction with the item and a follow of its creator
    assert r.states["u"]["counts"] == {"follow": 3}
    assert "s4a" in [x[0] for x in r.states["u"]["recent"]]


def test_a_new_upload_and_going_live_reach_followers_without_an_event_from_them() -> None:
    h = handlers()
    streamers(h)
    states: dict[str, dict[str, object] | None] = {}
    for n, fan in enumerate(["a", "b", "c"]):
        states.update(h.process_interactions([(0, event(n, fan, "follow", creator_id="s3"))], states).states)
    now = time.time()  # GET /recommendations ranks at the wall clock: the upload must be recent
    h.index_content([content("v2", "s3", "cooking risotto", kind="short_video", ts=now)])
    item = h.index.get(["v2"])["v2"]
    fanout = h.fanout_for([item], max_followers=2, now=3_000.0)
    assert [f.user_id for f in fanout] == ["c", "b"]  # the cap: the most recent followers first
    recs = h.process_fanout(fanout, states)
    assert {r.user_id for r in recs} == {"b", "c"}
    for rec in recs:
        assert (rec.items[0].item_id, rec.items[0].reason) == ("v2", "new from s3, whom you follow")
    # a follower past the cap sees it first on their next request
    later = h.recommend_now("a", states["a"], Feed.short_video)
    assert (later.items[0].item_id, later.items[0].reason) == ("v2", "new from s3, whom you follow")
    # going live: the stream's status flips and its followers' live lists lead with it
    h.apply_live_status(LiveStatusEvent(item_id="s3a", status=LiveState.ended, ts=3_100.0))
    assert all(i.item_id != "s3a" for i in h.recommend_now("a", states["a"], Feed.live).items)
    live = h.apply_live_status(LiveStatusEvent(item_id="s3a", status=LiveState.live, ts=3_200.0))
    recs = h.process_fanout(h.fanout_for([live], 10, 3_200.0), states)
    assert all(
        (r.feed, r.items[0].item_id, r.items[0].reason) == (Feed.live, "s3a", "live now: s3, whom you follow")
        for r in recs
    )
    assert len(recs) == 3


def test_a_follower_who_unfollowed_gets_a_plain_list_from_a_fan_out() -> None:
    h = handlers()
    streamers(h)
    states = h.process_interactions([(0, event(0, "a", "follow", creator_id="s3"))], {}).states
    fanout = h.fanout_for([h.index.get(["v1"])["v1"]], 10, 2_000.0)
    states = h.process_interactions([(0, event(1, "a", "unfollow", creator_id="s3"))], states).states
    (rec,) = h.process_fanout(fanout, states)
    assert all("whom you follow" not in i.reason for i in rec.items)


def test_creator_models_ship_in_snapshots_and_learn_content_records() -> None:
    h = handlers()
    streamers(h)
    h.process_interactions([(0, event(0, "a", "follow", creator_id="s3"))], {})
    models = h.models
    snap = models.shared_snapshot()
    assert {"creators", "cofollow", "engaged"} <= set(snap)
    fresh = OnlineModels(user_model(), params=RankingParams(top_k=5))
    fresh.restore_shared(snap, models.trained_events)
    assert fresh.creator_signal("cofollow").followers_of("s3", 5) == ["a"]  # type: ignore[attr-defined]
    # the trainer's path: content records only teach the creator vectors
    items = tuple(h.index.get(["s1a", "s2a"]).values())
    record = decode_any(encode_content(ContentRecord(items)))
    assert isinstance(record, ContentRecord) and [i.creator_id for i in record.items] == ["s1", "s2"]
    other = OnlineModels(user_model(), params=RankingParams(top_k=5))
    other.learn_creator_content(record.items)
    assert set(other.creator_signal("creators").model.row) == {"s1", "s2"}  # type: ignore[attr-defined]
    assert other.signal("new_items").model.newest(Feed.live, 5) == []  # type: ignore[attr-defined]


def test_live_creators_come_first_only_among_the_relevant() -> None:
    index = InMemoryIndex(len(TOPICS))
    items = [
        IndexedItem("old", Feed.short_video, False, 0.0, "gaming", axis("gaming"), creator_id="g"),
        IndexedItem("stream", Feed.live, True, 0.0, "music", axis("music"), creator_id="m"),
    ]
    index.upsert(items)
    models = OnlineModels(user_model(), params=RankingParams(top_k=1))
    models.learn_content(items)
    params = CreatorParams(top_k=1, live_first_pool=1)
    user = UserContext("u", (), set(), axis("gaming"))
    (ranked,) = rank_creators(models.creator_signals, RankRequest(Feed.creators, [user], 0.0, index), params)
    assert [i.item_id for i in ranked] == ["g"]  # the live musician is not among the best 1 for a gamer
    params = CreatorParams(top_k=1, live_first_pool=2)
    (ranked,) = rank_creators(models.creator_signals, RankRequest(Feed.creators, [user], 0.0, index), params)
    assert [i.item_id for i in ranked] == ["m"] and ranked[0].reason.startswith("live now: “music”")


def test_creators_are_searchable_by_their_vectors() -> None:
    h = handlers()
    streamers(h)
    assert {x["item_id"] for x in h.search("gaming", Feed.creators, 2)} == {"s1", "s2"}  # the two gamers
    (hit,) = h.search("cooking", Feed.creators, 1)
    assert (hit["item_id"], hit["title"], hit["feed"]) == ("s3", "cooking tips", "creators")  # latest item


def test_a_fan_out_of_an_item_with_a_long_id_names_it_by_digest() -> None:
    h = handlers()
    long_id = "x" * 128
    h.index_content([content(long_id, "s9", "music", kind="short_video")])
    h.process_interactions([(0, event(0, "a", "follow", creator_id="s9"))], {})
    (fan,) = h.fanout_for([h.index.get([long_id])[long_id]], 10, 1.0)
    assert fan.item_id == long_id and len(fan.event_id) <= 128 and fan.event_id.startswith("fanout:")


def test_the_trainer_learns_content_records_and_follows_and_counts_only_the_follows(tmp_path: Path) -> None:
    from ranking.model_log import TrainingRecord, encode_record
    from ranking.signal import Observation
    from streams.trainer import Trainer

    settings = Settings(kafka_broker="127.0.0.1:1", data_dir=tmp_path, trainer_torch_threads=1)
    trainer = Trainer(settings)
    items = (IndexedItem("v", Feed.short_video, False, 1.0, "music", np.ones(384, np.float32), creator_id="c1"),)
    follow = Observation("f1", "u", "c1", InteractionType.follow, 2.0, 0.0, Feed.creators, ())
    topic = settings.topic_training
    trainer.learn(
        [(topic, 0, 0, encode_content(ContentRecord(items))), (topic, 0, 1, encode_record(TrainingRecord(follow)))]
    )
    models = trainer.arms["a"]
    assert trainer.version == 1  # the follow; content is not an event
    assert set(models.creator_signal("creators").model.row) == {"c1"}  # type: ignore[attr-defined]
    assert models.creator_signal("cofollow").followers_of("c1", 5) == ["u"]  # type: ignore[attr-defined]
    assert models.signal("new_items").model.newest(Feed.short_video, 5) == []  # type: ignore[attr-defined]
    assert trainer.offsets == {f"{topic}:0": 2}
    trainer.consumer.close()


def test_a_creator_following_their_own_item_in_the_older_form_is_the_interaction_it_always_was() -> None:
    h = handlers()
    streamers(h)
    r = h.process_interactions([(0, event(0, "s4", "follow", item_id="s4a"))], {})
    assert not r.dead and r.states["s4"]["follows"] == {} and r.states["s4"]["counts"] == {"follow": 1}
    r = h.process_interactions([(0, event(1, "s4", "unfollow", item_id="s4a"))], r.states)
    assert [d.reason for _, d in r.dead] == ["self_follow"]


def test_a_dropped_creator_is_never_found_and_co_follow_rows_keep_their_largest_counts() -> None:
    model = CreatorVectors(CreatorParams(), max_creators=10)
    for n, topic in enumerate(TOPICS):
        model.add(f"c{n}", axis(topic), 0.0)
    model.drop("c1")
    assert "c1" not in {c for c, _ in model.search(axis("gaming")[None], 10)[0]}
    from ranking.creators import CoFollowSignal
    from ranking.signal import Observation

    co = CoFollowSignal(CreatorParams(max_neighbours=2))
    events = []
    for u, others in enumerate([["a", "b"], ["a", "b"], ["a", "c"], ["a", "d"], ["a", "e"]]):
        for n, creator in enumerate(others):
            events.append(
                Observation(
                    f"{u}-{n}", f"u{u}", creator, InteractionType.follow, 0.0, 0.0, Feed.creators, tuple(others[:n])
                )
            )
    co.learn(events)
    assert co.co["a"]["b"] == 2 and len(co.co["a"]) <= 2  # b (twice) kept; one of the singles dropped


def test_a_follow_of_a_recommended_creator_scores_the_creators_feed_online() -> None:
    h = handlers()
    streamers(h)
    first = h.process_interactions([(0, event(0, "u", "gift", item_id="s1a", value=10.0))], {})
    listed = [i.item_id for i in next(r for r in first.recommendations if r.feed is Feed.creators).items]
    second = h.process_interactions([(0, event(1, "u", "follow", creator_id=listed[1]))], first.states)
    tally = second.online[("a", Feed.creators)]
    assert (tally.interactions, tally.hits) == (1, 1) and tally.ndcg == pytest.approx(1 / np.log2(3))
    third = h.process_interactions([(0, event(2, "u", "follow", creator_id="nobody"))], second.states)
    assert (third.online[("a", Feed.creators)].interactions, third.online[("a", Feed.creators)].hits) == (1, 0)
