import json

import pytest

from streams.schemas import (
    JSONSCHEMA_DIR,
    MAX_EVENT_BYTES,
    ContentEvent,
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
