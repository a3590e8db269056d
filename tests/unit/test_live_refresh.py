"""Live-stream refresh: windows, the rate bound, blending, and the handler path over an in-memory index.

The encoder here is a tiny bag-of-topics model (each topic word is one axis), so "the vector moved toward
gaming" is checkable exactly; the shipped-weights path is covered by tests/integration/test_live_refresh.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest

from encoders.live import LiveSegment, LiveWindows, refreshed_vector
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.recommender import RankingParams
from ranking.user_state import UserModel
from storage.modalities import InMemoryModalityStore
from streams.handlers import Handlers, modality_scores
from streams.params import user_model_params_from_settings
from streams.schemas import (
    ContentEvent,
    Feed,
    InteractionEvent,
    LiveSegmentEvent,
    LiveState,
    LiveStatusEvent,
    RejectedEvent,
)
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


def handlers(media: object = None) -> Handlers:
    return Handlers(
        index=InMemoryIndex(len(TOPICS)),
        encoder=TopicEncoder(),
        user_model=UserModel(user_model_params_from_settings(Settings())),
        ranking=RankingParams(top_k=5),
        candidates=10,
        topics={"interactions": "i", "content": "c"},
        media=media,  # type: ignore[arg-type]
        modalities=InMemoryModalityStore(),
        live_windows=LiveWindows(comment_window=3, max_streams=2, min_interval_s=5.0),
        fusion_weights={"text": 1.0},
        live_refresh_alpha=0.5,
    )


def segment(item: str, *comments: str, ts: float = 1.0, **kw: object) -> LiveSegmentEvent:
    return LiveSegmentEvent(item_id=item, comments=list(comments), ts=ts, **kw)  # type: ignore[arg-type]


def window_segment(item: str, *comments: str, ts: float = 1.0, **kw: object) -> LiveSegment:
    """A segment as the windows take it: the wire event converted at the edge, as the handlers do."""
    return segment(item, *comments, ts=ts, **kw).to_core()


def test_a_stream_refreshes_at_most_once_per_interval_and_only_with_something_new() -> None:
    w = LiveWindows(comment_window=3, max_streams=10, min_interval_s=5.0)
    assert not w.add(window_segment("l1"))  # nothing in it
    assert w.due(now=100.0) == []
    assert w.add(window_segment("l1", "hello"))
    assert [x.item_id for x in w.due(now=100.0)] == ["l1"]
    w.add(window_segment("l1", "again"))
    assert w.due(now=102.0) == []  # pending, but refreshed 2 s ago
    due = w.due(now=105.0)
    assert [x.item_id for x in due] == ["l1"]
    assert list(due[0].comments) == ["hello", "again"]
    assert w.due(now=200.0) == []  # nothing new since


def test_windows_are_bounded_in_comments_and_streams() -> None:
    w = LiveWindows(comment_window=2, max_streams=2, min_interval_s=1.0)
    w.add(window_segment("l1", "a", "b", "c"))
    w.add(window_segment("l2", "x"))
    w.add(window_segment("l3", "y"))  # l1 is the least recently active: dropped
    assert len(w) == 2
    snaps = {x.item_id: x for x in w.due(now=10.0)}
    assert set(snaps) == {"l2", "l3"}
    w.add(window_segment("l2", "p", "q", "r"))
    assert list(w.due(now=20.0)[0].comments) == ["q", "r"]
    w.forget("l2")
    assert len(w) == 1


def test_new_frames_replace_old_ones_and_text_joins_transcript_and_comments() -> None:
    w = LiveWindows(min_interval_s=1.0)
    w.add(window_segment("l1", keyframe_paths=["a.jpg"], transcript="now playing"))
    w.add(window_segment("l1", "nice", video_path="b.mp4"))
    snap = w.due(now=5.0)[0]
    assert snap.keyframe_paths == [] and snap.video_path == "b.mp4"
    assert snap.text() == "now playing nice"


def test_refreshed_vector_blends_the_original_with_now() -> None:
    original, now = axis("cooking"), axis("gaming")
    v = refreshed_vector(original, {"text": now}, {"text": 1.0}, alpha=0.5)
    assert v is not None
    np.testing.assert_allclose(v, (original + now) / np.linalg.norm(original + now), atol=1e-6)
    assert refreshed_vector(original, {"text": None}, {"text": 1.0}, alpha=0.5) is None


def live_stream(h: Handlers, item: str, title: str) -> None:
    h.index_content([ContentEvent(item_id=item, kind="live_stream", title=title, created_at=1.0)])


def test_comments_move_a_live_stream_toward_what_is_said_and_keep_its_identity() -> None:
    h = handlers()
    live_stream(h, "l1", "cooking cooking")
    for i in range(3):  # refreshes blend with the original, not the last refresh: no runaway drift
        h.add_live_segment(segment("l1", "gaming", "gaming"))
        out = h.refresh_live(h.live_windows.due(now=100.0 + 10 * i))
        assert [it.item_id for it in out.items] == ["l1"]
    v = h.index.get(["l1"])["l1"].vector
    expected = (axis("cooking") + axis("gaming")) / np.sqrt(2)
    np.testing.assert_allclose(v, expected, atol=1e-5)
    # search on the live feed explains the hit by what viewers say now
    hit = h.search("gaming", Feed.live, limit=1)[0]
    assert hit["item_id"] == "l1" and hit["matched"] == "live_text"
    assert hit["modality_scores"]["live_text"] == pytest.approx(1.0, abs=1e-5)


def test_an_ended_stream_is_not_refreshed_back_into_the_live_feed() -> None:
    h = handlers()
    live_stream(h, "l1", "cooking")
    h.add_live_segment(segment("l1", "gaming"))
    due = h.live_windows.due(now=10.0)
    h.apply_live_status(LiveStatusEvent(item_id="l1", status=LiveState.ended))
    out = h.refresh_live(due)
    assert out.items == [] and out.skipped == 1
    assert not h.index.get(["l1"])["l1"].is_live
    assert h.index.search([axis("gaming")], Feed.live, limit=5) == [[]]
    assert len(h.live_windows) == 0  # the window was dropped when the stream ended


def test_comments_on_live_streams_are_forwarded_and_others_are_not() -> None:
    h = handlers()
    live_stream(h, "l1", "music")
    h.index.upsert([IndexedItem("v1", Feed.short_video, False, 1.0, "cooking", axis("cooking"))])
    events = [
        (0, InteractionEvent(event_id="e1", user_id="u", item_id="l1", type="comment", comment=" gaming ", ts=2)),
        (1, InteractionEvent(event_id="e2", user_id="u", item_id="v1", type="comment", comment="yum", ts=3)),
        (2, InteractionEvent(event_id="e3", user_id="u", item_id="l1", type="like", ts=4)),
        (3, InteractionEvent(event_id="e1", user_id="u", item_id="l1", type="comment", comment="gaming", ts=2)),
    ]
    result = h.process_interactions(events, {"u": None})
    assert [(s.item_id, s.comments) for s in result.live_comments] == [("l1", ["gaming"])]  # duplicate e1 too


def test_segment_media_outside_the_roots_is_rejected(tmp_path: object) -> None:
    media = SimpleNamespace(params=SimpleNamespace(media_roots=[str(tmp_path)]))
    h = handlers(media=media)
    with pytest.raises(RejectedEvent) as err:
        h.add_live_segment(segment("l1", keyframe_paths=["/etc/passwd"]))
    assert err.value.reason == "media_path_outside_roots"
    assert len(h.live_windows) == 0


def test_modality_scores_only_for_parts_a_query_exists_for() -> None:
    q = {"text": axis("cooking"), "live_text": axis("cooking")}
    parts = {"text": axis("cooking"), "audio": axis("music"), "live_text": axis("gaming")}
    assert modality_scores(q, parts) == {"text": 1.0, "live_text": 0.0}
