"""The replayed stream: round-robin over users, ids stable, and reproducible when event times are fixed."""

from __future__ import annotations

import time

from ranking.datasets import Dataset, Interaction, Item
from streams.replay import interaction_events
from streams.schemas import InteractionType

LIKE = InteractionType.like
DATA = Dataset(
    "toy",
    {i: Item(i, f"title {i}") for i in ("a", "b", "c")},
    {"u1": [Interaction("a", LIKE), Interaction("b", LIKE), Interaction("c", LIKE)], "u2": [Interaction("c", LIKE)]},
)


def test_users_interleave_in_order_with_stable_ids() -> None:
    got = [(ev.user_id, ev.item_id, ev.event_id) for ev in interaction_events(DATA)]
    assert got == [("u1", "a", "toy:u1:0"), ("u2", "c", "toy:u2:0"), ("u1", "b", "toy:u1:1"), ("u1", "c", "toy:u1:2")]


def test_fixed_event_times_make_the_stream_reproducible() -> None:
    def at(user: str, pos: int) -> float:
        return 1000.0 + 10 * pos

    first = [ev.model_dump_json() for ev in interaction_events(DATA, at)]
    time.sleep(0.01)
    assert [ev.model_dump_json() for ev in interaction_events(DATA, at)] == first
    assert [ev.ts for ev in interaction_events(DATA, at)] == [1000.0, 1000.0, 1010.0, 1020.0]


def test_without_fixed_times_events_carry_the_publish_time() -> None:
    before = time.time()
    stamps = [ev.ts for ev in interaction_events(DATA)]
    assert all(before <= ts <= time.time() for ts in stamps)
