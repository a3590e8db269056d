"""Follows, the creators feed and the follow graph pushed into the feeds, on the real broker, Milvus Lite,
the trainer and a worker with the shipped MiniLM weights (docs/creators.md)."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from streams.consumer import as_recommendation
from streams.replay import publish_raw
from streams.schemas import ContentEvent, InteractionEvent, LiveStatusEvent, Recommendation
from tests.integration.test_pipeline import Inbox

pytestmark = pytest.mark.integration

# item -> (creator, kind, title)
CONTENT = {
    "st_game1": ("gamer_a", "live_stream", "Live video game speedrun: racing through the boss levels"),
    "st_game2": ("gamer_b", "live_stream", "Live video game tournament: players battle in the arena"),
    "st_cook": ("chef_c", "live_stream", "Live cooking show: frying dumplings and noodles with the chef"),
    "st_ball": ("coach_d", "live_stream", "Live football match commentary and goals"),
    "v_game": ("gamer_b", "short_video", "Video game speedrun world record in ten minutes"),
    "v_cook": ("chef_c", "short_video", "Grandma's homemade dumplings recipe, pork and cabbage filling"),
}


def publish_content(stack: Any, item: str, creator: str, kind: str, title: str) -> None:
    s = stack.settings
    ev = ContentEvent(item_id=item, kind=kind, title=title, creator_id=creator)  # type: ignore[arg-type]
    publish_raw(s, s.topic_content, item, ev.model_dump_json())


def send(stack: Any, event_id: str, user: str, kind: str, **kw: Any) -> None:
    ev = InteractionEvent(event_id=event_id, user_id=user, type=kind, **kw)
    publish_raw(stack.settings, stack.settings.topic_interactions, user, ev.model_dump_json())


def send_raw(stack: Any, user: str, payload: dict[str, Any]) -> None:
    publish_raw(stack.settings, stack.settings.topic_interactions, user, json.dumps(payload))


def lists(inbox: Inbox, trigger: str, feeds: set[str], timeout: float = 60.0) -> dict[str, Recommendation]:
    """The lists one trigger produced, one per feed named."""
    out: dict[str, Recommendation] = {}
    deadline = time.monotonic() + timeout
    while set(out) != feeds:
        left = max(0.1, deadline - time.monotonic())
        got = inbox.wait(
            lambda r: (
                r.topic != inbox.settings.topic_dead_letter
                and (rec := as_recommendation(r)).trigger_event_id == trigger
                and rec.feed.value in feeds - set(out)
            ),
            left,
        )
        rec = as_recommendation(got)
        out[rec.feed.value] = rec
    return out


@pytest.fixture(scope="module")
def inbox(stack: Any) -> Iterator[Inbox]:
    for item, (creator, kind, title) in CONTENT.items():
        publish_content(stack, item, creator, kind, title)
    stack.worker.wait_for("livelens_items_indexed", len(CONTENT), timeout=120)
    box = Inbox(stack)
    yield box
    box.reader.close()


def test_a_user_who_gifts_one_streamer_is_recommended_similar_streamers_with_reasons(stack: Any, inbox: Inbox) -> None:
    send(stack, "g1", "fan1", "gift", item_id="st_game1", value=10)
    rec = lists(inbox, "g1", {"creators"})["creators"]
    ids = [i.item_id for i in rec.items]
    reasons = {i.item_id: i.reason for i in rec.items}
    assert ids.index("gamer_b") < ids.index("chef_c") and ids.index("gamer_b") < ids.index("coach_d"), ids
    assert "you gifted 1 of their stream" in reasons["gamer_a"], reasons
    assert all(r.startswith("live now: “") for r in reasons.values()), reasons  # every one of them is live
    assert "fan1" not in ids
    # the same list at GET /recommendations
    now = stack.worker.get("/recommendations/fan1?feed=creators")
    assert now["feed"] == "creators" and [i["item_id"] for i in now["items"]] == ids


def test_follow_and_unfollow_change_the_creators_and_live_feeds_within_one_micro_batch(
    stack: Any, inbox: Inbox
) -> None:
    send(stack, "w1", "fan2", "view", item_id="v_game", value=40)
    lists(inbox, "w1", {"short_video"})
    send(stack, "f1", "fan2", "follow", creator_id="gamer_b")
    after = lists(inbox, "f1", {"creators", "live"})
    assert "gamer_b" not in [i.item_id for i in after["creators"].items]
    first = after["live"].items[0]
    assert (first.item_id, first.reason) == ("st_game2", "live now: gamer_b, whom you follow")
    send(stack, "f2", "fan2", "unfollow", creator_id="gamer_b")
    again = lists(inbox, "f2", {"creators", "live"})
    assert "gamer_b" in [i.item_id for i in again["creators"].items]
    assert all("whom you follow" not in i.reason for i in again["live"].items)
    state = stack.worker.get("/state/fan2")
    assert state["follows"] == {} and state["counts"]["follow"] == 1 and state["counts"]["unfollow"] == 1


def test_new_uploads_and_going_live_reach_followers_with_no_event_from_them(stack: Any, inbox: Inbox) -> None:
    s = stack.settings
    for n, fan in enumerate(["fan3", "fan4"]):
        send(stack, f"fc{n}", fan, "follow", creator_id="chef_c")
        lists(inbox, f"fc{n}", {"creators"})
    # the follower lists reach the worker in the trainer's next delta (every LIVELENS_DELTA_INTERVAL_S)
    time.sleep(3 * s.delta_interval_s + 2)
    publish_content(stack, "v_cook2", "chef_c", "short_video", "Spicy Sichuan noodles cooked at home")
    for fan in ("fan3", "fan4"):
        got = inbox.wait(
            lambda r, fan=fan: (
                r.topic == s.topic_recs_short_video
                and (rec := as_recommendation(r)).user_id == fan
                and rec.trigger_event_id == "fanout:v_cook2:new"
            ),
            60,
        )
        first = as_recommendation(got).items[0]
        assert (first.item_id, first.reason) == ("v_cook2", "new from chef_c, whom you follow")
    publish_raw(s, s.topic_live_status, "st_cook", LiveStatusEvent(item_id="st_cook", status="ended").model_dump_json())
    publish_raw(s, s.topic_live_status, "st_cook", LiveStatusEvent(item_id="st_cook", status="live").model_dump_json())
    for fan in ("fan3", "fan4"):
        got = inbox.wait(
            lambda r, fan=fan: (
                r.topic == s.topic_recs_live
                and (rec := as_recommendation(r)).user_id == fan
                and rec.trigger_event_id == "fanout:st_cook:live"
            ),
            60,
        )
        first = as_recommendation(got).items[0]
        assert (first.item_id, first.reason) == ("st_cook", "live now: chef_c, whom you follow")
    assert "livelens_fanout_total" in stack.worker.get_text("/metrics")


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        ({"event_id": "b1", "user_id": "fan5", "type": "follow", "creator_id": "fan5"}, "self_follow", "themselves"),
        ({"event_id": "b2", "user_id": "fan5", "type": "follow", "creator_id": "no spaces!"}, "schema", "creator_id"),
        ({"event_id": "b3", "user_id": "fan5", "type": "unfollow"}, "schema", "names a creator_id"),
        ({"event_id": "b4", "user_id": "fan5", "type": "like", "creator_id": "chef_c"}, "schema", "names an item_id"),
    ],
)
def test_bad_follows_are_rejected_with_a_reason(
    stack: Any, inbox: Inbox, payload: dict[str, Any], reason: str, detail: str
) -> None:
    send_raw(stack, "fan5", payload)
    letter = inbox.dead_letter(lambda d: f'"{payload["event_id"]}"' in d.payload)
    assert letter.reason == reason and detail in letter.error, letter


def test_a_bad_feed_name_is_refused(stack: Any) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        stack.worker.get("/recommendations/fan1?feed=podcasts")
    assert err.value.code == 400


def test_creator_vectors_and_co_follow_ship_in_the_trainers_snapshots(stack: Any, inbox: Inbox) -> None:
    from streams.params import online_models_from_settings
    from streams.trainer import read_snapshots

    s = stack.settings
    send(stack, "sn1", "fan6", "follow", creator_id="coach_d")
    lists(inbox, "sn1", {"creators"})
    deadline = time.monotonic() + s.snapshot_interval_s + 60
    while True:  # the first snapshot that has learned this follow
        snap = read_snapshots(s).get("a")
        if snap is not None:
            models = online_models_from_settings(s)
            models.restore_shared(snap.models, snap.version)
            cofollow = models.creator_signal("cofollow")
            if "fan6" in cofollow.followers_of("coach_d", 100):  # type: ignore[attr-defined]
                break
        assert time.monotonic() < deadline, "no snapshot with the follow"
        time.sleep(2)
    assert {"creators", "cofollow", "engaged"} <= set(snap.models)
    vectors = models.creator_signal("creators").model  # type: ignore[attr-defined]
    assert {"gamer_a", "gamer_b", "chef_c", "coach_d"} <= set(vectors.row)  # from the content records
    assert {"fan3", "fan4"} <= set(cofollow.followers_of("chef_c", 100))  # type: ignore[attr-defined]
