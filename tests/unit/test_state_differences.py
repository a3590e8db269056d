"""The state comparison the crash-safety tests rely on must see a lost event, a doubled one and a drift."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ranking.domain import Interaction, InteractionType
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModel, UserModelParams, UserState, state_differences

MODEL = UserModel(UserModelParams(event_weights={InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}))
VECTORS = {f"i{n}": np.random.default_rng(n).normal(size=8) for n in range(4)}


def events(user: str) -> list[Interaction]:
    kinds = ("like", "comment", "view", "skip", "like")
    return [
        Interaction(f"{user}:{n}", user, f"i{n % 4}", InteractionType(k), ts=1e6 + n, value=12.0)
        for n, k in enumerate(kinds)
    ]


def replay(evs: list[Interaction]) -> dict[str, Any]:
    state = UserState()
    for ev in evs:
        MODEL.learn_one(state, ev, VECTORS[ev.item_id])
    return state.to_dict()


@pytest.fixture
def clean() -> dict[str, dict[str, Any]]:
    return {u: replay(events(u)) for u in ("alice", "bob")}


def test_same_stream_gives_no_differences_even_through_redelivery(clean: dict[str, dict[str, Any]]) -> None:
    evs = events("alice")
    redelivered = evs[:3] + evs[1:]  # at-least-once: events 1 and 2 arrive twice, dedupe absorbs them
    assert state_differences(clean, {"alice": replay(redelivered), "bob": replay(events("bob"))}) == []


def test_a_missing_event_is_reported(clean: dict[str, dict[str, Any]]) -> None:
    evs = events("alice")
    lost = {**clean, "alice": replay(evs[:2] + evs[3:])}
    diffs = state_differences(clean, lost)
    assert any("events not applied ['alice:2']" in d for d in diffs), diffs
    assert any(d.startswith("user alice: n_events 4 != 5") for d in diffs), diffs
    assert all(d.startswith("user alice") for d in diffs)


def test_an_event_applied_twice_is_reported(clean: dict[str, dict[str, Any]]) -> None:
    evs = events("alice")
    state = UserState.from_dict(replay(evs))
    applied, state.applied_event_ids = state.applied_event_ids, []  # dedupe bypassed for one event
    MODEL.learn_one(state, evs[-1], VECTORS[evs[-1].item_id])
    state.applied_event_ids[:0] = applied
    doubled = {**clean, "alice": state.to_dict()}
    diffs = state_differences(clean, doubled)
    assert any("events applied twice ['alice:4']" in d for d in diffs), diffs
    assert any("n_events 6 != 5" in d for d in diffs), diffs


def test_a_drifted_embedding_is_reported_but_float_noise_is_not(clean: dict[str, dict[str, Any]]) -> None:
    noisy = {u: {**s, "long_term": [x * (1 + 1e-12) for x in s["long_term"]]} for u, s in clean.items()}
    assert state_differences(clean, noisy) == []
    drifted = {**clean, "bob": {**clean["bob"], "short_term": [x + 1e-3 for x in clean["bob"]["short_term"]]}}
    assert state_differences(clean, drifted) == ["user bob: short_term drifted by 0.00283"]


def test_missing_and_unexpected_users_and_reordering_are_reported(clean: dict[str, dict[str, Any]]) -> None:
    evs = events("bob")
    reordered = {"bob": replay([evs[1], evs[0], *evs[2:]]), "carol": replay(events("carol"))}
    diffs = state_differences(clean, reordered)
    assert "user alice: missing" in diffs
    assert "user carol: not expected" in diffs
    assert "user bob: events applied in another order" in diffs
