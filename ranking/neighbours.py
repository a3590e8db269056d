"""Sequence neighbours (session-kNN) learned online: users whose histories overlap the current one.

Why: co-engagement links an item only with the few items just before it, so it misses what a user's
whole recent history says. Here every positive interaction appends the item to its user's (bounded)
sequence and the user to the item's (bounded) list of recent users; to score, the users who share
the most (recency-weighted) items with the current user are taken as neighbours and their items
are scored by the neighbours' similarity. Memory stays bounded by ``max_users x sequence`` plus
``items x users_per_item`` however long the stream runs.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NeighbourParams:
    sequence: int = 20  # items remembered per user
    users_per_item: int = 200  # most recent users remembered per item
    max_users: int = 1_000_000
    neighbours: int = 50
    recent: int = 10  # the current user's items that look for neighbours
    recency_decay: float = 0.8


class SequenceNeighbours:
    def __init__(self, params: NeighbourParams | None = None) -> None:
        self.params = params or NeighbourParams()
        self.sequences: OrderedDict[str, deque[str]] = OrderedDict()
        self.users_of: dict[str, deque[str]] = {}

    def learn_one(self, user: str, item: str, weight: float = 1.0) -> None:
        """Remember a positive interaction (non-positive weights are ignored)."""
        if weight <= 0:
            return
        p = self.params
        seq = self.sequences.pop(user, None)
        if seq is None:
            seq = deque(maxlen=p.sequence)
        self.sequences[user] = seq  # most recently active users last
        seq.append(item)
        users = self.users_of.get(item)
        if users is None:
            users = self.users_of[item] = deque(maxlen=p.users_per_item)
        if not users or users[-1] != user:
            users.append(user)
        while len(self.sequences) > p.max_users:
            self.sequences.popitem(last=False)

    def scores(self, recent: Sequence[str], exclude_user: str | None = None) -> dict[str, float]:
        """Item scores from the nearest sequences, scaled so the best item is 1.0 (``recent`` oldest first)."""
        p = self.params
        weights: dict[str, float] = {}
        for distance, item in enumerate(reversed(recent[-p.recent :])):
            weights.setdefault(item, p.recency_decay**distance)
        sim: dict[str, float] = {}
        for item, w in weights.items():
            for other in set(self.users_of.get(item, ())):
                if other != exclude_user:
                    sim[other] = sim.get(other, 0.0) + w
        if not sim:
            return {}
        nearest = sorted(sim.items(), key=lambda kv: (-kv[1], kv[0]))[: p.neighbours]
        out: dict[str, float] = {}
        for other, s in nearest:
            for item in set(self.sequences.get(other, ())):
                out[item] = out.get(item, 0.0) + s
        best = max(out.values())
        return {i: v / best for i, v in out.items()}
