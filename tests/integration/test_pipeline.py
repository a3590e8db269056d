"""End to end through the embedded broker, Milvus Lite and a real worker with the shipped MiniLM weights."""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streams.consumer import Received, TopicReader, as_dead_letter, as_recommendation
from streams.replay import publish_raw
from streams.schemas import ContentEvent, DeadLetter, InteractionEvent, LiveStatusEvent, Recommendation

pytestmark = pytest.mark.integration

SHORT = {
    "v_cook1": "Grandma's homemade dumplings recipe, pork and cabbage filling",
    "v_cook2": "Spicy Sichuan noodles cooked at home in ten minutes",
    "v_cook3": "How to bake fluffy bread rolls in your kitchen",
    "v_ball1": "Football highlights: last minute goal wins the derby",
    "v_ball2": "Top ten soccer goals of the season, amazing strikes",
    "v_ball3": "Goalkeeper saves a penalty in the football cup final",
}
LIVE = {
    "l_cook1": "Live cooking show: frying dumplings and noodles with the chef",
    "l_cook2": "Live kitchen stream: baking cakes and bread with viewers",
    "l_ball1": "Live football match commentary and goals",
}


class Inbox:
    """Everything read back from the feed topics and the dead-letter topic."""

    def __init__(self, stack: Any) -> None:
        s = stack.settings
        self.settings = s
        self.reader = TopicReader(s, [*s.feed_topics().values(), s.topic_dead_letter], from_beginning=True)
        self.reader.wait_assigned()
        self.seen: list[Received] = []

    def wait(self, predicate: Callable[[Received], bool], timeout: float = 60.0) -> Received:
        for got in self.seen:
            if predicate(got):
                return got
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.reader.poll(0.2)
            if got is None:
                continue
            self.seen.append(got)
            if predicate(got):
                return got
        raise AssertionError(f"nothing matching arrived within {timeout}s; got {[r.value[:200] for r in self.seen]}")

    def recommendation(self, trigger: str, timeout: float = 60.0) -> tuple[str, Recommendation]:
        got = self.wait(
            lambda r: r.topic != self.settings.topic_dead_letter and as_recommendation(r).trigger_event_id == trigger,
            timeout,
        )
        return got.topic, as_recommendation(got)

    def dead_letter(self, predicate: Callable[[DeadLetter], bool], timeout: float = 60.0) -> DeadLetter:
        got = self.wait(lambda r: r.topic == self.settings.topic_dead_letter and predicate(as_dead_letter(r)), timeout)
        return as_dead_letter(got)


@pytest.fixture(scope="module")
def inbox(stack: Any) -> Iterator[Inbox]:
    s = stack.settings
    for item_id, title in SHORT.items():
        publish_raw(
            s,
            s.topic_content,
            item_id,
            ContentEvent(item_id=item_id, kind="short_video", title=title).model_dump_json(),
        )
    for item_id, title in LIVE.items():
        publish_raw(
            s,
            s.topic_content,
            item_id,
            ContentEvent(item_id=item_id, kind="live_stream", title=title).model_dump_json(),
        )
    stack.worker.wait_for("livelens_items_indexed", len(SHORT) + len(LIVE), timeout=120)
    box = Inbox(stack)
    yield box
    box.reader.close()


def interact(stack: Any, event_id: str, user: str, item: str, kind: str = "like", value: float = 0.0) -> None:
    ev = InteractionEvent(event_id=event_id, user_id=user, item_id=item, type=kind, value=value)
    publish_raw(stack.settings, stack.settings.topic_interactions, user, ev.model_dump_json())


def test_recommendation_arrives_on_the_feed_topic_with_that_feeds_items(stack: Any, inbox: Inbox) -> None:
    interact(stack, "p1", "alice", "v_cook1", "like")
    topic, rec = inbox.recommendation("p1")
    assert topic == stack.settings.topic_recs_short_video
    assert rec.user_id == "alice" and rec.feed.value == "short_video"
    ids = [i.item_id for i in rec.items]
    assert ids and set(ids) <= set(SHORT), ids
    assert "v_cook1" not in ids, "a seen item was recommended"
    assert ids[0].startswith("v_cook"), f"content understanding: cooking fan should get cooking first, got {ids}"
    assert all(i.reason for i in rec.items)
    assert "Grandma" in rec.items[0].reason


def test_live_interaction_refreshes_the_live_feed(stack: Any, inbox: Inbox) -> None:
    interact(stack, "p2", "alice", "l_cook1", "gift", 10)
    topic, rec = inbox.recommendation("p2")
    assert topic == stack.settings.topic_recs_live
    ids = [i.item_id for i in rec.items]
    assert ids and set(ids) <= set(LIVE) and "l_cook1" not in ids
    assert ids[0] == "l_cook2"
    assert "gifted" in rec.items[0].reason


def test_ended_live_stream_is_never_recommended_afterwards(stack: Any, inbox: Inbox) -> None:
    s = stack.settings
    interact(stack, "p3", "bob", "l_ball1", "comment")
    _, before = inbox.recommendation("p3")
    assert "l_cook2" in [i.item_id for i in before.items]
    publish_raw(s, s.topic_live_status, "l_cook2", LiveStatusEvent(item_id="l_cook2", status="ended").model_dump_json())
    # The live-status agent runs beside the interaction agent: wait until it has applied the change.
    deadline = time.monotonic() + 30
    while "livelens_live_streams 2.0" not in stack.worker.get_text("/metrics"):
        assert time.monotonic() < deadline, "live-status event not applied"
        time.sleep(0.1)
    for n in range(3):
        time.sleep(0.5)
        interact(stack, f"p3-{n}", "bob", "l_ball1", "view", 20)
        _, after = inbox.recommendation(f"p3-{n}")
        assert "l_cook2" not in [i.item_id for i in after.items]


def test_seen_items_are_filtered_for_a_user_with_history(stack: Any, inbox: Inbox) -> None:
    for n, item in enumerate(["v_ball1", "v_ball2"]):
        interact(stack, f"p4-{n}", "carol", item, "like")
    _, rec = inbox.recommendation("p4-1")
    ids = [i.item_id for i in rec.items]
    assert "v_ball1" not in ids and "v_ball2" not in ids
    assert ids[0] == "v_ball3"


def test_malformed_event_goes_to_dlq_and_the_next_good_one_is_processed(stack: Any, inbox: Inbox) -> None:
    s = stack.settings
    publish_raw(s, s.topic_interactions, "mallory", b'{"event_id": "bad1", "user_id": ')
    publish_raw(s, s.topic_interactions, "mallory", b'{"event_id": "bad2", "user_id": "m", "type": "teleport"}')
    interact(stack, "p5", "dave", "nope-not-indexed", "like")
    interact(stack, "p6", "dave", "v_cook2", "share")
    letter = inbox.dead_letter(lambda d: "bad1" in d.payload)
    assert letter.reason == "invalid_json" and letter.source_topic == s.topic_interactions
    assert inbox.dead_letter(lambda d: "bad2" in d.payload).reason == "schema"
    assert inbox.dead_letter(lambda d: "nope-not-indexed" in d.payload).reason == "unknown_item"
    _, rec = inbox.recommendation("p6")
    assert rec.user_id == "dave" and rec.items
    metrics = stack.worker.get_text("/metrics")
    assert 'livelens_dead_letter_total{reason="invalid_json",topic="' + s.topic_interactions + '"} 1.0' in metrics


def test_media_outside_the_roots_is_rejected_and_real_video_is_indexed(stack: Any, inbox: Inbox) -> None:
    s = stack.settings
    evil = ContentEvent(item_id="v_evil", kind="short_video", title="innocent title", cover_path="/etc/passwd")
    publish_raw(s, s.topic_content, "v_evil", evil.model_dump_json())
    letter = inbox.dead_letter(lambda d: "v_evil" in d.payload)
    assert letter.reason == "media_path_outside_roots" and letter.source_topic == s.topic_content

    video = s.datasets_dir / "microlens-50k" / "videos" / "10040.mp4"
    if not video.is_file():
        pytest.skip("real MicroLens videos not available")
    before = stack.worker.get("/stats")["livelens_items_indexed"]
    item = ContentEvent(item_id="v_real", kind="short_video", title="Spicy noodles at home", video_path=str(video))
    publish_raw(s, s.topic_content, "v_real", item.model_dump_json())
    stack.worker.wait_for("livelens_items_indexed", before + 1, timeout=120)
    assert "livelens_media_errors_total{" not in stack.worker.get_text("/metrics"), "the real video failed to decode"
    # Cold start: a brand-new item is recommendable before anyone interacted with it.
    interact(stack, "p7", "erin", "v_cook2", "like")
    _, rec = inbox.recommendation("p7")
    assert "v_real" in [i.item_id for i in rec.items]


def test_search_returns_items_on_the_topic_and_validates_input(stack: Any, inbox: Inbox) -> None:
    results = stack.worker.get("/search?q=football+goals&feed=short_video&limit=3")["results"]
    assert [r["item_id"] for r in results][:3] and all(r["item_id"].startswith("v_ball") for r in results)
    assert results[0]["score"] >= results[-1]["score"]
    live = stack.worker.get("/search?q=dumplings&feed=live&limit=2")["results"]
    assert live[0]["item_id"] == "l_cook1"
    with pytest.raises(urllib.error.HTTPError) as info:
        stack.worker.get("/search?q=&feed=short_video")
    assert info.value.code == 400


def test_get_recommendations_serves_the_latest_state(stack: Any, inbox: Inbox) -> None:
    inbox.recommendation("p4-1")  # carol liked v_ball1 and v_ball2
    rec = stack.worker.get("/recommendations/carol?feed=short_video")
    ids = [i["item_id"] for i in rec["items"]]
    assert rec["user_id"] == "carol" and ids and ids[0] == "v_ball3"
    assert "v_ball1" not in ids and "v_ball2" not in ids and all(i["reason"] for i in rec["items"])
    with pytest.raises(urllib.error.HTTPError) as info:  # an unknown user is no error: see the trending test
        stack.worker.get("/recommendations/carol?feed=tv")
    assert info.value.code == 400


def test_unknown_user_gets_what_is_trending_in_each_feed(stack: Any, inbox: Inbox) -> None:
    for n in range(3):  # three shares (1.8 each) make v_cook3 the hottest short video by far
        interact(stack, f"t{n}", f"trend{n}", "v_cook3", "share")
    for n in range(3):
        inbox.recommendation(f"t{n}")  # processed by the worker
    stack.wait_models_current(60)  # and learned by the trainer, whose counts the worker now serves
    rec = stack.worker.get("/recommendations/nobody-yet?feed=short_video")
    assert rec["user_id"] == "nobody-yet" and rec["items"][0]["item_id"] == "v_cook3"
    assert {i["item_id"] for i in rec["items"]} <= set(SHORT) | {"v_real"}
    assert {i["reason"] for i in rec["items"]} <= {"trending now", "new"}
    live = stack.worker.get("/recommendations/nobody-yet?feed=live")
    ids = [i["item_id"] for i in live["items"]]
    assert ids and set(ids) <= set(LIVE) and "l_cook2" not in ids  # l_cook2 ended earlier in this module
    assert live["items"][0]["reason"] == "trending live now"
    with pytest.raises(urllib.error.HTTPError) as info:
        stack.worker.get("/recommendations/not%20valid!?feed=live")
    assert info.value.code == 400


def test_live_boost_shows_in_the_live_feed_after_gifts(stack: Any, inbox: Inbox) -> None:
    s = stack.settings
    streams = {
        "l_ball2": "Live football: penalty shootout and goals, watch along",
        "l_piano": "Live piano concert: classical music requests from the chat",
    }
    before_count = stack.worker.get("/stats")["livelens_items_indexed"]
    for item_id, title in streams.items():
        event = ContentEvent(item_id=item_id, kind="live_stream", title=title)
        publish_raw(s, s.topic_content, item_id, event.model_dump_json())
    stack.worker.wait_for("livelens_items_indexed", before_count + len(streams), timeout=60)

    def order(rec: Recommendation) -> list[str]:
        return [i.item_id for i in rec.items if i.item_id in streams]

    interact(stack, "b1", "gina", "l_ball1", "comment")
    _, before = inbox.recommendation("b1")
    assert order(before) == ["l_ball2", "l_piano"], before.items  # her taste: football
    piano_before = next(i for i in before.items if i.item_id == "l_piano")
    assert not piano_before.reason.startswith("live now")
    for n in range(5):
        interact(stack, f"gift{n}", f"fan{n}", "l_piano", "gift", 5)
    for n in range(5):
        inbox.recommendation(f"gift{n}")
    stack.wait_models_current(60)  # the trainer's live counts with the gifts are served
    interact(stack, "b2", "gina", "l_ball1", "view", 20)
    _, after = inbox.recommendation("b2")
    assert order(after) == ["l_piano", "l_ball2"], after.items
    piano = next(i for i in after.items if i.item_id == "l_piano")
    assert piano.reason == "live now: 5 gifts in the last minute"
    # the boost, 0.3 x ln(1 + 5 gifts x 3) = 0.83, comes on top of the same content similarity
    assert piano.score > piano_before.score + 0.8
