"""What is hot right now, per feed and per live stream, learned online from interactions (pure, bounded).

Why: a user nobody knows yet still needs a feed (cold start), and everyone's feed should notice what
the crowd is engaging with this minute. Time is *event time*: the clock is the newest interaction ts
seen, so the offline evaluation, a replay through Kafka and the live stream all compute the same
figures from the same events, whatever the wall clock says.

``Trending`` keeps, per feed, an exponentially decaying engagement score per item (weighted by event
type: a gift counts more than a view), forgets items not engaged with for ``window_s`` and keeps at
most ``max_items`` per feed. ``LiveVelocity`` counts gifts and comments per live stream over the
last ``window_s`` seconds (a sliding window of timestamps, capped per stream), for the live boost.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any

from ranking.domain import Feed, InteractionType


@dataclass(frozen=True)
class TrendingParams:
    half_life_s: float = 3600.0
    window_s: float = 6 * 3600.0  # items idle for longer leave the trending list
    max_items: int = 5_000  # per feed (up to 25 % more between prunes)


class Trending:
    """Per-feed decaying engagement counts; ``learn_one`` per interaction, ``top`` for a feed."""

    def __init__(self, params: TrendingParams | None = None) -> None:
        self.params = params or TrendingParams()
        self.clock = 0.0
        # feed -> item -> (score at its last update, ts of that update); change it through the methods
        # below, or call ``invalidate`` after writing it directly (``top`` keeps its answer until then)
        self.scores: dict[Feed, dict[str, tuple[float, float]]] = {f: {} for f in Feed}
        self.version = 0
        self._top: dict[tuple[Feed, int], tuple[tuple[int, float], list[tuple[str, float]]]] = {}
        self._memo: dict[Any, tuple[tuple[int, float], dict[str, Any]]] = {}

    def invalidate(self) -> None:
        """The scores changed: ``top`` sorts again on its next call."""
        self.version += 1

    def _decayed(self, score: float, ts: float, now: float) -> float:
        return score * 0.5 ** (max(0.0, now - ts) / self.params.half_life_s)

    def learn_one(self, item_id: str, feed: Feed, weight: float, ts: float) -> None:
        """Add one interaction's weight; non-positive weights (skips) are ignored."""
        self.clock = max(self.clock, ts)
        if weight <= 0:
            return
        row = self.scores[feed]
        self.version += 1
        old = row.get(item_id)
        at = max(ts, old[1]) if old else ts
        previous = self._decayed(old[0], old[1], at) if old else 0.0
        row[item_id] = (previous + self._decayed(weight, ts, at), at)
        if len(row) > self.params.max_items + self.params.max_items // 4:
            self._prune(feed)

    def _prune(self, feed: Feed) -> None:
        """Back down to ``max_items``, weakest first; done with a 25 % slack so the sort is amortised."""
        row = self.scores[feed]
        self.version += 1
        ranked = sorted(row, key=lambda i: self.score(i, feed), reverse=True)  # idle items count 0: go first
        for item_id in ranked[self.params.max_items :]:
            del row[item_id]

    def forget(self, item_id: str) -> None:
        """An ended live stream (or a removed item) leaves every trending list at once."""
        self.version += 1
        for row in self.scores.values():
            row.pop(item_id, None)

    def score(self, item_id: str, feed: Feed) -> float:
        entry = self.scores[feed].get(item_id)
        if entry is None or self.clock - entry[1] > self.params.window_s:
            return 0.0
        return self._decayed(*entry, self.clock)

    def top(self, feed: Feed, limit: int, exclude: Container[str] = ()) -> list[tuple[str, float]]:
        """The ``limit`` hottest items of a feed within the window, hottest first (ties by id).

        Kept ready: without ``exclude`` the answer is remembered until the scores or the clock change
        (a worker serving the trainer's models asks every micro-batch, and they change about once a
        second), instead of decaying and sorting every item on each call."""
        if not exclude:
            key, stamp = (feed, limit), (self.version, self.clock)
            kept = self._top.get(key)
            if kept is None or kept[0] != stamp:
                kept = self._top[key] = (stamp, self._sorted_top(feed, limit, ()))
            return list(kept[1])
        return self._sorted_top(feed, limit, exclude)

    def memo(self, key: Any) -> dict[str, Any]:
        """A dict for values derived per item from the scores as they are now (e.g. a view's feature
        rows), emptied when the scores or the clock change: a serving worker's scores change about
        once a second, and it ranks several micro-batches in between."""
        stamp = (self.version, self.clock)
        kept = self._memo.get(key)
        if kept is None or kept[0] != stamp:
            kept = self._memo[key] = (stamp, {})
        return kept[1]

    def _sorted_top(self, feed: Feed, limit: int, exclude: Container[str]) -> list[tuple[str, float]]:
        """``limit`` best by (-score, id): a heap of plain tuples compared in C, not a sort with a key
        function over every item (up to ~6,000 per feed, again whenever a trainer's delta lands)."""
        clock, window = self.clock, self.params.window_s
        live = (
            (-self._decayed(s, ts, clock), i)
            for i, (s, ts) in self.scores[feed].items()
            if clock - ts <= window and i not in exclude
        )
        return [(i, -s) for s, i in heapq.nsmallest(limit, live)]

    def normalized(self, feed: Feed, limit: int) -> dict[str, float]:
        """Top items scaled so the hottest is 1.0: a bounded bonus that does not depend on traffic volume."""
        top = self.top(feed, limit)
        best = top[0][1] if top else 0.0
        return {i: s / best for i, s in top} if best > 0 else {}


@dataclass(frozen=True)
class LiveVelocityParams:
    window_s: float = 60.0
    max_events_per_item: int = 10_000
    max_items: int = 10_000
    gift_weight: float = 3.0  # one gift is worth this many comments in the boost


VELOCITY_TYPES = (InteractionType.gift, InteractionType.comment)


class LiveVelocity:
    """Gifts and comments per live stream in the last ``window_s`` seconds of event time."""

    def __init__(self, params: LiveVelocityParams | None = None) -> None:
        self.params = params or LiveVelocityParams()
        self.clock = 0.0
        self.events: dict[str, dict[InteractionType, deque[float]]] = {}

    def learn_one(self, item_id: str, kind: InteractionType, ts: float) -> None:
        self.clock = max(self.clock, ts)
        if kind not in VELOCITY_TYPES:
            return
        per_item = self.events.pop(item_id, None) or {t: deque() for t in VELOCITY_TYPES}
        self.events[item_id] = per_item  # re-inserted: dict order is least recently engaged first
        times = per_item[kind]
        times.append(ts)
        while len(times) > self.params.max_events_per_item:
            times.popleft()
        while len(self.events) > self.params.max_items:
            del self.events[next(iter(self.events))]

    def forget(self, item_id: str) -> None:
        self.events.pop(item_id, None)

    def counts(self, item_id: str) -> dict[InteractionType, int]:
        """Gifts and comments within the window ending at the clock."""
        per_item = self.events.get(item_id)
        start = self.clock - self.params.window_s
        if per_item is None:
            return {t: 0 for t in VELOCITY_TYPES}
        out = {}
        for kind, times in per_item.items():
            while times and times[0] < start:
                times.popleft()
            out[kind] = len(times)
        return out

    def velocity(self, item_id: str) -> float:
        """Engagement units in the window: gifts x ``gift_weight`` + comments."""
        c = self.counts(item_id)
        return self.params.gift_weight * c[InteractionType.gift] + c[InteractionType.comment]

    def boosts(self, item_ids: list[str], weight: float) -> Mapping[str, tuple[float, str]]:
        """Score bonus ``weight x log1p(velocity)`` and its reason, for the live items that have one."""
        out: dict[str, tuple[float, str]] = {}
        minutes = self.params.window_s / 60.0
        span = "minute" if minutes == 1 else f"{minutes:g} minutes"
        for item_id in item_ids:
            c = self.counts(item_id)
            v = self.params.gift_weight * c[InteractionType.gift] + c[InteractionType.comment]
            if v <= 0:
                continue
            gifts, comments = c[InteractionType.gift], c[InteractionType.comment]
            if gifts:
                what = f"{gifts} gift{'s' if gifts != 1 else ''}"
            else:
                what = f"{comments} comment{'s' if comments != 1 else ''}"
            out[item_id] = (weight * math.log1p(v), f"live now: {what} in the last {span}")
        return out
