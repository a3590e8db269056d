import json

import pytest

from streams.schemas import (
    JSONSCHEMA_DIR,
    MAX_EVENT_BYTES,
    ContentEvent,
    ContentKind,
    Feed,
    InteractionEvent,
    InteractionType,
    RejectedEvent,
    json_schemas,
    parse_event,
)


def good_interaction(**over: object) -> dict:
    event = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "like", "value": 0, "ts": 1.0}
    event.update(over)
    return event


def test_valid_interaction_parses_from_bytes() -> None:
    ev = parse_event(InteractionEvent, json.dumps(good_interaction(type="gift", value=5)).encode())
    assert ev.type is InteractionType.gift and ev.value == 5


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[1, 2]", "schema"),
        (json.dumps(good_interaction(type="teleport")).encode(), "schema"),
        (json.dumps(good_interaction(user_id="")).encode(), "schema"),
        (json.dumps(good_interaction(user_id="a b")).encode(), "schema"),
        (b'{"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "value": NaN}', "invalid_json"),
        (json.dumps(good_interaction(value=-1)).encode(), "schema"),
        (json.dumps(good_interaction(extra="x")).encode(), "schema"),
        (b" " * (MAX_EVENT_BYTES + 1), "oversized"),
        (None, "empty"),
        # Found by tests/integration/test_fuzz.py: json.loads raised RecursionError, which killed the agent.
        (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(RejectedEvent) as info:
        parse_event(InteractionEvent, raw)
    assert info.value.reason == reason
    assert str(info.value)


def test_content_feed_and_text() -> None:
    live = ContentEvent(item_id="l1", kind="live_stream", title="Cooking live", tags=["food"], description="wok")
    assert live.feed is Feed.live
    assert "Cooking live" in live.text() and "#food" in live.text() and "wok" in live.text()
    assert ContentEvent(item_id="v1", kind="short_video", title="t").feed is Feed.short_video


def test_committed_json_schemas_are_current() -> None:
    """Producers read streams/jsonschema/: regenerate with `livelens schemas` when a model changes."""
    for name, schema in json_schemas().items():
        path = JSONSCHEMA_DIR / f"{name}.schema.json"
        assert path.is_file(), f"missing {path}; run `livelens schemas`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale; run `livelens schemas`"


def test_the_wire_reuses_the_core_enums_and_converts_at_the_edge() -> None:
    """One definition of each value (ranking.domain), and lossless conversions both ways."""
    from encoders.live import LiveSegment
    from ranking import domain
    from streams.schemas import LiveSegmentEvent, RecommendedItem

    assert Feed is domain.Feed and InteractionType is domain.InteractionType and ContentKind is domain.ContentKind
    ev = parse_event(InteractionEvent, json.dumps(good_interaction(type="view", value=12.5, comment="hi")).encode())
    core = ev.to_core()
    assert core == domain.Interaction("e1", "u1", "i1", domain.InteractionType.view, ts=1.0, value=12.5)
    back = InteractionEvent.from_core(core)
    assert back == ev.model_copy(update={"comment": None})  # the comment is the shell's business
    wire = RecommendedItem.from_core(domain.RecommendedItem("i1", 0.5, "new"))
    assert wire.model_dump() == {"item_id": "i1", "score": 0.5, "reason": "new"}
    with pytest.raises(ValueError):
        InteractionEvent.from_core(domain.Interaction("e 1", "u1", "i1", domain.InteractionType.like, ts=1.0))
    seg = LiveSegmentEvent(item_id="l1", ts=2.0, comments=["wow"], keyframe_paths=["a.jpg"]).to_core()
    assert seg == LiveSegment("l1", 2.0, comments=("wow",), keyframe_paths=("a.jpg",))
    assert seg.has_content() and not LiveSegmentEvent(item_id="l1", comments=[" "]).to_core().has_content()
