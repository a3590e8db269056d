"""Creators and streamers to follow (the ``creators`` feed), and the follow graph pushed into the item feeds.

Why its own module: the creators feed ranks creator ids, not indexed items, so it does not go through
the item ranker; but its shared models follow the one signal contract (``ranking.signal``), so the
trainer learns them, snapshots ship them and ``tests/unit/test_signal_contract.py`` checks them:

- ``creators`` (:class:`CreatorVectorsSignal`): each creator's vector, a decayed mean of their items'
  vectors, updated as content is indexed and as live streams refresh; searched like items, by inner
  product with the user's taste. It also keeps each creator's newest items (live first, "new from X").
- ``cofollow`` (:class:`CoFollowSignal`): "people who follow X also follow Y" counts and, per creator,
  their followers (bounded): the fan-out list of a new upload or a stream going live.
- ``engaged`` (:class:`EngagedCreatorsSignal`): the creators of the items the user gifted, commented
  on or watched to the end (kept in the user's state; nothing shared).

Ranking (:func:`rank_creators`) merges their proposals, drops followed creators and the user, scores
with a fixed blend of the columns (``CreatorParams.weights``), puts creators live now first when they
are among the user's best ``live_first_pool × top_k``, and says why. All of it is arrays per batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.domain import Feed, InteractionType, RecommendedItem
from ranking.index import IndexedItem
from ranking.signal import Candidates, Observation, RankRequest, Signal, SignalView, str_array
from ranking.signals import BaseSignal, NoView

ROW_OVERHEAD = 160  # bytes of dict/list bookkeeping per kept entry (ids, rows), an upper estimate


@dataclass(frozen=True)
class CreatorParams:
    half_life_s: float = 14 * 24 * 3600.0  # a creator's vector follows their recent items
    refresh_weight: float = 0.3  # a live refresh counts as this much of a new item
    recent_items: int = 8  # each creator's newest items kept (live now, new from followed creators)
    follow_seeds: int = 20  # a user's latest follows used as co-follow seeds
    taste_candidates: int = 50
    co_candidates: int = 50
    engaged_candidates: int = 20
    popular_candidates: int = 10  # most-followed creators, for users with nothing else yet
    top_k: int = 10
    live_first_pool: int = 2  # live creators among the best live_first_pool × top_k move to the front
    # the fixed blend of the creators feed (a learned creator ranker is not built yet)
    max_neighbours: int = 500  # co-follow counts kept per creator (the largest)
    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "creators.sim": 1.0,
            "cofollow.score": 0.5,
            "cofollow.followers": 0.05,
            "engaged.score": 0.8,
        }
    )
    followed_window_s: float = 24 * 3600.0  # an item of a followed creator this recent is pushed first
    followed_slots: int = 2  # at most this many such items at the top of an item list


# --- creator vectors -------------------------------------------------------------------------------
class CreatorVectors:
    """Per creator: the decayed sum of their items' vectors and its weight (the mean is sum / weight),
    and their newest items. Rows in one array, so a batch of taste queries is one matrix product."""

    def __init__(self, params: CreatorParams, max_creators: int) -> None:
        self.params = params
        self.max_creators = max(1, max_creators)
        self.row: dict[str, int] = {}
        self.ids: list[str] = []
        self.free: list[int] = []
        self.sums = np.zeros((0, 0), np.float32)
        self.weights = np.zeros(0, np.float64)
        self.last = np.zeros(0, np.float64)
        self.unit = np.zeros((0, 0), np.float32)  # sums, each row of unit length: what search reads
        # creator -> [(item_id, feed, created_at, title)], newest last
        self.recent: dict[str, list[tuple[str, str, float, str]]] = {}

    def __len__(self) -> int:
        return len(self.row)

    def _row_for(self, creator: str, dim: int) -> int:
        if creator in self.row:
            return self.row[creator]
        if self.sums.shape[1] != dim:
            if len(self.row):
                raise ValueError(f"creator vectors have dim {self.sums.shape[1]}, got {dim}")
            self.ids, self.free = [], []
            self.sums = np.zeros((0, dim), np.float32)
            self.unit = np.zeros((0, dim), np.float32)
            self.weights = np.zeros(0, np.float64)
            self.last = np.zeros(0, np.float64)
        if len(self.row) >= self.max_creators:  # the least recently updated creator makes room
            used = np.fromiter(self.row.values(), np.int64)
            self.drop(self.ids[int(used[np.argmin(self.last[used])])])
        if self.free:
            r = self.free.pop()
            self.ids[r] = creator
        else:
            r = len(self.ids)
            self.ids.append(creator)
            if r >= len(self.sums):
                grow = max(16, len(self.sums))
                self.sums = np.vstack([self.sums, np.zeros((grow, dim), np.float32)])
                self.unit = np.vstack([self.unit, np.zeros((grow, dim), np.float32)])
                self.weights = np.concatenate([self.weights, np.zeros(grow)])
                self.last = np.concatenate([self.last, np.zeros(grow)])
        self.sums[r] = 0.0
        self.unit[r] = 0.0
        self.weights[r] = 0.0
        self.last[r] = -math.inf
        self.row[creator] = r
        return r

    def add(self, creator: str, vector: np.ndarray, ts: float, weight: float = 1.0) -> None:
        v = np.asarray(vector, np.float32)
        r = self._row_for(creator, len(v))
        last = self.last[r]
        decay = 0.5 ** (max(0.0, ts - last) / self.params.half_life_s) if math.isfinite(last) else 0.0
        self.sums[r] = decay * self.sums[r] + weight * v
        self.weights[r] = decay * self.weights[r] + weight
        self.last[r] = max(ts, last) if math.isfinite(last) else ts
        norm = float(np.linalg.norm(self.sums[r]))
        self.unit[r] = self.sums[r] / norm if norm > 0 else 0.0

    def learn_items(self, items: Sequence[IndexedItem], refresh: bool = False) -> None:
        """New items (``refresh``: a live stream's refreshed vector) move their creators' vectors."""
        for it in items:
            if not it.creator_id:
                continue
            self.add(it.creator_id, it.vector, it.created_at, self.params.refresh_weight if refresh else 1.0)
            if refresh:
                continue
            kept = [r for r in self.recent.get(it.creator_id, []) if r[0] != it.item_id]
            kept.append((it.item_id, it.feed.value, float(it.created_at), it.title))
            kept.sort(key=lambda r: r[2])
            self.recent.pop(it.creator_id, None)
            self.recent[it.creator_id] = kept[-self.params.recent_items :]

    def drop(self, key: str) -> None:
        """Forget a creator, or (an item id) that item from its creator's newest items."""
        r = self.row.pop(key, None)
        if r is not None:
            self.free.append(r)
            self.sums[r] = 0.0
            self.unit[r] = 0.0
            self.weights[r] = 0.0
            self.last[r] = -math.inf
            self.recent.pop(key, None)
            return
        for creator, rows in list(self.recent.items()):
            if any(i == key for i, *_ in rows):
                self.recent[creator] = [x for x in rows if x[0] != key]

    def search(self, queries: np.ndarray, limit: int) -> list[list[tuple[str, float]]]:
        """Each query's ``limit`` most similar creators (inner product with the unit mean vectors)."""
        if not len(self.row) or not len(queries) or limit <= 0:
            return [[] for _ in range(len(queries))]
        n = len(self.ids)  # rows in use or free: free rows are masked, no copy of the matrix is made
        scores = np.asarray(queries, np.float32) @ self.unit[:n].T
        if self.free:
            scores[:, self.free] = -np.inf
        k = min(limit, len(self.row))
        out = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.lexsort((top, -row[top]))]
            out.append([(self.ids[int(j)], float(row[j])) for j in top])
        return out

    def similarity(self, query: np.ndarray | None, creators: Sequence[str]) -> np.ndarray:
        if query is None or not len(self.row) or self.unit.shape[1] != len(query):
            return np.zeros(len(creators), np.float32)
        rows = [self.row.get(c, -1) for c in creators]
        out = self.unit[[max(r, 0) for r in rows]] @ np.asarray(query, np.float32) if rows else np.zeros(0)
        return np.where(np.asarray(rows) >= 0, out, 0.0).astype(np.float32)

    def memory_bytes(self) -> int:
        arrays = self.sums.nbytes + self.unit.nbytes + self.weights.nbytes + self.last.nbytes
        recent = sum(len(rows) for rows in self.recent.values()) * ROW_OVERHEAD
        return arrays + recent + (len(self.ids) + len(self.recent)) * ROW_OVERHEAD


class CreatorVectorsView(NoView):
    def __init__(self, request: RankRequest, model: CreatorVectors, params: CreatorParams) -> None:
        super().__init__(request)
        self.model = model
        self.params = params

    def candidates(self, limit: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in self.request.users]
        if self.request.feed is not Feed.creators:
            return out
        wanted = [n for n, u in enumerate(self.request.users) if u.query is not None]
        if not wanted:
            return out
        longest = max(len(self.request.users[n].follows) for n in wanted)
        queries = np.stack([np.asarray(self.request.users[n].query, np.float32) for n in wanted])
        for n, hits in zip(wanted, self.model.search(queries, limit + longest + 1), strict=True):
            u = self.request.users[n]
            out[n] = [c for c, _ in hits if c not in u.follows and c != u.user_id][:limit]
        return out

    def features(self, cands: Candidates) -> np.ndarray:
        out = np.zeros((len(cands), 1), np.float32)
        if self.request.feed is not Feed.creators:
            return out
        for n, u in enumerate(self.request.users):
            rows = cands.rows_of(n)
            out[rows.start : rows.stop, 0] = self.model.similarity(u.query, cands.items[rows.start : rows.stop])
        return out

    def reason(self, n: int, item_id: str) -> str | None:
        titles = [t for _, _, _, t in self.model.recent.get(item_id, [])]
        return f"posts like “{titles[-1][:60]}”, close to your taste" if titles else "close to your taste"

    def live_now(self, creator: str) -> IndexedItem | None:
        """The creator's stream that is live now (read from the catalogue: the source of truth)."""
        ids = [i for i, feed, _, _ in self.model.recent.get(creator, []) if feed == Feed.live.value]
        if not ids:
            return None
        known = self.request.catalogue.get(ids)
        live = [known[i] for i in reversed(ids) if i in known and known[i].feed is Feed.live and known[i].is_live]
        return live[0] if live else None


class CreatorVectorsSignal(BaseSignal):
    """Creator vectors (``CreatorVectors``) behind the signal contract; learns content, not interactions."""

    name = "creators"
    columns = ("sim",)

    def __init__(self, params: CreatorParams | None = None, max_creators: int = 200_000, **kw: Any) -> None:
        super().__init__(**kw)
        self.params = params or CreatorParams()
        self.max_creators = max_creators
        self.model = CreatorVectors(self.params, self._fits(max_creators, 384))

    def _fits(self, wanted: int, dim: int) -> int:
        # two float32 rows and their bookkeeping per creator, within three quarters of the budget
        per = 2 * 4 * dim + 16 + ROW_OVERHEAD * (2 + self.params.recent_items)
        return max(1, min(wanted, int(self.max_bytes * 3 // 4 // per)))

    def learn_content(self, items: Sequence[IndexedItem]) -> None:
        with_creator = [it for it in items if it.creator_id]
        if with_creator and not len(self.model):  # the first vectors fix the dimension: size the bound to it
            self.model.max_creators = self._fits(self.max_creators, len(with_creator[0].vector))
        self.model.learn_items(with_creator)

    def learn_refresh(self, items: Sequence[IndexedItem]) -> None:
        self.model.learn_items(items, refresh=True)

    def forget(self, item_id: str) -> None:
        self.model.drop(item_id)

    def memory_bytes(self) -> int:
        return super().memory_bytes() + self.model.memory_bytes()

    def read(self, request: RankRequest) -> CreatorVectorsView:
        return CreatorVectorsView(request, self.model, self.params)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        m = self.model
        order = sorted(m.row, key=m.row.__getitem__)
        rows = np.asarray([m.row[c] for c in order], np.int64)
        recent = [(c, *r) for c, rs in m.recent.items() for r in rs]
        return {"max_creators": m.max_creators, "dim": int(m.sums.shape[1])}, {
            "creator": str_array(order),
            "sums": m.sums[rows] if len(rows) else np.zeros((0, m.sums.shape[1]), np.float32),
            "weights": m.weights[rows] if len(rows) else np.zeros(0),
            "last": m.last[rows] if len(rows) else np.zeros(0),
            "recent_creator": str_array(r[0] for r in recent),
            "recent_item": str_array(r[1] for r in recent),
            "recent_feed": str_array(r[2] for r in recent),
            "recent_created": np.asarray([r[3] for r in recent], np.float64),
            "recent_title": str_array(r[4] for r in recent),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        m = CreatorVectors(self.params, int(meta["max_creators"]))
        dim, n = int(meta["dim"]), len(arrays["creator"])
        m.ids = arrays["creator"].tolist()
        m.row = {c: r for r, c in enumerate(m.ids)}
        m.sums = np.array(arrays["sums"], np.float32).reshape(n, dim)
        m.weights = np.array(arrays["weights"], np.float64)
        m.last = np.array(arrays["last"], np.float64)
        norms = np.linalg.norm(m.sums, axis=1, keepdims=True) if n else np.zeros((0, 1))
        m.unit = np.divide(m.sums, norms, out=np.zeros_like(m.sums), where=norms > 0)
        for c, i, f, t, title in zip(
            arrays["recent_creator"].tolist(),
            arrays["recent_item"].tolist(),
            arrays["recent_feed"].tolist(),
            arrays["recent_created"].tolist(),
            arrays["recent_title"].tolist(),
            strict=True,
        ):
            m.recent.setdefault(c, []).append((i, f, float(t), title))
        self.model = m


# --- co-follow -------------------------------------------------------------------------------------
class CoFollowView(NoView):
    def __init__(self, request: RankRequest, signal: CoFollowSignal) -> None:
        super().__init__(request)
        self.s = signal
        self.scores: list[dict[str, float]] = []
        self.because: list[dict[str, str]] = []
        seeds_n = signal.params.follow_seeds
        for u in request.users:
            scores: dict[str, float] = {}
            best: dict[str, tuple[float, str]] = {}
            if request.feed is Feed.creators:
                for x in list(u.follows)[-seeds_n:]:
                    for y, c in signal.co.get(x, {}).items():
                        scores[y] = scores.get(y, 0.0) + c
                        if c > best.get(y, (0.0, ""))[0]:
                            best[y] = (c, x)
            self.scores.append(scores)
            self.because.append({y: x for y, (_, x) in best.items()})

    def candidates(self, limit: int) -> list[list[str]]:
        out: list[list[str]] = []
        popular = self.s.popular(self.s.params.popular_candidates + 50) if self.request.feed is Feed.creators else []
        for u, scores in zip(self.request.users, self.scores, strict=True):
            order = sorted(scores, key=lambda c: (-scores[c], c))
            order += [c for c in popular if c not in scores][: self.s.params.popular_candidates]
            out.append([c for c in order if c not in u.follows and c != u.user_id][:limit])
        return out

    def features(self, cands: Candidates) -> np.ndarray:
        out = np.zeros((len(cands), 2), np.float32)
        if self.request.feed is not Feed.creators or not len(cands):
            return out
        users = cands.user.tolist()
        out[:, 0] = [math.log1p(self.scores[n].get(c, 0.0)) for n, c in zip(users, cands.items, strict=True)]
        out[:, 1] = [math.log1p(len(self.s.followers.get(c, ()))) for c in cands.items]
        return out

    def reason(self, n: int, item_id: str) -> str | None:
        x = self.because[n].get(item_id)
        return f"people who follow {x} also follow them" if x else None


class CoFollowSignal(BaseSignal):
    """Co-follow counts ("people who follow X also follow Y") and each creator's followers, learned from
    follow and unfollow observations (``Observation.context``: the user's follows before the event)."""

    name = "cofollow"
    columns = ("score", "followers")

    def __init__(self, params: CreatorParams | None = None, max_followers: int = 10_000, **kw: Any) -> None:
        super().__init__(**kw)
        self.params = params or CreatorParams()
        self.max_followers = max_followers  # per creator: the fan-out list of a new upload
        self.co: dict[str, dict[str, float]] = {}
        self.followers: dict[str, dict[str, None]] = {}  # creator -> followers, oldest first
        self._bytes = 0
        self._popular: tuple[int, list[str]] = (-1, [])  # (mutation count it was computed at, order)
        self._mutations = 0

    def _learn(self, events: Sequence[Observation]) -> None:
        for ev in events:
            if ev.type not in (InteractionType.follow, InteractionType.unfollow) or ev.feed is not Feed.creators:
                continue
            self._mutations += 1
            y, on = ev.item_id, ev.type is InteractionType.follow
            seeds = [x for x in ev.context[-self.params.follow_seeds :] if x != y]
            fans = self.followers.setdefault(y, {})
            if on:
                if ev.user_id in fans:
                    continue
                fans[ev.user_id] = None
                self._bytes += ROW_OVERHEAD
                while len(fans) > self.max_followers:
                    del fans[next(iter(fans))]
                    self._bytes -= ROW_OVERHEAD
            else:
                if ev.user_id not in fans:
                    continue
                del fans[ev.user_id]
                self._bytes -= ROW_OVERHEAD
            step = 1.0 if on else -1.0
            for x in seeds:
                self._bump(x, y, step)
                self._bump(y, x, step)
        self._bound()

    def _bump(self, a: str, b: str, step: float) -> None:
        row = self.co.setdefault(a, {})
        value = row.get(b, 0.0) + step
        if value > 0:
            self._bytes += ROW_OVERHEAD if b not in row else 0
            row[b] = value
        elif b in row:
            del row[b]
            self._bytes -= ROW_OVERHEAD
        del self.co[a]  # re-inserted last (most recently touched), or gone when empty
        if len(row) > self.params.max_neighbours * 5 // 4:  # keep the largest counts (amortised)
            kept = sorted(row.items(), key=lambda x: (-x[1], x[0]))[: self.params.max_neighbours]
            self._bytes -= ROW_OVERHEAD * (len(row) - len(kept))
            row = dict(kept)
        if row:
            self.co[a] = row

    def _bound(self) -> None:
        """Drop the least recently touched creators' rows until under the budget."""
        while self.memory_bytes() > self.max_bytes and (self.co or self.followers):
            victim = next(iter(self.co)) if self.co else next(iter(self.followers))
            self.forget(victim)

    def popular(self, limit: int) -> list[str]:
        """The most followed creators (the order is recomputed only after the counts changed)."""
        if self._popular[0] != self._mutations:
            order = sorted(self.followers, key=lambda c: (-len(self.followers[c]), c))[:1_000]
            self._popular = (self._mutations, order)
        return self._popular[1][:limit]

    def followers_of(self, creator: str, limit: int) -> list[str]:
        """Up to ``limit`` followers of ``creator``, most recent first (the fan-out of a new upload)."""
        fans = list(self.followers.get(creator, {}))
        return fans[::-1][:limit]

    def forget(self, item_id: str) -> None:
        self._mutations += 1
        row = self.co.pop(item_id, {})
        self._bytes -= ROW_OVERHEAD * len(row)
        for other in row:
            back = self.co.get(other)
            if back is not None and back.pop(item_id, None) is not None:
                self._bytes -= ROW_OVERHEAD
                if not back:
                    del self.co[other]
        self._bytes -= ROW_OVERHEAD * len(self.followers.pop(item_id, {}))

    def memory_bytes(self) -> int:
        return super().memory_bytes() + 64 + self._bytes + ROW_OVERHEAD * (len(self.co) + len(self.followers))

    def read(self, request: RankRequest) -> CoFollowView:
        return CoFollowView(request, self)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        pairs = [(a, b, v) for a, row in self.co.items() for b, v in row.items()]
        fans = [(c, u) for c, us in self.followers.items() for u in us]
        return {"max_followers": self.max_followers}, {
            "a": str_array(p[0] for p in pairs),
            "b": str_array(p[1] for p in pairs),
            "count": np.asarray([p[2] for p in pairs], np.float64),
            "creator": str_array(f[0] for f in fans),
            "follower": str_array(f[1] for f in fans),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.co, self.followers, self._bytes = {}, {}, 0
        self._mutations += 1
        for a, b, v in zip(arrays["a"].tolist(), arrays["b"].tolist(), arrays["count"].tolist(), strict=True):
            self.co.setdefault(a, {})[b] = float(v)
            self._bytes += ROW_OVERHEAD
        for c, u in zip(arrays["creator"].tolist(), arrays["follower"].tolist(), strict=True):
            self.followers.setdefault(c, {})[u] = None
            self._bytes += ROW_OVERHEAD


# --- engaged creators ------------------------------------------------------------------------------
class EngagedView(NoView):
    def candidates(self, limit: int) -> list[list[str]]:
        if self.request.feed is not Feed.creators:
            return [[] for _ in self.request.users]
        out = []
        for u in self.request.users:
            order = sorted(u.creators, key=lambda c: (-u.creators[c][3], c))
            out.append([c for c in order if c not in u.follows and c != u.user_id][:limit])
        return out

    def features(self, cands: Candidates) -> np.ndarray:
        out = np.zeros((len(cands), 1), np.float32)
        if self.request.feed is not Feed.creators or not len(cands):
            return out
        users = self.request.users
        out[:, 0] = [
            math.log1p(users[n].creators[c][3]) if c in users[n].creators else 0.0
            for n, c in zip(cands.user.tolist(), cands.items, strict=True)
        ]
        return out

    def reason(self, n: int, item_id: str) -> str | None:
        row = self.request.users[n].creators.get(item_id)
        if row is None:
            return None
        gifts, comments, watches = int(row[0]), int(row[1]), int(row[2])
        if gifts:
            return f"you gifted {gifts} of their stream{'s' if gifts > 1 else ''}"
        if comments:
            return f"you commented on {comments} of their post{'s' if comments > 1 else ''}"
        return f"you watched {watches} of their video{'s' if watches > 1 else ''} to the end"


class EngagedCreatorsSignal(BaseSignal):
    """The creators of the items a user engaged with strongly (``UserState.creators``): per user, not shared."""

    name = "engaged"
    columns = ("score",)

    def read(self, request: RankRequest) -> EngagedView:
        return EngagedView(request)


def default_creator_signals(params: CreatorParams) -> list[Signal]:
    return [
        CreatorVectorsSignal(params, max_bytes=512 << 20),
        CoFollowSignal(params, max_bytes=512 << 20),
        EngagedCreatorsSignal(max_bytes=1 << 20),
    ]


# --- ranking the creators feed ---------------------------------------------------------------------
def merge_creators(request: RankRequest, proposals: Sequence[Sequence[Sequence[str]]]) -> Candidates:
    """Each user's proposals of every signal, first proposal order kept, each row marking its proposers."""
    users: list[int] = []
    items: list[str] = []
    marks: list[set[int]] = []
    offsets = [0]
    for n, u in enumerate(request.users):
        at: dict[str, int] = {}
        for s, per_signal in enumerate(proposals):
            for c in per_signal[n]:
                if c in u.follows or c == u.user_id:
                    continue
                if c not in at:
                    at[c] = len(items)
                    users.append(n)
                    items.append(c)
                    marks.append(set())
                marks[at[c]].add(s)
        offsets.append(len(items))
    sources = np.zeros((len(items), len(proposals)), bool)
    for r, m in enumerate(marks):
        sources[r, list(m)] = True
    return Candidates(
        user=np.asarray(users, np.int64),
        items=items,
        offsets=np.asarray(offsets, np.int64),
        vectors=np.zeros((len(items), 0), np.float32),
        created_at=np.zeros(len(items)),
        sources=sources,
    )


def rank_creators(
    signals: Sequence[Signal], request: RankRequest, params: CreatorParams
) -> list[list[RecommendedItem]]:
    """The creators feed for a batch of users: candidates of every creator signal, blended, live first."""
    views: list[SignalView] = [s.read(request) for s in signals]
    limits = {
        "creators": params.taste_candidates,
        "cofollow": params.co_candidates + params.popular_candidates,
        "engaged": params.engaged_candidates,
    }
    proposals = [v.candidates(limits.get(s.name, 0)) for s, v in zip(signals, views, strict=True)]
    cands = merge_creators(request, proposals)
    columns = [f"{s.name}.{c}" for s in signals for c in s.columns]
    features = (
        np.concatenate(
            [
                np.asarray(v.features(cands), np.float32).reshape(len(cands), len(s.columns))
                for s, v in zip(signals, views, strict=True)
            ],
            axis=1,
        )
        if signals
        else np.zeros((len(cands), 0), np.float32)
    )
    weights = np.asarray([params.weights.get(c, 0.0) for c in columns], np.float32)
    contrib = features * weights
    scores = contrib.sum(axis=1)
    groups = [[k for k, c in enumerate(columns) if c.startswith(f"{s.name}.")] for s in signals]
    by_group = np.stack([contrib[:, g].sum(axis=1) for g in groups], axis=1) if groups else contrib
    vectors_view = next((v for v in views if isinstance(v, CreatorVectorsView)), None)
    out: list[list[RecommendedItem]] = []
    for n in range(len(request.users)):
        rows = np.arange(int(cands.offsets[n]), int(cands.offsets[n + 1]))
        if not len(rows):
            out.append([])
            continue
        order = rows[np.lexsort((rows, -scores[rows]))]
        pool = order[: params.live_first_pool * params.top_k]
        live = {int(r): vectors_view.live_now(cands.items[r]) for r in pool} if vectors_view is not None else {}
        first = [int(r) for r in pool if live.get(int(r)) is not None]
        rest = [int(r) for r in order if live.get(int(r)) is None]
        items: list[RecommendedItem] = []
        for r in (first + rest)[: params.top_k]:
            creator = cands.items[r]
            reason = None
            for g in np.argsort(-by_group[r], kind="stable"):
                if by_group[r, g] <= 0:
                    break
                reason = views[int(g)].reason(n, creator)
                if reason:
                    break
            reason = reason or "popular with people who follow creators"
            stream = live.get(r)
            if stream is not None:
                reason = f"live now: “{stream.title[:60]}” · {reason}"
            items.append(RecommendedItem(item_id=creator, score=round(float(scores[r]), 6), reason=reason))
        out.append(items)
    return out


# --- the follow graph in the item feeds ------------------------------------------------------------
def followed_reason(feed: Feed, creator: str) -> str:
    if feed is Feed.live:
        return f"live now: {creator}, whom you follow"
    return f"new from {creator}, whom you follow"


def followed_items(
    model: CreatorVectors,
    follows: Mapping[str, float],
    feed: Feed,
    now: float,
    window_s: float,
) -> list[tuple[str, str, float]]:
    """(item, creator, created_at) of the user's followed creators in ``feed``, newest first: what the
    list must show first. The live feed keeps any stream of theirs (the caller checks it is live now);
    the short-video feed those published within ``window_s``."""
    out = []
    for creator in follows:
        for item_id, f, created, _ in model.recent.get(creator, ()):
            if f != feed.value:
                continue
            if feed is Feed.short_video and now - created > window_s:
                continue
            out.append((item_id, creator, created))
    out.sort(key=lambda x: (-x[2], x[0]))
    return out
