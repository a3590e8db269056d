"""Every model the interaction stream updates, and the one path from a user's state to a ranked list.

Why one module: the live agent (``streams.handlers``), the offline evaluation and the replay through
Kafka must update and rank with the same code, or their figures would not be comparable. Pure logic:
the index is injected (Milvus in the worker, an exact in-memory index offline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ranking.coengagement import CoEngagement
from ranking.domain import Feed, Interaction, RecommendedItem
from ranking.fresh import NewItems
from ranking.index import Hit, Index, IndexedItem
from ranking.neighbours import SequenceNeighbours
from ranking.next_item import ContextScores, NextItemLearner, NextItemModel
from ranking.recommender import RankingParams, Signals, cold_start, rank, top_co_engaged
from ranking.trending import LiveVelocity, Trending
from ranking.user_state import UserModel, UserState


def as_hit(item: IndexedItem, query: np.ndarray | None) -> Hit:
    similarity = float(np.dot(query, item.vector)) if query is not None else 0.0
    return Hit(item.item_id, similarity, item.feed, item.created_at, item.title, item.vector)


def servable(item: IndexedItem | None, feed: Feed) -> bool:
    """In the feed, and for the live feed still live: an ended stream is never returned."""
    return item is not None and item.feed is feed and (feed is not Feed.live or item.is_live)


@dataclass
class FeedContext:
    """What one feed's lists share within a batch: trending, live boosts and new items, already live-checked."""

    trending: list[tuple[str, float]]  # hottest first, raw decayed scores
    trending_scaled: dict[str, float]
    boosts: dict[str, tuple[float, str]]
    new: list[IndexedItem]
    items: dict[str, IndexedItem]  # the items above


@dataclass
class OnlineModels:
    user_model: UserModel
    co: CoEngagement = field(default_factory=CoEngagement)
    trending: Trending = field(default_factory=Trending)
    live: LiveVelocity = field(default_factory=LiveVelocity)
    new_items: NewItems = field(default_factory=NewItems)
    neighbours: SequenceNeighbours = field(default_factory=SequenceNeighbours)
    next_item: NextItemLearner = field(default_factory=NextItemModel)

    # --- learning --------------------------------------------------------------------------------
    def learn_content(self, items: Sequence[IndexedItem]) -> None:
        for it in items:
            self.new_items.add(it.item_id, it.feed, it.created_at)

    def end_live(self, item_id: str) -> None:
        """An ended stream leaves trending, the live boost and the new-items slot at once."""
        self.trending.forget(item_id)
        self.live.forget(item_id)
        self.new_items.forget(item_id)

    def learn_one(self, state: UserState, event: Interaction, item: IndexedItem, shared: bool = True) -> bool:
        """Apply one interaction to the user's state and (``shared``) to the models every user shares.

        Returns False for a replayed event (its id was already applied), which changes nothing.
        ``shared=False`` updates only the user (the strict evaluation keeps validation events out of
        co-engagement and trending).
        """
        previous = positives(state)
        if not self.user_model.learn_one(state, event, item.vector):
            return False
        if shared:
            weight = state.recent[-1].weight
            self.co.learn_one(previous, event.item_id, weight)
            self.neighbours.learn_one(event.user_id, event.item_id, weight)
            if item.feed is Feed.short_video:
                self.next_item.note(event.item_id, item.vector)
                self.next_item.learn_many([(previous, event.item_id)], [weight])
            self.trending.learn_one(event.item_id, item.feed, weight, event.ts)
            if item.feed is Feed.live:
                self.live.learn_one(event.item_id, event.type, event.ts)
        return True

    # --- ranking ---------------------------------------------------------------------------------
    def feed_context(self, feed: Feed, index: Index, params: RankingParams) -> FeedContext:
        trending = self.trending.top(feed, params.trending_candidates + params.top_k)
        boosts = self.live.boosts(list(self.live.events), params.live_boost_weight) if feed is Feed.live else {}
        new_ids = self.new_items.newest(feed, params.explore_slots + params.top_k)  # also the cold start's tail
        wanted = [i for i, _ in trending] + list(boosts) + new_ids
        items = {i: it for i, it in index.get(wanted).items() if servable(it, feed)} if wanted else {}
        trending = [(i, s) for i, s in trending if i in items]
        best = trending[0][1] if trending else 0.0
        scaled = {i: s / best for i, s in trending[: params.trending_candidates]} if best > 0 else {}
        return FeedContext(
            trending=trending,
            trending_scaled=scaled,
            boosts={i: b for i, b in boosts.items() if i in items},
            new=[items[i] for i in new_ids if i in items],
            items=items,
        )

    def recommend_user(
        self,
        state: UserState,
        query: np.ndarray,
        feed: Feed,
        content_hits: Sequence[Hit],
        ctx: FeedContext,
        lookup: Callable[[Sequence[str]], Mapping[str, IndexedItem]],
        recent_vectors: Mapping[str, tuple[np.ndarray, str]],
        now: float,
        params: RankingParams,
        seq: ContextScores | None = None,
    ) -> list[RecommendedItem]:
        """Candidates from content search, co-engagement, trending, live velocity and the next-item model
        (``seq``: its scores after this user's recent items); scored and explained.

        Co-engaged items are looked up and kept only when servable in this feed (live and still live).
        """
        recent_positive = positives(state)
        co_scores, co_from = self.co.scores_with_source(recent_positive, params.co_recency_decay)
        hits = list(content_hits)
        knn = self.neighbours.scores(recent_positive) if params.knn_weight > 0 else {}
        extra_ids = top_co_engaged(co_scores, state.seen_items, params.co_candidates) if co_scores else []
        if knn:
            extra_ids += top_co_engaged(knn, state.seen_items, params.co_candidates)
        seq_z: dict[str, float] = {}
        if seq is not None and feed is Feed.short_video:
            extra_ids += [i for i in seq.top(params.seq_candidates) if i not in state.seen_items]
        if extra_ids:
            hits.extend(as_hit(it, query) for it in lookup(extra_ids).values() if servable(it, feed))
        if seq is not None:
            confidence = self.next_item.confidence(params.seq_warmup_events)
            seq_z = {i: confidence * v for i, v in seq.z([h.item_id for h in hits]).items()}
        hits.extend(as_hit(ctx.items[i], query) for i in (*ctx.trending_scaled, *ctx.boosts))
        titles = {i: t for i, (_, t) in recent_vectors.items()}
        signals = Signals(
            co_scores=co_scores,
            co_source={i: titles[src] for i, src in co_from.items() if src in titles},
            trending=ctx.trending_scaled,
            live_boost=ctx.boosts,
            knn=knn,
            fresh=[as_hit(it, query) for it in ctx.new],
            seq=seq_z,
            seq_after=titles.get(recent_positive[-1]) if recent_positive else None,
        )

        def vector_of(item_id: str) -> np.ndarray | None:
            item = lookup([item_id]).get(item_id)
            return item.vector if item is not None else None

        return rank(hits, state, recent_vectors, now, params, vector_of, signals)

    def recommend(
        self,
        users: Sequence[UserState],
        feed: Feed,
        index: Index,
        now: float,
        params: RankingParams,
        candidates: int,
    ) -> list[list[RecommendedItem]]:
        """One list per user for one feed: a single batched index search, then ``recommend_user`` each.

        A user without a taste vector yet (unknown, or only skips) gets the cold-start list: trending in
        the feed, then the newest items.
        """
        ctx = self.feed_context(feed, index, params)
        queries = [self.user_model.query_vector(s) for s in users]
        warm = [n for n, q in enumerate(queries) if q is not None]
        out: list[list[RecommendedItem]] = [[] for _ in users]
        if warm:
            limit = candidates + max(len(users[n].recent) for n in warm)
            hits = index.search([queries[n] for n in warm], feed, limit=limit)
            recent_ids = list(dict.fromkeys(r.item_id for n in warm for r in users[n].recent[-10:]))
            recent = {i: (it.vector, it.title) for i, it in index.get(recent_ids).items()}
            seqs = self.next_item.context_scores_many([positives(users[n]) for n in warm])
            for n, user_hits, seq in zip(warm, hits, seqs, strict=True):
                q = queries[n]
                assert q is not None
                out[n] = self.recommend_user(users[n], q, feed, user_hits, ctx, index.get, recent, now, params, seq=seq)
        new_ids = [it.item_id for it in ctx.new]
        for n, q in enumerate(queries):
            if q is None:
                out[n] = cold_start(feed, ctx.trending, new_ids, users[n].seen_items, params.top_k)
        return out


def positives(state: UserState) -> list[str]:
    """The user's recent items with positive weight, oldest first: the next-item model's context."""
    return [r.item_id for r in state.recent if r.weight > 0]
