"""Turn retrieved candidates into a ranked, explained recommendation list (pure logic, no I/O).

Score = content similarity to the user's query vector + ``co_weight`` x co-engagement with the
user's recent items (``ranking.coengagement``) + a small freshness bonus. Co-engagement dominates
when it exists (it carries most of the signal on MicroLens: see README "Quality"); content decides
among items nobody has engaged with yet (cold start). Items the user has already interacted with
are dropped. Each item is explained by the interaction that brought it: the co-engaged recent item
("people who watched <title> also watched this") or the most similar one ("because you gifted <title>").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.coengagement import CoEngagement
from ranking.index import Hit, IndexedItem
from ranking.next_item import NextItemModel
from ranking.user_state import POSITIVE_VERBS, UserState
from streams.schemas import Feed, RecommendedItem

REASON_TITLE_CHARS = 60


@dataclass(frozen=True)
class RankingParams:
    top_k: int = 10
    freshness_weight: float = 0.05
    freshness_half_life_s: float = 24 * 3600.0
    co_weight: float = 10.0  # tuned on MicroLens validation items (README "Quality")
    co_recency_decay: float = 0.5
    co_candidates: int = 100
    # next-item model (ranking/next_item.py): weight of its standardised score, and its own candidates
    seq_weight: float = 0.4
    seq_candidates: int = 100
    seq_warmup_events: int = 5_000  # the model's weight ramps up over its first SGD steps


def shorten(title: str, limit: int = REASON_TITLE_CHARS) -> str:
    title = " ".join(title.split())
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def freshness(created_at: float, now: float, half_life_s: float) -> float:
    return 0.5 ** (max(0.0, now - created_at) / half_life_s)


def explain(vector: np.ndarray | None, state: UserState, recent_vectors: Mapping[str, tuple[np.ndarray, str]]) -> str:
    """Name the recent positive interaction that most resembles the recommended item."""
    best: tuple[float, str] | None = None
    for recent in reversed(state.recent[-10:]):
        verb = POSITIVE_VERBS.get(recent.type)
        known = recent_vectors.get(recent.item_id)
        if verb is None or recent.weight <= 0 or known is None:
            continue
        title = known[1]
        sim = float(np.dot(known[0], vector)) if vector is not None else 0.0
        if best is None or sim > best[0]:
            best = (sim, f"because you {verb} “{shorten(title)}”")
    return best[1] if best else "similar to what you watch"


def top_co_engaged(co_scores: Mapping[str, float], seen: set[str], limit: int) -> list[str]:
    """The strongest co-engaged items the user has not seen: extra candidates beside content search."""
    ranked = sorted((s, i) for i, s in co_scores.items() if i not in seen)
    return [i for _, i in reversed(ranked[-limit:])] if limit else []


def rank(
    hits: Sequence[Hit],
    state: UserState,
    recent_vectors: Mapping[str, tuple[np.ndarray, str]],
    now: float,
    params: RankingParams,
    vector_of: Callable[[str], np.ndarray | None] | None = None,
    co_scores: Mapping[str, float] | None = None,
    co_source: Mapping[str, str] | None = None,
    seq_scores: Mapping[str, float] | None = None,
) -> list[RecommendedItem]:
    """Drop seen items, score the rest, keep the top K, and give each a reason.

    ``hits`` are the candidates from every source (content search and co-engagement), each with its
    content similarity to the user. ``vector_of`` supplies item vectors for the reasons when the hits
    carry none (searching without vectors is much cheaper; the index keeps vectors in memory).
    ``co_source`` names, per co-engaged item, the recent item title that linked it.
    """
    seen = state.seen_items
    co_scores = co_scores or {}
    seq_scores = seq_scores or {}
    scored: dict[str, tuple[float, Hit]] = {}
    for h in hits:
        if h.item_id in seen or h.item_id in scored:
            continue
        score = h.similarity + params.co_weight * co_scores.get(h.item_id, 0.0)
        score += params.seq_weight * seq_scores.get(h.item_id, 0.0)
        score += params.freshness_weight * freshness(h.created_at, now, params.freshness_half_life_s)
        scored[h.item_id] = (score, h)
    best = sorted(scored.values(), key=lambda sh: sh[0], reverse=True)[: params.top_k]
    out = []
    for score, h in best:
        linked = (co_source or {}).get(h.item_id)
        if linked is not None and co_scores.get(h.item_id, 0.0) * params.co_weight > h.similarity:
            reason = f"people who watched “{shorten(linked)}” also watched this"
        else:
            vector = h.vector if h.vector is not None or vector_of is None else vector_of(h.item_id)
            reason = explain(vector, state, recent_vectors)
        out.append(RecommendedItem(item_id=h.item_id, score=round(score, 6), reason=reason))
    return out


def recommend_user(
    state: UserState,
    query: np.ndarray,
    feed: Feed,
    content_hits: Sequence[Hit],
    co: CoEngagement,
    lookup: Callable[[Sequence[str]], Mapping[str, IndexedItem]],
    recent_vectors: Mapping[str, tuple[np.ndarray, str]],
    now: float,
    params: RankingParams,
    next_item: NextItemModel | None = None,
) -> list[RecommendedItem]:
    """Candidates from content search, co-engagement and the next-item model, scored and explained.

    The live feed only re-ranks what the index search returned, because only the index knows for
    sure which streams are live right now; co-engaged short videos are added as candidates.
    """
    recent_positive = [r.item_id for r in state.recent if r.weight > 0]
    co_scores, co_from = co.scores_with_source(recent_positive, params.co_recency_decay)
    hits = list(content_hits)
    if feed is Feed.short_video and co_scores:
        extra_ids = top_co_engaged(co_scores, state.seen_items, params.co_candidates)
        for item in lookup(extra_ids).values():
            if item.feed is feed:
                similarity = float(np.dot(query, item.vector))
                hits.append(Hit(item.item_id, similarity, item.feed, item.created_at, item.title, item.vector))
    seq_scores: dict[str, float] = {}
    if next_item is not None and recent_positive:
        _, seq_top = next_item.standardized(
            recent_positive, [], params.seq_candidates if feed is Feed.short_video else 0
        )
        have = {h.item_id for h in hits}
        extra = [i for i in seq_top if i not in have and i not in state.seen_items]
        for item in lookup(extra).values():
            if item.feed is feed:
                similarity = float(np.dot(query, item.vector))
                hits.append(Hit(item.item_id, similarity, item.feed, item.created_at, item.title, item.vector))
        z, _ = next_item.standardized(recent_positive, [h.item_id for h in hits])
        confidence = next_item.confidence(params.seq_warmup_events)
        seq_scores = {i: confidence * v for i, v in z.items()}
    titles = {i: t for i, (_, t) in recent_vectors.items()}
    co_source = {i: titles[src] for i, src in co_from.items() if src in titles}

    def vector_of(item_id: str) -> np.ndarray | None:
        item = lookup([item_id]).get(item_id)
        return item.vector if item is not None else None

    return rank(
        hits,
        state,
        recent_vectors,
        now,
        params,
        vector_of,
        co_scores=co_scores,
        co_source=co_source,
        seq_scores=seq_scores,
    )
