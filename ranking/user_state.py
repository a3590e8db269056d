"""A user's taste, updated incrementally one interaction at a time (river-style ``learn_one``).

Why this shape: the live agent, the offline evaluation and the tests all call the same
``UserModel.learn_one`` on a plain ``UserState`` that round-trips through JSON, so the Faust table
holds exactly what the pure code computes, and replaying an event is a no-op (idempotent by id).

The long-term taste is a decayed sum of item vectors, each weighted by how strongly the user engaged
(gift > comment > share > like > long watch > view; a skip weighs negative and pushes the taste away).
Decay is exponential in event time with a configurable half-life, so old taste fades. The short-term
(session) vector uses the same sum with a fast per-event decay, so it follows the last few items.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.domain import Follow, Interaction, InteractionType

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    # Stronger commitment -> larger pull of the user's taste toward the item (skip pushes away).
    "gift": 3.0,
    "comment": 2.0,
    "share": 1.8,
    "follow": 1.5,
    "like": 1.2,
    "view": 0.5,
    "skip": -0.6,
}
# How fast the session vector follows new items: each event keeps ``1 - rate`` of it (``session_decay``).
DEFAULT_LEARNING_RATE = 0.3

POSITIVE_VERBS: dict[InteractionType, str] = {
    InteractionType.gift: "gifted",
    InteractionType.comment: "commented on",
    InteractionType.share: "shared",
    InteractionType.follow: "followed",
    InteractionType.like: "liked",
    InteractionType.view: "watched",
}


@dataclass
class RecentItem:
    item_id: str
    type: InteractionType
    ts: float
    weight: float


@dataclass
class UserState:
    """Everything LiveLens keeps about one user; JSON-serialisable via ``to_dict``/``from_dict``."""

    long_term: list[float] | None = None
    short_term: list[float] | None = None
    last_ts: float = 0.0
    n_events: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    recent: list[RecentItem] = field(default_factory=list)
    # Ids of the last events applied: the dedupe record lives in the same table value as the state
    # it guards, so a changelog replay restores both together.
    applied_event_ids: list[str] = field(default_factory=list)
    # creator -> event time of the follow, oldest first (``UserModel.learn_follow``)
    follows: dict[str, float] = field(default_factory=dict)
    # creator -> [gifts, comments, long watches, engagement weight, last event time] of the user's strong
    # engagement with that creator's items: the creators feed proposes them and says why
    creators: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "long_term": self.long_term,
            "short_term": self.short_term,
            "last_ts": self.last_ts,
            "n_events": self.n_events,
            "counts": dict(self.counts),
            "recent": [[r.item_id, r.type.value, r.ts, r.weight] for r in self.recent],
            "applied_event_ids": list(self.applied_event_ids),
            "follows": dict(self.follows),
            "creators": {c: list(v) for c, v in self.creators.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> UserState:
        if not data:
            return cls()
        return cls(
            long_term=data.get("long_term"),
            short_term=data.get("short_term"),
            last_ts=float(data.get("last_ts", 0.0)),
            n_events=int(data.get("n_events", 0)),
            counts=dict(data.get("counts", {})),
            recent=[RecentItem(i, InteractionType(t), float(ts), float(w)) for i, t, ts, w in data.get("recent", [])],
            applied_event_ids=list(data.get("applied_event_ids", [])),
            follows={str(c): float(ts) for c, ts in data.get("follows", {}).items()},
            creators={str(c): [float(x) for x in v] for c, v in data.get("creators", {}).items()},
        )

    @property
    def seen_items(self) -> set[str]:
        return {r.item_id for r in self.recent}

    def has_applied(self, event_id: str) -> bool:
        return event_id in self.applied_event_ids


@dataclass(frozen=True)
class UserModelParams:
    event_weights: Mapping[InteractionType, float]
    half_life_s: float = 3 * 24 * 3600.0
    session_decay: float = 1.0 - DEFAULT_LEARNING_RATE
    watch_seconds_full: float = 30.0
    recent_items: int = 50
    dedupe_window: int = 512
    max_follows: int = 5_000  # a user's follows kept (oldest dropped beyond)
    max_creators: int = 200  # creators whose engagement is kept per user (least recent dropped beyond)


def event_weight(event: Interaction, params: UserModelParams) -> float:
    """How hard this event pulls the taste toward (positive) or away from (negative) its item."""
    base = params.event_weights.get(event.type, 0.0)
    if event.type is InteractionType.view and event.value > 0:
        # A partial watch counts partially; a full (or longer) watch counts fully.
        return base * min(1.0, event.value / params.watch_seconds_full)
    if event.type is InteractionType.gift and event.value > 0:
        # Bigger gifts count more, with diminishing returns.
        return base * (1.0 + math.log1p(event.value) / 4.0)
    return base


def normalized(v: np.ndarray) -> np.ndarray:
    flat = v.ravel()
    n = float(np.sqrt(flat.dot(flat)))  # ``np.linalg.norm(v)`` without its checks: ranked users pay it 4x
    return v / n if n > 0 else v


class UserModel:
    """Pure online user model: ``learn_one`` updates a state, ``query_vector`` reads it."""

    def __init__(self, params: UserModelParams, long_weight: float = 0.6) -> None:
        self.params = params
        self.long_weight = long_weight

    def learn_one(
        self, state: UserState, event: Interaction, item_vector: Sequence[float] | None, creator_id: str = ""
    ) -> bool:
        """Apply one interaction in place; returns False (and changes nothing) for a replayed event.

        ``creator_id``: who published the item; a gift, a comment or a long watch counts toward that
        creator's engagement (``UserState.creators``)."""
        if state.has_applied(event.event_id):
            return False
        p = self.params
        weight = event_weight(event, p)
        if item_vector is not None and weight != 0.0:
            v = np.asarray(item_vector, dtype=np.float64)
            dt = max(0.0, event.ts - state.last_ts) if state.long_term is not None else 0.0
            decay = 0.5 ** (dt / p.half_life_s)
            long_term = np.asarray(state.long_term, dtype=np.float64) if state.long_term is not None else 0.0
            short_term = np.asarray(state.short_term, dtype=np.float64) if state.short_term is not None else 0.0
            state.long_term = (decay * long_term + weight * v).tolist()
            state.short_term = (p.session_decay * short_term + weight * v).tolist()
        state.last_ts = max(state.last_ts, event.ts)
        state.n_events += 1
        state.counts[event.type.value] = state.counts.get(event.type.value, 0) + 1
        state.recent = [r for r in state.recent if r.item_id != event.item_id]
        state.recent.append(RecentItem(event.item_id, event.type, event.ts, weight))
        del state.recent[: -p.recent_items]
        state.applied_event_ids.append(event.event_id)
        del state.applied_event_ids[: -p.dedupe_window]
        if creator_id and creator_id != event.user_id:
            self._engage(state, event, creator_id, weight)
        return True

    def _engage(self, state: UserState, event: Interaction, creator_id: str, weight: float) -> None:
        slot = {InteractionType.gift: 0, InteractionType.comment: 1}.get(event.type)
        if slot is None and event.type is InteractionType.view and event.value >= self.params.watch_seconds_full:
            slot = 2
        if slot is None:
            return
        row = state.creators.pop(creator_id, [0.0, 0.0, 0.0, 0.0, 0.0])
        row[slot] += 1
        row[3] += max(weight, 0.0)
        row[4] = max(row[4], event.ts)
        state.creators[creator_id] = row  # most recent last
        while len(state.creators) > self.params.max_creators:
            del state.creators[next(iter(state.creators))]

    def learn_follow(self, state: UserState, follow: Follow) -> bool:
        """Follow or unfollow a creator in place; False (nothing changes) for a replayed event id.

        A creator never seen before is kept: their content may come later. Unfollowing one not followed
        changes only the counts."""
        if state.has_applied(follow.event_id):
            return False
        if follow.on:
            state.follows.pop(follow.creator_id, None)
            state.follows[follow.creator_id] = follow.ts
            while len(state.follows) > self.params.max_follows:
                del state.follows[next(iter(state.follows))]
        else:
            state.follows.pop(follow.creator_id, None)
        kind = InteractionType.follow if follow.on else InteractionType.unfollow
        state.last_ts = max(state.last_ts, follow.ts)
        state.n_events += 1
        state.counts[kind.value] = state.counts.get(kind.value, 0) + 1
        state.applied_event_ids.append(follow.event_id)
        del state.applied_event_ids[: -self.params.dedupe_window]
        return True

    def query_vector(self, state: UserState) -> np.ndarray | None:
        """The retrieval query: a blend of long-term taste and the current session, unit length."""
        if state.long_term is None:
            return None
        long_term = normalized(np.asarray(state.long_term, dtype=np.float32))
        short_term = normalized(np.asarray(state.short_term, dtype=np.float32))
        q = normalized(self.long_weight * long_term + (1.0 - self.long_weight) * short_term)
        return q if float(np.sqrt(q.dot(q))) > 0 else None


def state_differences(
    expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]], tol: float = 1e-6
) -> list[str]:
    """Every way two snapshots of user state (user id -> ``UserState.to_dict()``) differ; empty if equal.

    Why: crash recovery is proven by comparing a run with restarts against a clean run of the same
    event stream. Event bookkeeping (applied ids, counts, event times) must match exactly, as a lost or
    doubled event shows there first; the taste vectors are compared within ``tol`` (relative to their
    norm), since the same sums in the same order give the same floats and any real drift is far larger.
    """
    out = [f"user {u}: missing" for u in sorted(set(expected) - set(actual))]
    out += [f"user {u}: not expected" for u in sorted(set(actual) - set(expected))]
    for user in sorted(set(expected) & set(actual)):
        out += [f"user {user}: {d}" for d in _user_differences(expected[user], actual[user], tol)]
    return out


def _user_differences(expected: Mapping[str, Any], actual: Mapping[str, Any], tol: float) -> list[str]:
    out: list[str] = []
    want, got = list(expected.get("applied_event_ids", [])), list(actual.get("applied_event_ids", []))
    if missing := sorted(set(want) - set(got)):
        out.append(f"events not applied {missing}")
    if extra := sorted(set(got) - set(want)):
        out.append(f"events not in the stream applied {extra}")
    if twice := sorted({e for e in got if got.count(e) > 1}):
        out.append(f"events applied twice {twice}")
    if not out and want != got:
        out.append("events applied in another order")
    for key in ("n_events", "counts", "last_ts", "follows"):
        if expected.get(key) != actual.get(key):
            out.append(f"{key} {actual.get(key)!r} != {expected.get(key)!r}")
    want_recent, got_recent = expected.get("recent", []), actual.get("recent", [])
    if [r[:3] for r in want_recent] != [r[:3] for r in got_recent] or not np.allclose(
        [r[3] for r in want_recent], [r[3] for r in got_recent], rtol=tol, atol=0.0
    ):
        out.append("recent items differ")
    for key in ("long_term", "short_term"):
        a, b = expected.get(key), actual.get(key)
        if (a is None) != (b is None) or (a is not None and len(a) != len(b)):
            out.append(f"{key} shape differs")
        elif a is not None:
            va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            drift = float(np.linalg.norm(va - vb))
            if drift > tol * max(1.0, float(np.linalg.norm(va))):
                out.append(f"{key} drifted by {drift:.3g}")
    return out
