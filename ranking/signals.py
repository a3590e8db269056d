"""Every online ranking signal, each behind the one contract of ``ranking.signal``.

Content-based signals (``taste``, ``content``, ``freshness``) read the catalogue and learn nothing;
the shared models (``co``, ``next_item``, ``neighbours``, ``trending``, ``live``, ``new_items``)
wrap the online learners of their own modules and add what the contract asks: deduplication by event
id, candidates and feature columns for a batch, snapshots, ``forget`` and a memory bound. The
learned ranker (``ranking.ranker``) weighs their columns; no weight lives here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from ranking.coengagement import CoEngagement, CoEngagementParams
from ranking.domain import Feed, InteractionType
from ranking.fresh import NewItems
from ranking.index import Index, IndexedItem
from ranking.neighbours import NeighbourParams, SequenceNeighbours
from ranking.next_item import NextItemLearner, NextItemModel
from ranking.recommender import shorten, trending_reason
from ranking.signal import (
    Candidates,
    EventWindow,
    Observation,
    RankRequest,
    decode_snapshot,
    encode_snapshot,
    looked_up,
    rank_feature,
    str_array,
)
from ranking.trending import LiveVelocity, LiveVelocityParams, Trending, TrendingParams
from ranking.user_state import POSITIVE_VERBS

DEDUPE_WINDOW = 20_000
RECENT_FOR_CONTENT = 5


def rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b).astype(np.float32) if len(a) else np.zeros(0, np.float32)


class NoView:
    """A view that proposes nothing and explains nothing (base for the views below)."""

    def candidates(self, limit: int) -> list[list[str]]:
        return [[] for _ in self.request.users]

    def reason(self, n: int, item_id: str) -> str | None:
        return None

    def __init__(self, request: RankRequest) -> None:
        self.request = request


class BaseSignal:
    """Deduplication, snapshot framing and a default no-op for the parts a signal does not need."""

    name = ""
    columns: tuple[str, ...] = ()
    version = 1

    def __init__(self, max_bytes: int = 64 << 20, dedupe_window: int = DEDUPE_WINDOW) -> None:
        self.max_bytes = max_bytes
        # at most a quarter of the budget remembers applied event ids (about 100 bytes each)
        self.window = EventWindow(max(16, min(dedupe_window, max_bytes // 400)))

    def learn(self, events: Sequence[Observation]) -> None:
        fresh = self.window.admit(events)
        if fresh:
            self._learn(fresh)

    def _learn(self, events: Sequence[Observation]) -> None:
        """Learn from events not applied before (default: nothing to learn)."""

    def learn_content(self, items: Sequence[IndexedItem]) -> None:
        """New or refreshed catalogue items (default: nothing to learn)."""

    def forget(self, item_id: str) -> None:
        """Drop an item (an ended live stream) from candidates and features (default: nothing kept)."""

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {}

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``_state`` wrote (default: no state)."""

    def snapshot(self) -> bytes:
        meta, arrays = self._state()
        return encode_snapshot(self.name, self.version, meta, {**arrays, "_window": str_array(self.window.ids)})

    def restore(self, data: bytes) -> None:
        meta, arrays = decode_snapshot(data, self.name, self.version)
        self.window.load(arrays.pop("_window").tolist())
        self._load(meta, arrays)

    def memory_bytes(self) -> int:
        return self.window.memory_bytes()


# --- content ---------------------------------------------------------------------------------------
def search_ids(catalogue: Index, queries: list[np.ndarray], feed: Feed, limit: int) -> list[list[str]]:
    """Ids of each query's best items: the index's ``search_ids`` when it has one (no hit objects built
    for the ~40k hits of a micro-batch), else its ``search``."""
    fast = getattr(catalogue, "search_ids", None)
    if fast is not None:
        return fast(queries, feed, limit)  # type: ignore[no-any-return]
    return [[h.item_id for h in hits] for hits in catalogue.search(queries, feed, limit=limit)]


def search_unseen(request: RankRequest, queries: dict[int, np.ndarray], limit: int) -> list[list[str]]:
    """One batched catalogue search for the users that have a query: up to ``limit`` unseen items each."""
    out: list[list[str]] = [[] for _ in request.users]
    if queries and limit > 0:
        longest = max(len(request.users[n].seen) for n in queries)
        found = search_ids(request.catalogue, list(queries.values()), request.feed, limit + longest)
        for n, ids in zip(queries, found, strict=True):
            seen = request.users[n].seen
            out[n] = [i for i in ids if i not in seen][:limit]
    return out


class TasteView(NoView):
    def __init__(self, request: RankRequest) -> None:
        super().__init__(request)
        self.order: list[list[str]] = [[] for _ in request.users]

    def candidates(self, limit: int) -> list[list[str]]:
        queries = {n: u.query for n, u in enumerate(self.request.users) if u.query is not None}
        self.order = search_unseen(self.request, queries, limit)
        return self.order

    def features(self, cands: Candidates) -> np.ndarray:
        users = self.request.users
        dim = cands.dim
        sim = np.zeros(len(cands), np.float32)
        rank = np.zeros(len(cands), np.float32)
        for n, u in enumerate(users):
            rows = cands.rows_of(n)
            if rows.start == rows.stop:
                continue
            # each user's rows against their own query, broadcast: the same row-wise dot as gathering a
            # (rows, dim) copy of the queries, without that copy
            q = u.query if u.query is not None else np.zeros(dim, np.float32)
            block = cands.block(rows.start, rows.stop)
            sim[rows.start : rows.stop] = rowwise_dot(block, np.broadcast_to(q.astype(np.float32), block.shape))
            rank[rows.start : rows.stop] = rank_feature(self.order[n], cands.items[rows.start : rows.stop])
        return np.stack([sim, rank], axis=1).astype(np.float32)

    def reason(self, n: int, item_id: str) -> str | None:
        return explain_similar(self.request, n, item_id)


class TasteSignal(BaseSignal):
    """Content similarity to the user's taste vector (long-term taste and session, ``UserModel``)."""

    name = "taste"
    columns = ("sim", "rank")

    def read(self, request: RankRequest) -> TasteView:
        return TasteView(request)


def recent_vectors(request: RankRequest, n: int, count: int) -> tuple[list[str], np.ndarray | None]:
    ids = list(request.users[n].positives[-count:])
    items = request.items(ids)
    known = [i for i in ids if i in items]
    return known, (np.stack([items[i].vector for i in known]).astype(np.float32) if known else None)


def explain_similar(request: RankRequest, n: int, item_id: str) -> str:
    """Name the recent positive interaction that most resembles the item: a strong action is named
    ("because you gifted <title>"), a plain view reads "similar to <title>"."""
    texts, vectors = _recent_reasons(request, n)
    if not texts:
        return "similar to what you watch"
    item = request.item(item_id)
    if item is None:
        return texts[0]  # every similarity counts 0: the most recent interaction is named
    # the same float32 dot products as one np.dot each (np.vecdot), newest first; the first maximum wins
    return texts[int(np.vecdot(vectors, item.vector).argmax())]


def _recent_reasons(request: RankRequest, n: int) -> tuple[list[str], np.ndarray]:
    """User ``n``'s last positive interactions that can be named, newest first: their reason texts and
    vectors, built once per request (a batch explains ~10 items per user)."""
    key = ("recent_reasons", n)
    kept = request.memo.get(key)
    if kept is None:
        user = request.users[n]
        recent = [(i, t, w) for i, t, w in user.recent[-10:] if w > 0 and t in POSITIVE_VERBS]
        known = request.items([i for i, _, _ in recent])
        texts: list[str] = []
        vectors: list[np.ndarray] = []
        for i, kind, _ in reversed(recent):
            it = known.get(i)
            if it is None:
                continue
            title = shorten(it.title)
            texts.append(
                f"similar to “{title}”"
                if kind is InteractionType.view
                else f"because you {POSITIVE_VERBS[kind]} “{title}”"
            )
            vectors.append(it.vector)
        kept = request.memo[key] = (texts, np.stack(vectors) if vectors else np.zeros((0, 0), np.float32))
    return kept  # type: ignore[no-any-return]


class ContentView(NoView):
    def candidates(self, limit: int) -> list[list[str]]:
        lasts = {n: recent_vectors(self.request, n, 1)[1] for n in range(len(self.request.users))}
        return search_unseen(self.request, {n: v[0] for n, v in lasts.items() if v is not None}, limit)

    def features(self, cands: Candidates) -> np.ndarray:
        out = np.zeros((len(cands), 2), np.float32)
        for n in range(len(self.request.users)):
            rows = cands.rows_of(n)
            _, recent = recent_vectors(self.request, n, RECENT_FOR_CONTENT)
            if recent is None or rows.start == rows.stop:
                continue
            sims = cands.block(rows.start, rows.stop) @ recent.T
            out[rows.start : rows.stop, 0] = sims.max(axis=1)
            out[rows.start : rows.stop, 1] = sims[:, -1]
        return out

    def reason(self, n: int, item_id: str) -> str | None:
        return explain_similar(self.request, n, item_id)


class ContentSignal(BaseSignal):
    """Content similarity to the user's last few positive items (item-to-item), and its candidates."""

    name = "content"
    columns = ("max_recent", "last")

    def read(self, request: RankRequest) -> ContentView:
        return ContentView(request)


class FreshnessView(NoView):
    def __init__(self, request: RankRequest, half_life_s: float) -> None:
        super().__init__(request)
        self.half_life_s = half_life_s

    def features(self, cands: Candidates) -> np.ndarray:
        age = np.maximum(0.0, self.request.now - cands.created_at)
        return (0.5 ** (age / self.half_life_s)).astype(np.float32)[:, None]

    def reason(self, n: int, item_id: str) -> str | None:
        return "new"


class FreshnessSignal(BaseSignal):
    """How new an item is: 0.5 ** (age / half-life)."""

    name = "freshness"
    columns = ("fresh",)

    def __init__(self, half_life_s: float = 24 * 3600.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.half_life_s = half_life_s

    def read(self, request: RankRequest) -> FreshnessView:
        return FreshnessView(request, self.half_life_s)


# --- co-engagement ---------------------------------------------------------------------------------
LINK_BYTES = 120  # a dict entry of a str key and a float, measured order of magnitude
ROW_BYTES = 300


def best_by_score(scores: dict[str, float], limit: int) -> list[str]:
    """The ``limit`` best ids by score, ties by id: ``sorted(..., key=(-score, id))[:limit]`` without
    sorting every scored item (co-engagement scores thousands per user): a partition finds the
    limit's score, and only the items at or above it are sorted."""
    if limit <= 0 or not scores:
        return []
    if len(scores) <= 4 * limit:
        return [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
    values = np.fromiter(scores.values(), np.float64, count=len(scores))
    cut = np.partition(values, len(values) - limit)[len(values) - limit]  # the limit-th largest score
    ids = list(scores)
    above = [ids[j] for j in np.flatnonzero(values >= cut).tolist()]
    return sorted(above, key=lambda i: (-scores[i], i))[:limit]


class CoView(NoView):
    def __init__(self, request: RankRequest, co: CoEngagement, recency_decay: float) -> None:
        super().__init__(request)
        self.co = co
        self.scores: list[tuple[dict[str, float], dict[str, str]]] = [
            co.scores_with_source(u.positives, recency_decay) for u in request.users
        ]

    def candidates(self, limit: int) -> list[list[str]]:
        return [best_by_score(scores, limit) for scores, _ in self.scores]

    def features(self, cands: Candidates) -> np.ndarray:
        out = np.zeros((len(cands), 3), np.float32)
        distinct, codes = cands.item_codes()
        popularity = looked_up(self.co.popularity, distinct, np.float64, default=0.0).tolist()
        out[:, 2] = np.fromiter(map(math.log1p, popularity), np.float64, count=len(distinct))[codes]
        for n, user in enumerate(self.request.users):
            start, stop = int(cands.offsets[n]), int(cands.offsets[n + 1])
            if start == stop:
                continue
            items = cands.items[start:stop]
            scores = self.scores[n][0]
            last_row = self.co.links.get(user.positives[-1], {}) if user.positives else {}
            total = sum(last_row.values()) or 1.0
            # float64 columns looked up in C, cast once (the same values as per-row writes)
            out[start:stop, 0] = looked_up(scores, items, np.float64, default=0.0)
            out[start:stop, 1] = looked_up(last_row, items, np.float64, default=0.0) / total
        return out

    def reason(self, n: int, item_id: str) -> str | None:
        source = self.scores[n][1].get(item_id)
        item = self.request.item(source) if source else None
        return f"people who watched “{shorten(item.title)}” also watched this" if item else None


class CoEngagementSignal(BaseSignal):
    """Items engaged with next to the user's recent items (``ranking.coengagement``)."""

    name = "co"
    columns = ("score", "last", "log_popularity")

    def __init__(self, params: CoEngagementParams | None = None, recency_decay: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = CoEngagement(params)
        self.recency_decay = recency_decay
        self.links_count = 0

    def _learn(self, events: Sequence[Observation]) -> None:
        for ev in events:
            if ev.weight > 0:
                self.model.learn_one(list(ev.context), ev.item_id, ev.weight)
        self.links_count = sum(len(r) for r in self.model.links.values())
        while self.memory_bytes() > self.max_bytes and self.model.links:
            self._shrink()

    def _shrink(self) -> None:
        """Drop the weakest tenth of the items (by link weight) and of popularity: the memory bound."""
        m = self.model
        strength = sorted(m.links, key=lambda i: (sum(m.links[i].values()), i))
        for item in strength[: max(1, len(strength) // 10)]:
            del m.links[item]
        pop = sorted(m.popularity, key=lambda i: (m.popularity[i], i))
        for item in pop[: max(1, len(pop) // 10)]:
            del m.popularity[item]
        self.links_count = sum(len(r) for r in m.links.values())

    def memory_bytes(self) -> int:
        m = self.model
        return super().memory_bytes() + self.links_count * LINK_BYTES + (len(m.links) + len(m.popularity)) * ROW_BYTES

    def forget(self, item_id: str) -> None:
        m = self.model
        m.links.pop(item_id, None)
        m.popularity.pop(item_id, None)
        for row in m.links.values():
            row.pop(item_id, None)
        self.links_count = sum(len(r) for r in m.links.values())

    def read(self, request: RankRequest) -> CoView:
        return CoView(request, self.model, self.recency_decay)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        m = self.model
        src = [a for a, row in m.links.items() for _ in row]
        dst = [b for row in m.links.values() for b in row]
        w = [v for row in m.links.values() for v in row.values()]
        return {"evictions": m.evictions}, {
            "src": str_array(src),
            "dst": str_array(dst),
            "w": np.asarray(w, np.float64),
            "pop_ids": str_array(m.popularity),
            "pop": np.asarray(list(m.popularity.values()), np.float64),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        m = self.model
        m.links = {}
        for a, b, w in zip(arrays["src"].tolist(), arrays["dst"].tolist(), arrays["w"].tolist(), strict=True):
            m.links.setdefault(a, {})[b] = w
        m.popularity = dict(zip(arrays["pop_ids"].tolist(), arrays["pop"].tolist(), strict=True))
        m.evictions = int(meta["evictions"])
        self.links_count = len(arrays["w"])


# --- next item -------------------------------------------------------------------------------------
class NextItemView(NoView):
    def __init__(self, request: RankRequest, model: NextItemLearner, warmup: int) -> None:
        super().__init__(request)
        self.confidence = model.confidence(warmup)
        self.scores = model.context_scores_many([u.positives for u in request.users])

    def candidates(self, limit: int) -> list[list[str]]:
        return [s.top(limit) if s is not None else [] for s in self.scores]

    def features(self, cands: Candidates) -> np.ndarray:
        """logit, log-softmax over the known items, z-score x the model's confidence (0 before it has
        learned anything, 1 after ``warmup`` examples: early on its scores are initialisation noise),
        and 1/(1+rank) among the known items (exact in the context's head, sampled below it:
        ``ContextScores``); an item the model does not know gets the lowest logit."""
        out = np.zeros((len(cands), 4), np.float32)
        scored = next((s for s in self.scores if s is not None), None)
        if scored is None:
            return out
        distinct, codes = cands.item_codes()
        item_rows = scored.rows(distinct)[codes]  # every context of the batch shares the model's rows
        for n, s in enumerate(self.scores):
            rows = cands.rows_of(n)
            if s is None or rows.start == rows.stop:
                continue
            logits = s.logits_at(item_rows[rows.start : rows.stop])
            above = s.above(logits)
            out[rows.start : rows.stop, 0] = logits
            out[rows.start : rows.stop, 1] = logits - s.lse
            out[rows.start : rows.stop, 2] = self.confidence * (logits - s.mean) / s.std
            out[rows.start : rows.stop, 3] = 1.0 / (1.0 + above)
        return out

    def reason(self, n: int, item_id: str) -> str | None:
        positives = self.request.users[n].positives
        last = self.request.items(positives[-1:]).get(positives[-1]) if positives else None
        return f"often watched next after “{shorten(last.title)}”" if last else None


class NextItemSignal(BaseSignal):
    """The next-item model (``ranking.next_item`` / ``next_item_transformer``): what tends to come next.

    It learns each positive short-video event once as it arrives and keeps a bounded buffer of them
    for rehearsal: ``rehearse`` (called by ``ranking.training.TrainingScheduler`` on its event-count
    schedule) replays the examples rehearsed least so far, which is what passes over the whole history
    did offline. Why least-rehearsed rather than a uniform sample: drawn uniformly at every burst, an
    example that arrived early is drawn at every later burst (about ``ratio x ln(bursts)`` times) and
    the newest hardly at all, so the model overfits the old part of the stream and underfits the
    recent part, which is what the next events resemble most.
    """

    name = "next_item"
    columns = ("logit", "log_softmax", "z", "rank")

    def __init__(
        self, model: NextItemLearner | None = None, buffer: int = 200_000, warmup: int = 5_000, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.warmup = warmup
        self.model: NextItemLearner = model if model is not None else NextItemModel()
        # the rehearsal buffer takes at most a third of the budget (about 200 bytes an example); the
        # model itself is bounded by its own ``max_items``
        self.buffer: deque[tuple[tuple[str, ...], str, float]] = deque(maxlen=min(buffer, self.max_bytes // 600))
        self.rehearsals: deque[int] = deque(maxlen=self.buffer.maxlen)  # per buffered example, aligned

    def _learn(self, events: Sequence[Observation]) -> None:
        examples, weights = [], []
        for ev in events:
            if ev.feed is not Feed.short_video:
                continue
            self.model.note(ev.item_id, ev.vector)
            if ev.weight > 0:
                context = ev.context[-self.model.window :]
                examples.append((context, ev.item_id))
                weights.append(ev.weight)
                if context:
                    self.buffer.append((context, ev.item_id, ev.weight))
                    self.rehearsals.append(0)
        if examples:
            self.model.learn_many(examples, weights)

    def rehearse(self, count: int, seed: int) -> None:
        """``count`` rehearsals from the buffer, filled level by level: each goes to an example rehearsed
        fewest times so far (a seeded draw among equals); learned in a seeded shuffled order."""
        n = len(self.buffer)
        if not n or count <= 0:
            return
        rng = np.random.default_rng(seed)
        times = np.fromiter(self.rehearsals, np.int64, count=n)
        extra = np.zeros(n, np.int64)
        left = count
        while left > 0:
            now = times + extra
            low = np.flatnonzero(now == now.min())
            if len(low) > left:
                low = rng.choice(low, size=left, replace=False)
            extra[low] += 1
            left -= len(low)
        picks = rng.permutation(np.repeat(np.arange(n), extra))
        self.rehearsals = deque((times + extra).tolist(), maxlen=self.buffer.maxlen)
        chosen = [self.buffer[int(i)] for i in picks]
        self.model.learn_many([(c, i) for c, i, _ in chosen], [w for _, _, w in chosen])

    def learn_content(self, items: Sequence[IndexedItem]) -> None:
        for it in items:
            if it.feed is Feed.short_video:
                self.model.note(it.item_id, it.vector)

    def forget(self, item_id: str) -> None:
        self.model.forget(item_id)
        pairs = zip(self.buffer, self.rehearsals, strict=True)
        kept = [(e, t) for e, t in pairs if item_id != e[1] and item_id not in e[0]]
        self.buffer = deque((e for e, _ in kept), maxlen=self.buffer.maxlen)
        self.rehearsals = deque((t for _, t in kept), maxlen=self.buffer.maxlen)

    def memory_bytes(self) -> int:
        return super().memory_bytes() + self.model.memory_bytes() + len(self.buffer) * 200

    def read(self, request: RankRequest) -> NoView:
        if request.feed is not Feed.short_video:
            return EmptyView(request, len(self.columns))
        return NextItemView(request, self.model, self.warmup)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = self.model.state()
        ctx = [list(c) for c, _, _ in self.buffer]
        width = max((len(c) for c in ctx), default=0)
        return meta, {
            **{f"model.{k}": v for k, v in arrays.items()},
            "buf_ctx": str_array(c[i] if i < len(c) else "" for c in ctx for i in range(width)).reshape(-1, width)
            if ctx
            else np.zeros((0, 0), "<U1"),
            "buf_item": str_array(i for _, i, _ in self.buffer),
            "buf_w": np.asarray([w for _, _, w in self.buffer], np.float64),
            "buf_rehearsed": np.asarray(self.rehearsals, np.int64),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.model.load_state(meta, {k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
        self.buffer.clear()
        buffered = zip(arrays["buf_ctx"].tolist(), arrays["buf_item"].tolist(), arrays["buf_w"].tolist(), strict=True)
        for ctx, item, w in buffered:
            self.buffer.append((tuple(c for c in ctx if c), item, w))
        # snapshots from before the least-rehearsed-first policy carry no counts: all start at 0
        rehearsed = arrays.get("buf_rehearsed", np.zeros(len(self.buffer), np.int64))
        self.rehearsals = deque(np.asarray(rehearsed, np.int64).tolist(), maxlen=self.buffer.maxlen)


class EmptyView(NoView):
    def __init__(self, request: RankRequest, width: int) -> None:
        super().__init__(request)
        self.width = width

    def features(self, cands: Candidates) -> np.ndarray:
        return np.zeros((len(cands), self.width), np.float32)


# --- sequence neighbours ---------------------------------------------------------------------------
class NeighboursView(NoView):
    def __init__(self, request: RankRequest, model: SequenceNeighbours) -> None:
        super().__init__(request)
        self.scores = [model.scores(list(u.positives), exclude_user=u.user_id) for u in request.users]

    def candidates(self, limit: int) -> list[list[str]]:
        return [[i for i, _ in sorted(s.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]] for s in self.scores]

    def features(self, cands: Candidates) -> np.ndarray:
        return np.fromiter(
            (self.scores[u].get(i, 0.0) for u, i in zip(cands.user.tolist(), cands.items, strict=True)),
            np.float32,
            count=len(cands),
        )[:, None]

    def reason(self, n: int, item_id: str) -> str | None:
        return "people with similar taste watched this"


class NeighboursSignal(BaseSignal):
    """Session-kNN over users' recent sequences (``ranking.neighbours``)."""

    name = "neighbours"
    columns = ("score",)

    def __init__(self, params: NeighbourParams | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = SequenceNeighbours(params)

    def _learn(self, events: Sequence[Observation]) -> None:
        for ev in events:
            self.model.learn_one(ev.user_id, ev.item_id, ev.weight)
        while self.memory_bytes() > self.max_bytes and self.model.sequences:
            drop = max(1, len(self.model.sequences) // 10)
            for _ in range(drop):
                user, seq = self.model.sequences.popitem(last=False)
                for item in seq:
                    users = self.model.users_of.get(item)
                    if users is not None and user in users:
                        users.remove(user)
                        if not users:
                            del self.model.users_of[item]

    def memory_bytes(self) -> int:
        m = self.model
        entries = sum(len(s) for s in m.sequences.values()) + sum(len(u) for u in m.users_of.values())
        return super().memory_bytes() + entries * 80 + (len(m.sequences) + len(m.users_of)) * ROW_BYTES

    def forget(self, item_id: str) -> None:
        m = self.model
        m.users_of.pop(item_id, None)
        for user, seq in list(m.sequences.items()):
            if item_id in seq:
                m.sequences[user] = deque((i for i in seq if i != item_id), maxlen=seq.maxlen)

    def read(self, request: RankRequest) -> NeighboursView:
        return NeighboursView(request, self.model)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        m = self.model
        users = list(m.sequences)
        return {}, {
            "seq_user": str_array(u for u in users for _ in m.sequences[u]),
            "seq_item": str_array(i for u in users for i in m.sequences[u]),
            "of_item": str_array(i for i, us in m.users_of.items() for _ in us),
            "of_user": str_array(u for us in m.users_of.values() for u in us),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        m = self.model
        m.sequences.clear()
        m.users_of.clear()
        for u, i in zip(arrays["seq_user"].tolist(), arrays["seq_item"].tolist(), strict=True):
            m.sequences.setdefault(u, deque(maxlen=m.params.sequence)).append(i)
        for i, u in zip(arrays["of_item"].tolist(), arrays["of_user"].tolist(), strict=True):
            m.users_of.setdefault(i, deque(maxlen=m.params.users_per_item)).append(u)


# --- trending and live -----------------------------------------------------------------------------
class TrendingView(NoView):
    def __init__(self, request: RankRequest, model: Trending, pool: int) -> None:
        super().__init__(request)
        self.model = model
        self.pool = pool
        self.top = model.top(request.feed, pool)
        self.best = self.top[0][1] if self.top else 0.0
        self.order = [i for i, _ in self.top]

    def candidates(self, limit: int) -> list[list[str]]:
        self.request.items(self.order)
        ids = [i for i in self.order if self.request.servable(i)][:limit]
        return [list(ids) for _ in self.request.users]

    def features(self, cands: Candidates) -> np.ndarray:
        feed = self.request.feed
        # each scored item's row, kept by the model until its scores or clock change: in a worker the
        # clock moves with every micro-batch, so the rows are rebuilt about once per batch. Most
        # candidates are not trending at all: their row is zeros (score 0, no rank), and only the
        # candidates the model scores get a row, found by a set intersection in C
        row: dict[str, tuple[float, float, float]] = self.model.memo(("features", feed, self.pool))
        distinct, codes = cands.item_codes()
        hot = list(self.model.scores[feed].keys() & set(distinct))
        missing = [i for i in hot if i not in row]
        if missing:
            rank = dict(zip(self.order, rank_feature(self.order, self.order).tolist(), strict=True))
            best = self.best or 1.0
            for i in missing:
                raw = self.model.score(i, feed)
                row[i] = (raw / best, math.log1p(raw), rank.get(i, 0.0))
        # one row per hot item and a zero row, gathered: the same float64 values cast once, as the
        # per-row writes were
        table = np.zeros((len(hot) + 1, 3), np.float32)
        if hot:
            table[:-1] = np.asarray(list(map(row.__getitem__, hot)), np.float64).astype(np.float32)
        at = looked_up(dict(zip(hot, range(len(hot)), strict=True)), distinct, np.int64, default=len(hot))
        return table[at[codes]]

    def reason(self, n: int, item_id: str) -> str | None:
        return trending_reason(self.request.feed)


class TrendingSignal(BaseSignal):
    """How hot an item is in its feed: decayed engagement counts (``ranking.trending``)."""

    name = "trending"
    columns = ("scaled", "log_score", "rank")

    def __init__(self, params: TrendingParams | None = None, pool: int = 100, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = Trending(params)
        self.pool = pool

    def _learn(self, events: Sequence[Observation]) -> None:
        for ev in events:
            self.model.learn_one(ev.item_id, ev.feed, ev.weight, ev.ts)
        while self.memory_bytes() > self.max_bytes and any(self.model.scores.values()):
            for feed, row in self.model.scores.items():
                keep = max(0, int(len(row) * 0.9))
                ranked = sorted(row, key=lambda i, f=feed: (self.model.score(i, f), i), reverse=True)
                self.model.scores[feed] = {i: row[i] for i in ranked[:keep]}
            self.model.invalidate()

    def memory_bytes(self) -> int:
        return super().memory_bytes() + sum(len(r) for r in self.model.scores.values()) * ROW_BYTES

    def forget(self, item_id: str) -> None:
        self.model.forget(item_id)

    def read(self, request: RankRequest) -> TrendingView:
        return TrendingView(request, self.model, self.pool)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        m = self.model
        rows = [(f.value, i, s, t) for f, row in m.scores.items() for i, (s, t) in row.items()]
        return {"clock": m.clock}, {
            "feed": str_array(r[0] for r in rows),
            "item": str_array(r[1] for r in rows),
            "score": np.asarray([r[2] for r in rows], np.float64),
            "ts": np.asarray([r[3] for r in rows], np.float64),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        m = self.model
        m.clock = float(meta["clock"])
        m.scores = {f: {} for f in Feed}
        for f, i, s, t in zip(*(arrays[k].tolist() for k in ("feed", "item", "score", "ts")), strict=True):
            m.scores[Feed(f)][i] = (s, t)
        m.invalidate()


class LiveView(NoView):
    def __init__(self, request: RankRequest, model: LiveVelocity) -> None:
        super().__init__(request)
        live = request.feed is Feed.live
        self.boosts = dict(model.boosts(list(model.events), 1.0)) if live else {}
        if self.boosts:
            request.items(self.boosts)
            self.boosts = {i: b for i, b in self.boosts.items() if request.servable(i)}

    def candidates(self, limit: int) -> list[list[str]]:
        best = sorted(self.boosts, key=lambda i: (-self.boosts[i][0], i))[:limit]
        return [list(best) for _ in self.request.users]

    def features(self, cands: Candidates) -> np.ndarray:
        if not self.boosts:  # off the live feed, or nothing on air: every candidate's boost is 0
            return np.zeros((len(cands), 1), np.float32)
        return np.fromiter((self.boosts.get(i, (0.0, ""))[0] for i in cands.items), np.float32, count=len(cands))[
            :, None
        ]

    def reason(self, n: int, item_id: str) -> str | None:
        b = self.boosts.get(item_id)
        return b[1] if b else None


class LiveSignal(BaseSignal):
    """Gift and comment velocity of live streams in the last minute(s) (``ranking.trending``)."""

    name = "live"
    columns = ("velocity",)

    def __init__(self, params: LiveVelocityParams | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.model = LiveVelocity(params)

    def _learn(self, events: Sequence[Observation]) -> None:
        for ev in events:
            if ev.feed is Feed.live:
                self.model.learn_one(ev.item_id, ev.type, ev.ts)
        while self.memory_bytes() > self.max_bytes and self.model.events:
            del self.model.events[next(iter(self.model.events))]

    def memory_bytes(self) -> int:
        events = sum(len(q) for per in self.model.events.values() for q in per.values())
        return super().memory_bytes() + events * 40 + len(self.model.events) * ROW_BYTES

    def forget(self, item_id: str) -> None:
        self.model.forget(item_id)

    def read(self, request: RankRequest) -> LiveView:
        return LiveView(request, self.model)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        m = self.model
        rows = [(i, k.value, t) for i, per in m.events.items() for k, q in per.items() for t in q]
        return {"clock": m.clock, "items": list(m.events)}, {
            "item": str_array(r[0] for r in rows),
            "kind": str_array(r[1] for r in rows),
            "ts": np.asarray([r[2] for r in rows], np.float64),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from ranking.trending import VELOCITY_TYPES

        m = self.model
        m.clock = float(meta["clock"])
        m.events = {i: {t: deque() for t in VELOCITY_TYPES} for i in meta["items"]}
        for i, k, t in zip(arrays["item"].tolist(), arrays["kind"].tolist(), arrays["ts"].tolist(), strict=True):
            m.events[i][InteractionType(k)].append(t)


# --- new items -------------------------------------------------------------------------------------
class NewItemsView(NoView):
    def __init__(self, request: RankRequest, model: NewItems, pool: int) -> None:
        super().__init__(request)
        self.order = model.newest(request.feed, pool)

    def candidates(self, limit: int) -> list[list[str]]:
        return [self.order[:limit] for _ in self.request.users]

    def features(self, cands: Candidates) -> np.ndarray:
        return rank_feature(self.order, cands.items)[:, None]

    def reason(self, n: int, item_id: str) -> str | None:
        return "new"


class NewItemsSignal(BaseSignal):
    """The newest items of each feed (``ranking.fresh``): candidates for the exploration slot."""

    name = "new_items"
    columns = ("rank",)

    def __init__(self, max_items: int = 200, pool: int = 50, **kw: Any) -> None:
        super().__init__(**kw)
        # per feed, with the 25 % slack NewItems prunes with, within the three quarters left of the budget
        fits = int(self.max_bytes * 3 // 4 // ROW_BYTES // len(Feed) // 1.25)
        self.model = NewItems(max_items=max(1, min(max_items, fits)))
        self.pool = pool

    def learn_content(self, items: Sequence[IndexedItem]) -> None:
        for it in items:
            self.model.add(it.item_id, it.feed, it.created_at)

    def forget(self, item_id: str) -> None:
        self.model.forget(item_id)

    def memory_bytes(self) -> int:
        return super().memory_bytes() + sum(len(r) for r in self.model.items.values()) * ROW_BYTES

    def read(self, request: RankRequest) -> NewItemsView:
        return NewItemsView(request, self.model, self.pool)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        rows = [(f.value, i, t) for f, row in self.model.items.items() for i, t in row.items()]
        return {}, {
            "feed": str_array(r[0] for r in rows),
            "item": str_array(r[1] for r in rows),
            "created": np.asarray([r[2] for r in rows], np.float64),
        }

    def _load(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.model.items = {f: {} for f in Feed}
        for f, i, t in zip(arrays["feed"].tolist(), arrays["item"].tolist(), arrays["created"].tolist(), strict=True):
            self.model.items[Feed(f)][i] = t
