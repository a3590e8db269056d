"""A live stream's vector follows what viewers say, through the broker, a real worker and MiniLM.

Comments arrive as interactions; the interaction agent forwards those on live streams to the
live-segments topic (keyed by stream), the encoder side folds them into the stream's window and
refreshes its vector at most once per interval. Search and the live feed then follow the new vector.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from streams.consumer import TopicReader
from streams.replay import publish_raw
from streams.schemas import ContentEvent, InteractionEvent, LiveSegmentEvent

pytestmark = pytest.mark.integration

LIVE = {
    "l_pasta": "Live cooking show: making fresh pasta in the kitchen",
    "l_rock": "Live music concert: a rock band on stage",
}
GAMING_COMMENTS = [
    "this looks like a video game speedrun",
    "play the boss level of the video game again",
    "which video game console is that",
]


def search_live(stack: Any, query: str) -> dict[str, dict[str, Any]]:
    results = stack.worker.get("/search?" + f"q={query.replace(' ', '+')}&feed=live&limit=5")["results"]
    return {r["item_id"]: r for r in results}


def test_comments_refresh_a_live_stream_and_the_live_feed_follows(stack: Any) -> None:
    s = stack.settings
    for item_id, title in LIVE.items():
        ev = ContentEvent(item_id=item_id, kind="live_stream", title=title)
        publish_raw(s, s.topic_content, item_id, ev.model_dump_json())
    publish_raw(
        s,
        s.topic_content,
        "v_game",
        ContentEvent(item_id="v_game", kind="short_video", title="Video game speedrun world record").model_dump_json(),
    )
    stack.worker.wait_for("livelens_items_indexed", 3, timeout=120)
    gamer = InteractionEvent(event_id="g1", user_id="gamer", item_id="v_game", type="like")
    publish_raw(s, s.topic_interactions, "gamer", gamer.model_dump_json())

    before = search_live(stack, "video game")
    assert before["l_pasta"]["matched"] == "text"
    for n, text in enumerate(GAMING_COMMENTS):
        ev = InteractionEvent(event_id=f"c{n}", user_id=f"viewer{n}", item_id="l_pasta", type="comment", comment=text)
        publish_raw(s, s.topic_interactions, ev.user_id, ev.model_dump_json())
    stack.worker.wait_for("livelens_live_refreshes", 1, timeout=90)
    time.sleep(s.live_refresh_interval_s + 1)  # comments split over two windows: let the second one land too

    after = search_live(stack, "video game")
    assert after["l_pasta"]["score"] > before["l_pasta"]["score"] + 0.05, (before, after)
    assert next(iter(after)) == "l_pasta", after
    assert after["l_pasta"]["matched"] == "live_text"
    assert after["l_rock"]["score"] == pytest.approx(before["l_rock"]["score"], abs=1e-4)  # no comments: unchanged
    # its identity stays: a pasta query still finds it first
    assert next(iter(search_live(stack, "fresh pasta"))) == "l_pasta"
    # the live feed of a gaming fan follows the refreshed vector
    rec = stack.worker.get("/recommendations/gamer?feed=live")
    assert next(i["item_id"] for i in rec["items"]) == "l_pasta", rec


def test_a_segment_with_media_outside_the_roots_is_a_dead_letter(stack: Any) -> None:
    s = stack.settings
    reader = TopicReader(s, [s.topic_dead_letter], from_beginning=True)
    try:
        reader.wait_assigned()
        bad = LiveSegmentEvent(item_id="l_rock", keyframe_paths=["/etc/passwd"])
        publish_raw(s, s.topic_live_segments, "l_rock", bad.model_dump_json())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = reader.poll(0.5)
            if got is None:
                continue
            letter = json.loads(got.value)
            if letter["source_topic"] == s.topic_live_segments:
                assert letter["reason"] == "media_path_outside_roots"
                assert "/etc/passwd" in letter["payload"]
                return
        raise AssertionError("no dead letter for the hostile segment")
    finally:
        reader.close()
