"""Poison input: >10,000 hostile events interleaved with good ones through one real worker.

Hypothesis generates the events (derandomized; the draws still shift with which modules are loaded, since
Hypothesis also samples constants found in their source, so the checks hold for any draw), then they are
published in bulk to the content, live-status and interaction topics of a real worker (embedded
broker, Milvus Lite server, hash text encoder, EfficientNet for the media-path checks). Every bad
event carries a unique marker, so each dead letter is matched back to the event it came from.

What it proves: the worker never dies or turns unhealthy; every bad event is dead-lettered exactly
once with the expected reason and is counted by ``livelens_dead_letter_total``; every good event
takes effect (items in Milvus with the right feed and live flag and searchable, each user's state
holding exactly their good event ids, replays counted as duplicates).
"""

from __future__ import annotations

import base64
import json
import os
import re
import string
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from encoders.text import HashTextEncoder
from streams.consumer import TopicReader, as_dead_letter
from streams.replay import make_producer
from streams.schemas import MAX_EVENT_BYTES
from tests.conftest import base_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ID_CHARS = string.ascii_letters + string.digits + "_.:@-"
MARKER = re.compile(r"fz[cli]\d{6}")
USERS = [f"fzuser{n:02d}" for n in range(30)]
# How often each (topic, category) is drawn: hostile categories dominate, oversized ones stay rare.
WEIGHTS: dict[tuple[str, str], int] = {
    ("content", "good"): 4,
    ("content", "good_missing_media"): 1,
    ("live", "good"): 3,
    ("interaction", "good"): 13,
    ("interaction", "replay"): 1,
}
for _topic in ("content", "live", "interaction"):
    for _cat, _w in {
        "bad_json": 4,
        "wrong_type": 4,
        "missing_field": 3,
        "huge_string": 2,
        "nonfinite": 3,
        "invalid_utf8": 3,
        "not_object": 2,
        "extra_field": 2,
        "bad_id": 2,
        "deep_nesting": 1,
        "tombstone": 1,
    }.items():
        WEIGHTS[(_topic, _cat)] = _w
    WEIGHTS[(_topic, "oversized")] = 1 if _topic != "interaction" else 0
    WEIGHTS[(_topic, "oversized_control")] = 1 if _topic != "interaction" else 0
WEIGHTS[("content", "media_outside_roots")] = 4
WEIGHTS[("live", "unknown_item")] = 3
WEIGHTS[("live", "not_live_stream")] = 2
WEIGHTS[("interaction", "unknown_item")] = 5
WEIGHTED = [key for key, w in WEIGHTS.items() for _ in range(w)]

EXPECTED_REASONS: dict[str, set[str]] = {
    "bad_json": {"invalid_json", "schema"},  # random garbage may happen to close the object
    "wrong_type": {"schema"},
    "missing_field": {"schema"},
    "huge_string": {"schema"},
    "nonfinite": {"invalid_json", "schema"},  # NaN literals vs 1e999 (which json reads as inf)
    "invalid_utf8": {"invalid_utf8"},
    "not_object": {"schema"},
    "extra_field": {"schema"},
    "bad_id": {"schema"},
    "deep_nesting": {"invalid_json"},
    "tombstone": {"empty"},
    "oversized": {"oversized"},
    "oversized_control": {"oversized"},
    "media_outside_roots": {"media_path_outside_roots"},
    "unknown_item": {"unknown_item"},
    "not_live_stream": {"not_live_stream"},
}
ID_FIELD = {"content": "item_id", "live": "item_id", "interaction": "event_id"}
REQUIRED = {"content": ["kind", "title"], "live": ["status"], "interaction": ["user_id", "item_id", "type"]}
FLOAT_FIELDS = {"content": "created_at", "live": "ts", "interaction": "value"}
STRING_LIMITS = {
    "content": [("title", 1_000), ("description", 4_000), ("item_id", 128)],
    "live": [("item_id", 128)],
    "interaction": [("comment", 4_000), ("user_id", 128), ("item_id", 128)],
}

wrong_values = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
)
garbage = st.text(max_size=40)
bad_ids = st.one_of(
    st.just(""),
    st.text(min_size=1, max_size=20).filter(lambda s: any(c not in ID_CHARS for c in s)),
    st.sampled_from(["../../etc/passwd", "a b", "x\x00y", "用户", "'; DROP TABLE users;--"]),
)
CATEGORY: dict[str, st.SearchStrategy[Any]] = {
    "good": st.fixed_dictionaries(
        {
            "title": st.text(min_size=1, max_size=60),
            "description": st.text(max_size=80),
            "tags": st.lists(st.text(max_size=12), max_size=4),
            "type": st.sampled_from(["view", "like", "comment", "share", "gift", "skip", "follow"]),
            "value": st.one_of(st.floats(0, 1e9, allow_nan=False), st.sampled_from([0.0, 1e9, 5e-324])),
            "ts": st.one_of(st.floats(0, 4e9, allow_nan=False), st.sampled_from([0.0, 1e12])),
            "status": st.sampled_from(["live", "ended"]),
            "viewer_count": st.one_of(st.integers(0, 10**6), st.just(10**30)),
            "comment": st.one_of(st.none(), st.text(max_size=50)),
        }
    ),
    "good_missing_media": st.text(ID_CHARS, min_size=1, max_size=12),
    "replay": st.integers(0, 10**6),
    "bad_json": garbage,
    "wrong_type": st.tuples(st.integers(0, 10), wrong_values),
    "missing_field": st.integers(0, 10),
    "huge_string": st.tuples(st.integers(0, 10), st.integers(1, 20_000)),
    "nonfinite": st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-1"]),
    "invalid_utf8": st.tuples(
        st.binary(max_size=20), st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"])
    ),
    "not_object": st.sampled_from(["list", "string"]),
    "extra_field": st.tuples(st.text(min_size=1, max_size=10), st.integers()),
    "bad_id": bad_ids,
    "deep_nesting": st.integers(2_000, 100_000),
    "tombstone": st.just(None),
    "oversized": st.integers(MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES + 20_000),
    "oversized_control": st.tuples(st.integers(MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES + 20_000), st.integers(0, 31)),
    "media_outside_roots": st.sampled_from(
        ["/etc/passwd", "../../../../etc/hostname", "link-out/passwd", "/proc/self/environ"]
    ),
    "unknown_item": st.text(ID_CHARS, min_size=1, max_size=20),
    "not_live_stream": st.integers(0, 10**6),
}


def generate_specs(examples: int, per_example: int) -> list[tuple[tuple[str, str], Any]]:
    """Draw (topic, category), params) with Hypothesis, deterministically, without any broker round-trip."""
    spec = st.sampled_from(WEIGHTED).flatmap(lambda key: CATEGORY[key[1]].map(lambda p, k=key: (k, p)))
    out: list[tuple[tuple[str, str], Any]] = []

    @hsettings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(spec, min_size=per_example, max_size=per_example))
    def collect(batch: list[tuple[tuple[str, str], Any]]) -> None:
        out.extend(batch)

    collect()
    return out


@dataclass
class Sent:
    """One published event and what must become of it."""

    topic: str
    category: str
    key: str | None
    value: bytes | None
    marker: str | None = None  # bad events: the string that identifies their dead letter


@dataclass
class Plan:
    content: list[Sent] = field(default_factory=list)
    later: list[Sent] = field(default_factory=list)  # live status and interactions, after content is indexed
    good_items: dict[str, str] = field(default_factory=dict)  # item id -> feed
    good_titles: dict[str, str] = field(default_factory=dict)
    final_live: dict[str, bool] = field(default_factory=dict)
    user_events: dict[str, list[str]] = field(default_factory=dict)
    replays: int = 0

    @property
    def bad(self) -> list[Sent]:
        return [s for s in self.content + self.later if s.category not in ("good", "good_missing_media", "replay")]


def base_event(topic: str, marker: str, item: str) -> dict[str, Any]:
    if topic == "content":
        return {"item_id": marker, "kind": "short_video", "title": "a title"}
    if topic == "live":
        return {"item_id": marker, "status": "live"}
    return {"event_id": marker, "user_id": "fzuser00", "item_id": item, "type": "like"}


def bad_payload(topic: str, category: str, p: Any, marker: str, item: str) -> bytes | None:
    """The raw bytes of one hostile event; ``marker`` appears in it (except tombstones)."""
    ev = base_event(topic, marker, item)
    idf = ID_FIELD[topic]
    if category == "bad_json":
        return (json.dumps({idf: marker})[:-1] + ", " + p).encode()
    if category == "wrong_type":
        fields = [f for f in [*REQUIRED[topic], FLOAT_FIELDS[topic]] if f != idf]
        ev[fields[p[0] % len(fields)]] = p[1]
    elif category == "missing_field":
        del ev[REQUIRED[topic][p % len(REQUIRED[topic])]]
    elif category == "huge_string":
        name, limit = STRING_LIMITS[topic][p[0] % len(STRING_LIMITS[topic])]
        if name == idf:
            ev[name] = marker + "x" * (limit + p[1])
        else:
            ev[name] = "y" * (limit + p[1])
    elif category == "nonfinite":
        return (json.dumps(ev)[:-1] + f', "{FLOAT_FIELDS[topic]}": {p}}}').encode()
    elif category == "invalid_utf8":
        return json.dumps(ev)[:-1].encode() + b', "x": "' + p[0] + p[1] + b'\xfe"}'
    elif category == "not_object":
        return json.dumps([marker, ev] if p == "list" else marker).encode()
    elif category == "extra_field":
        ev[f"zz{p[0]}"] = p[1]
    elif category == "bad_id":
        other = "user_id" if topic == "interaction" else None
        if other:
            ev[other] = p
        else:
            ev[idf] = marker + "/" + p if p else marker + " "
    elif category == "deep_nesting":
        return (json.dumps(ev)[:-1] + ', "x": ' + "[" * p + "]" * p + "}").encode()
    elif category == "tombstone":
        return None
    elif category == "oversized":
        ev["padding"] = "z" * p
    elif category == "oversized_control":
        # Raw control bytes: valid UTF-8, but each one takes 6 bytes once escaped into a dead letter's JSON.
        return marker.encode() + bytes([p[1]]) * p[0]
    elif category == "media_outside_roots":
        ev["cover_path"] = p
    elif category == "unknown_item" and topic == "interaction":
        ev["item_id"] = "fznope-" + p
    return json.dumps(ev).encode()


def build_plan(specs: list[tuple[tuple[str, str], Any]]) -> Plan:
    """Turn drawn specs into events: unique ids and markers, good events referring to good items only."""
    plan = Plan()
    n = 0
    good_short: list[str] = []
    good_live: list[str] = []
    goods: list[tuple[str, Any]] = []
    for (topic, category), p in specs:
        n += 1
        if topic == "content" and category in ("good", "good_missing_media"):
            live = n % 3 == 0
            item = f"fzitem{n:06d}"
            ev: dict[str, Any] = {
                "item_id": item,
                "kind": "live_stream" if live else "short_video",
                "title": f"{p['title'] if isinstance(p, dict) else p} fzt{n:06d}"[:1_000],
            }
            if isinstance(p, dict):
                ev.update(description=p["description"], tags=p["tags"], created_at=p["ts"])
            else:
                ev["cover_path"] = f"missing/{p}.jpg"  # inside the root, not there: the item keeps its text
            plan.content.append(Sent("content", category, item, json.dumps(ev).encode()))
            (good_live if live else good_short).append(item)
            plan.good_items[item] = "live" if live else "short_video"
            plan.good_titles[item] = ev["title"]
            if live:
                plan.final_live[item] = True
            continue
        if topic != "content" and category in ("good", "replay", "not_live_stream"):
            goods.append((f"{topic}:{category}", (n, p)))
            continue
        marker = f"fz{topic[0]}{n:06d}"
        value = bad_payload(topic, category, p, marker, "fznone")
        sent = Sent(topic, category, marker, value, None if category == "tombstone" else marker)
        (plan.content if topic == "content" else plan.later).append(sent)
    assert good_short and good_live, "the draw gave no good items"
    applied: list[tuple[str, bytes]] = []
    for what, (n, p) in goods:
        if what == "interaction:good":
            user = USERS[n % len(USERS)]
            item = (good_short + good_live)[n % (len(good_short) + len(good_live))]
            event_id = f"fzgood{n:06d}"
            ev = {"event_id": event_id, "user_id": user, "item_id": item, "type": p["type"], "value": p["value"]}
            ev.update(ts=p["ts"], comment=p["comment"])
            raw = json.dumps(ev).encode()
            plan.later.append(Sent("interaction", "good", user, raw))
            plan.user_events.setdefault(user, []).append(event_id)
            applied.append((user, raw))
        elif what == "interaction:replay":
            if not applied:
                continue
            user, raw = applied[p % len(applied)]
            plan.later.append(Sent("interaction", "replay", user, raw))
            plan.replays += 1
        elif what == "live:good":
            item = good_live[n % len(good_live)]
            ev = {"item_id": item, "status": p["status"], "viewer_count": p["viewer_count"], "ts": p["ts"]}
            plan.later.append(Sent("live", "good", item, json.dumps(ev).encode()))
            plan.final_live[item] = p["status"] == "live"
        elif what == "live:not_live_stream":
            item = good_short[n % len(good_short)]
            # No id field to mark: the unique viewer count identifies this dead letter.
            ev = {"item_id": item, "status": "live", "viewer_count": 7_000_000_000 + n}
            plan.later.append(Sent("live", "not_live_stream", item, json.dumps(ev).encode(), f"vc{7_000_000_000 + n}"))
    return plan


def marker_of(payload: str, encoding: str) -> str | None:
    text = base64.b64decode(payload).decode("latin-1") if encoding == "base64" else payload
    found = MARKER.search(text)
    if found:
        return found.group(0)
    count = re.search(r'"viewer_count":\s*(7\d{9})', text)
    return f"vc{count.group(1)}" if count else None


def dlq_counts(metrics_text: str) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "livelens_dead_letter":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(sample.labels["topic"], sample.labels["reason"])] += int(sample.value)
    return out


def publish(settings: Any, sent: list[Sent]) -> float:
    topics = {"content": settings.topic_content, "live": settings.topic_live_status}
    topics["interaction"] = settings.topic_interactions
    producer = make_producer(settings)
    started = time.perf_counter()
    for s in sent:
        while True:
            try:
                producer.produce(topics[s.topic], key=s.key.encode() if s.key else None, value=s.value)
                producer.poll(0)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0, "events left unsent"
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from streams.local import LocalStack

    root = tmp_path_factory.mktemp("fuzz")
    media = root / "media"
    (media / "missing").mkdir(parents=True)
    os.symlink("/etc", media / "link-out")  # a symlink inside the root that leads out of it
    settings = base_settings(root, text_encoder="hash", media_roots=[str(media)], interaction_batch_size=256)
    with LocalStack(settings, root) as local:
        yield local


def test_thousands_of_hostile_events_are_dead_lettered_and_good_ones_applied(fuzz_stack: Any) -> None:
    from pymilvus import MilvusClient

    stack, s = fuzz_stack, fuzz_stack.settings
    worker = stack.worker
    pid = worker.proc.pid
    t0 = time.perf_counter()
    plan = build_plan(generate_specs(examples=1_100, per_example=12))
    t_gen = time.perf_counter() - t0
    bad = plan.bad
    assert len(bad) >= 10_000, f"only {len(bad)} hostile events drawn"
    by_cat = Counter(f"{b.topic}:{b.category}" for b in bad)
    assert all(by_cat[f"{t}:{c}"] > 0 for t, c in WEIGHTS if c in EXPECTED_REASONS and WEIGHTS[(t, c)])

    # Phase 1: content (good items interleaved with hostile ones), until all of it is handled.
    bad_content = [b for b in bad if b.topic == "content"]
    t_pub1 = publish(s, plan.content)
    worker.wait_for("livelens_items_indexed", len(plan.good_items), timeout=300)
    worker.wait_for("livelens_dead_letter", len(bad_content), timeout=300)
    # Phase 2: live status and interactions, which refer to the items of phase 1.
    t_pub2 = publish(s, plan.later)
    good_interactions = sum(len(v) for v in plan.user_events.values())
    deadline = time.monotonic() + 420
    while True:
        stats = worker.get("/stats")
        if stats.get("livelens_dead_letter", 0) >= len(bad) and (
            _consumed(worker, s.topic_interactions) >= good_interactions + plan.replays
        ):
            break
        assert time.monotonic() < deadline, f"worker did not catch up: {stats}"
        assert worker.proc.poll() is None, f"worker died:\n{worker.log_tail()}"
        time.sleep(1.0)
    t_total = time.perf_counter() - t0

    # Never crashed, still healthy.
    assert worker.proc is not None and worker.proc.poll() is None and worker.proc.pid == pid
    assert worker.get("/health")["status"] == "ok"

    # Every bad event is in the dead-letter topic exactly once, with an expected reason.
    reader = TopicReader(s, [s.topic_dead_letter])
    letters = []
    try:
        deadline = time.monotonic() + 120
        while len(letters) < len(bad) and time.monotonic() < deadline:
            got = reader.poll(0.5)
            if got is not None:
                letters.append(as_dead_letter(got))
        extra_deadline = time.monotonic() + 3  # anything beyond the expected count is a defect too
        while time.monotonic() < extra_deadline:
            got = reader.poll(0.2)
            if got is not None:
                letters.append(as_dead_letter(got))
    finally:
        reader.close()
    topic_of = {"content": s.topic_content, "live": s.topic_live_status, "interaction": s.topic_interactions}
    expected = {b.marker: b for b in bad if b.marker}
    seen: Counter[str] = Counter()
    empties: Counter[str] = Counter()
    for letter in letters:
        if letter.reason == "empty":
            assert letter.payload == ""
            empties[letter.source_topic] += 1
            continue
        marker = marker_of(letter.payload, letter.payload_encoding)
        assert marker in expected, f"dead letter matches no bad event: {letter.reason} {letter.payload[:200]!r}"
        b = expected[marker]
        assert letter.source_topic == topic_of[b.topic]
        assert letter.reason in EXPECTED_REASONS[b.category], (b.category, letter.reason, letter.error)
        seen[marker] += 1
    missing = set(expected) - set(seen)
    assert not missing, f"{len(missing)} bad events never dead-lettered, e.g. {sorted(missing)[:5]}"
    assert max(seen.values()) == 1, f"dead-lettered twice: {[m for m, c in seen.items() if c > 1][:5]}"
    tombstones = Counter(topic_of[b.topic] for b in bad if b.category == "tombstone")
    assert empties == tombstones

    # The metric counted the same letters, per topic and reason.
    from_topic = Counter((letter.source_topic, letter.reason) for letter in letters)
    assert dlq_counts(worker.get_text("/metrics")) == from_topic

    # Good content: every item in Milvus with its feed and final live flag, no hostile item indexed.
    client = MilvusClient(s.milvus_uri)
    try:
        rows = client.get(s.milvus_collection, ids=list(plan.good_items), output_fields=["feed", "is_live"])
        assert {r["item_id"]: r["feed"] for r in rows} == plan.good_items
        assert {r["item_id"]: r["is_live"] for r in rows if r["feed"] == "live"} == plan.final_live
        hostile = [b.marker for b in bad if b.topic == "content" and b.marker]
        assert client.get(s.milvus_collection, ids=hostile, output_fields=["feed"]) == []
    finally:
        client.close()
    hasher = HashTextEncoder()
    for item in list(plan.good_items)[:20]:
        token = plan.good_titles[item].rsplit(" ", 1)[1]
        feed = plan.good_items[item]
        if feed == "live" and not plan.final_live[item]:
            continue
        # The hash encoder puts one word in one of 384 slots, so a few other titles collide with the token; one
        # with fewer other words can even outscore the item. Every item ranked above it must be such a collision.
        found = worker.get(f"/search?q={token}&feed={feed}&limit=100")["results"]
        scores = {r["item_id"]: r["score"] for r in found}
        assert item in scores and scores[item] > 0, (item, found[:5])
        query_slot = hasher.slot(token)
        above = [r for r in found if r["score"] > scores[item]]
        assert all(query_slot in {hasher.slot(t) for t in hasher.tokens(r["title"])} for r in above), (item, above)

    # Good interactions: each user's state holds exactly their good event ids; replays were no-ops.
    for user, event_ids in plan.user_events.items():
        state = worker.get(f"/state/{user}")
        assert state["applied_event_ids"] == event_ids, user
        assert state["n_events"] == len(event_ids)
    assert _metric_sum(worker, "livelens_duplicate_events_total") == plan.replays

    print(
        f"\nfuzz: {len(bad)} hostile ({dict(sorted(by_cat.items()))}), {len(plan.good_items)} items, "
        f"{good_interactions} good interactions, {plan.replays} replays, "
        f"{sum(1 for x in plan.later if x.topic == 'live' and x.category == 'good')} good live-status; "
        f"generate {t_gen:.1f}s, publish {t_pub1:.1f}+{t_pub2:.1f}s, total {t_total:.1f}s"
    )


def _metric_sum(worker: Any, sample_name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(worker.get_text("/metrics")):
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _consumed(worker: Any, topic: str) -> float:
    return _metric_sum(worker, "livelens_events_consumed_total", topic=topic)


def test_a_few_specs_are_what_they_claim(tmp_path: Path) -> None:
    """The generator itself: a bad event of each kind is rejected by the schema for the stated reason."""
    from streams.schemas import ContentEvent, InteractionEvent, LiveStatusEvent, RejectedEvent, parse_event

    models = {"content": ContentEvent, "live": LiveStatusEvent, "interaction": InteractionEvent}
    plan = build_plan(generate_specs(examples=60, per_example=12))
    checked = Counter()
    for b in plan.bad:
        if b.category in ("media_outside_roots", "unknown_item", "not_live_stream"):
            parse_event(models[b.topic], b.value)  # well-formed: rejected later, by the worker
            continue
        with pytest.raises(RejectedEvent) as info:
            parse_event(models[b.topic], b.value)
        assert info.value.reason in EXPECTED_REASONS[b.category], (b.category, info.value)
        checked[b.category] += 1
    assert len(checked) >= 8


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/state/a%20b", 400),
        ("/state/" + "u" * 129, 400),
        ("/state/..%2F..%2Fetc%2Fpasswd", 400),
        ("/state/%F0%9F%98%80", 400),
        ("/state/nobody-here", 404),
        ("/recommendations/a%20b", 400),
        ("/recommendations/" + "u" * 129, 400),
        ("/recommendations/fzuser00?feed=tv", 400),
        ("/search", 400),
        ("/search?q=", 400),
        ("/search?q=" + "x" * 501, 400),
        ("/search?q=noodles&limit=100000", 400),
        ("/search?q=noodles&limit=0", 400),
        ("/search?q=noodles&limit=-5", 400),
        ("/search?q=noodles&limit=abc", 400),
        ("/search?q=noodles&limit=1e3", 400),
        ("/search?q=noodles&feed=../../x", 400),
        ("/search?q=%20%20", 400),
    ],
)
def test_http_inputs_are_validated_with_clear_4xx(fuzz_stack: Any, path: str, code: int) -> None:
    """Hostile HTTP input against the real worker: a 4xx with an error message, never a 5xx or a crash."""
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        fuzz_stack.worker.get(path)
    assert info.value.code == code, info.value.read()[:300]
    assert json.loads(info.value.read())["error"]
    assert fuzz_stack.worker.proc.poll() is None


def test_http_bounds_still_accept_the_largest_valid_request(fuzz_stack: Any) -> None:
    body = fuzz_stack.worker.get("/search?q=" + "x" * 500 + "&feed=live&limit=100")
    assert body["feed"] == "live" and isinstance(body["results"], list)
