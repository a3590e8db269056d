"""Turn retrieved candidates into a ranked, diverse, explained recommendation list (pure logic, no I/O).

Score = content similarity to the user's query vector + ``co_weight`` x co-engagement with the
user's recent items (``ranking.coengagement``) + ``trending_weight`` x how hot the item is in its
feed (``ranking.trending``) + in the live feed a boost from the stream's gift and comment velocity +
a small freshness bonus. Co-engagement dominates when it exists (it carries most of the signal on
MicroLens: see README "Quality"); content decides among items nobody has engaged with yet.

The best-scored pool is then re-ranked with maximal marginal relevance (MMR, ``mmr_lambda``) so the
list does not repeat one topic, and ``explore_slots`` last places go to the newest items the user has
not seen. Items the user has interacted with are always dropped. Each item carries the reason that
weighed most: the co-engaged recent item, the live velocity, trending, the most similar recent
interaction ("because you gifted <title>", "similar to <title>") or "new".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ranking.domain import Feed, InteractionType, RecommendedItem
from ranking.index import Hit
from ranking.user_state import POSITIVE_VERBS, UserState

REASON_TITLE_CHARS = 60


@dataclass(frozen=True)
class RankingParams:
    top_k: int = 10
    freshness_weight: float = 0.05
    freshness_half_life_s: float = 24 * 3600.0
    co_weight: float = 10.0  # tuned on MicroLens validation items (README "Quality")
    co_recency_decay: float = 0.5
    co_candidates: int = 100
    trending_weight: float = 0.05  # x trending score scaled to [0, 1] within the feed
    trending_candidates: int = 20
    live_boost_weight: float = 0.3  # x log1p(gift and comment velocity) in the live feed
    mmr_lambda: float = 0.9  # 1 = pure relevance; lower trades relevance for diversity (README "Quality")
    mmr_pool: int = 50  # best-scored candidates MMR chooses from
    explore_slots: int = 1  # last places reserved for the newest unseen items
    knn_weight: float = 0.0  # x sequence-neighbour score in [0, 1] (ranking.neighbours); off: see README "Quality"
    # next-item model (ranking/next_item.py): weight of its z-scored logit (tuned on validation), its own
    # candidates, and the SGD steps over which its weight ramps up (on little data its scores are noise)
    seq_weight: float = 0.4
    seq_candidates: int = 100
    seq_warmup_events: int = 5_000


def shorten(title: str, limit: int = REASON_TITLE_CHARS) -> str:
    title = " ".join(title.split())
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def freshness(created_at: float, now: float, half_life_s: float) -> float:
    return 0.5 ** (max(0.0, now - created_at) / half_life_s)


def trending_reason(feed: Feed) -> str:
    return "trending live now" if feed is Feed.live else "trending now"


def explain(vector: np.ndarray | None, state: UserState, recent_vectors: Mapping[str, tuple[np.ndarray, str]]) -> str:
    """Name the recent positive interaction that most resembles the recommended item.

    A strong action is named ("because you gifted <title>"); a plain view reads "similar to <title>".
    """
    best: tuple[float, str] | None = None
    for recent in reversed(state.recent[-10:]):
        verb = POSITIVE_VERBS.get(recent.type)
        known = recent_vectors.get(recent.item_id)
        if verb is None or recent.weight <= 0 or known is None:
            continue
        title = shorten(known[1])
        sim = float(np.dot(known[0], vector)) if vector is not None else 0.0
        if best is None or sim > best[0]:
            text = f"similar to “{title}”" if recent.type is InteractionType.view else f"because you {verb} “{title}”"
            best = (sim, text)
    return best[1] if best else "similar to what you watch"


def top_co_engaged(co_scores: Mapping[str, float], seen: set[str], limit: int) -> list[str]:
    """The strongest co-engaged items the user has not seen: extra candidates beside content search."""
    ranked = sorted((s, i) for i, s in co_scores.items() if i not in seen)
    return [i for _, i in reversed(ranked[-limit:])] if limit else []


def mmr(scored: Sequence[tuple[str, float]], vectors: Mapping[str, np.ndarray | None], lam: float, k: int) -> list[str]:
    """Maximal marginal relevance: repeatedly take the item maximising
    ``lam x relevance - (1 - lam) x max cosine to the items already taken``.

    Relevance is the score min-max scaled to [0, 1] over ``scored`` (so ``lam`` means the same whatever
    the score scale); ties keep the input order. Items without a vector count as dissimilar.
    """
    if not scored or k <= 0:
        return []
    ids = [i for i, _ in scored]
    if lam >= 1.0:
        return ids[:k]
    s = np.asarray([sc for _, sc in scored], dtype=np.float64)
    span = float(s.max() - s.min())
    rel = (s - s.min()) / span if span > 0 else np.ones_like(s)
    dim = next((len(v) for v in vectors.values() if v is not None), 0)
    mat = np.zeros((len(ids), dim), dtype=np.float64)
    for n, i in enumerate(ids):
        v = vectors.get(i)
        if v is not None:
            norm = float(np.linalg.norm(v))
            mat[n] = np.asarray(v, dtype=np.float64) / norm if norm > 0 else 0.0
    sims = mat @ mat.T
    max_sim = np.full(len(ids), -np.inf)
    taken = np.zeros(len(ids), dtype=bool)
    out: list[str] = []
    for _ in range(min(k, len(ids))):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = np.where(taken, -np.inf, lam * rel - (1.0 - lam) * penalty)
        best = int(np.argmax(value))  # first maximum: ties keep the input order
        taken[best] = True
        out.append(ids[best])
        max_sim = np.maximum(max_sim, sims[best])
    return out


@dataclass(frozen=True)
class Signals:
    """Per-candidate signals beside content similarity, gathered by ``ranking.online`` for one user."""

    co_scores: Mapping[str, float]
    co_source: Mapping[str, str]  # co-engaged item -> title of the recent item that linked it
    trending: Mapping[str, float]  # item -> trending score in [0, 1] within the feed
    live_boost: Mapping[str, tuple[float, str]]  # live item -> (score bonus, reason)
    knn: Mapping[str, float] = field(default_factory=dict)  # item -> sequence-neighbour score in [0, 1]
    fresh: Sequence[Hit] = ()  # newest unseen items for the exploration slots, newest first
    seq: Mapping[str, float] = field(default_factory=dict)  # item -> next-item z-score x model confidence
    seq_after: str | None = None  # title of the user's last positive item (the next-item model's context)


NO_SIGNALS = Signals({}, {}, {}, {})


def rank(
    hits: Sequence[Hit],
    state: UserState,
    recent_vectors: Mapping[str, tuple[np.ndarray, str]],
    now: float,
    params: RankingParams,
    vector_of: Callable[[str], np.ndarray | None] | None = None,
    signals: Signals = NO_SIGNALS,
) -> list[RecommendedItem]:
    """Drop seen items, score the rest, re-rank the best for diversity, fill the exploration slots, explain.

    ``hits`` are the candidates from every source, each with its content similarity to the user.
    ``vector_of`` supplies item vectors when the hits carry none (searching without vectors is much
    cheaper; the index keeps vectors in memory).
    """
    seen = state.seen_items
    parts: dict[str, tuple[float, float, float, float, float, Hit]] = {}  # id -> (score, co, knn, trend, live, hit)
    seq_gain: dict[str, float] = {}
    for h in hits:
        if h.item_id in seen or h.item_id in parts:
            continue
        co = params.co_weight * signals.co_scores.get(h.item_id, 0.0)
        knn = params.knn_weight * signals.knn.get(h.item_id, 0.0)
        trend = params.trending_weight * signals.trending.get(h.item_id, 0.0)
        live = signals.live_boost.get(h.item_id, (0.0, ""))[0]
        # the next-item model joins the collaborative part: its reason competes with co-engagement's
        seq = params.seq_weight * signals.seq.get(h.item_id, 0.0)
        seq_gain[h.item_id] = seq
        score = h.similarity + co + knn + trend + live + seq
        score += params.freshness_weight * freshness(h.created_at, now, params.freshness_half_life_s)
        parts[h.item_id] = (score, co, knn, trend, live, h)
    by_score = sorted(parts, key=lambda i: parts[i][0], reverse=True)
    slots = min(params.explore_slots, params.top_k)
    earned = set(by_score[: params.top_k - slots])  # new items that win a place on merit need no slot
    explore = [f for f in signals.fresh if f.item_id not in seen and f.item_id not in earned][:slots]
    explore_ids = {f.item_id for f in explore}
    by_score = [i for i in by_score if i not in explore_ids]
    k = params.top_k - len(explore)
    vectors: dict[str, np.ndarray | None] = {}

    def vector(item_id: str) -> np.ndarray | None:
        if item_id not in vectors:
            h = parts[item_id][5] if item_id in parts else None
            v = h.vector if h is not None else None
            vectors[item_id] = v if v is not None or vector_of is None else vector_of(item_id)
        return vectors[item_id]

    pool = by_score[: max(params.mmr_pool, k)]
    if params.mmr_lambda < 1.0:
        for i in pool:
            vector(i)
    chosen = mmr([(i, parts[i][0]) for i in pool], vectors, params.mmr_lambda, k)
    out = []
    for item_id in chosen:
        score, co, knn, trend, live, h = parts[item_id]
        linked = signals.co_source.get(item_id)
        if live > 0 and live >= max(co, knn, trend):
            reason = signals.live_boost[item_id][1]
        elif linked is not None and co > max(h.similarity, trend) and co >= knn:
            reason = f"people who watched “{shorten(linked)}” also watched this"
        elif knn > max(h.similarity, trend):
            reason = "people with similar taste watched this"
        elif signals.seq_after and seq_gain.get(item_id, 0.0) > max(h.similarity, trend, co):
            reason = f"often watched next after “{shorten(signals.seq_after)}”"
        elif trend > max(h.similarity, co):
            reason = trending_reason(h.feed)
        else:
            reason = explain(vector(item_id), state, recent_vectors)
        out.append(RecommendedItem(item_id=item_id, score=round(score, 6), reason=reason))
    for f in explore:
        score = parts[f.item_id][0] if f.item_id in parts else f.similarity
        out.append(RecommendedItem(item_id=f.item_id, score=round(score, 6), reason="new"))
    return out


def cold_start(
    feed: Feed, trending: Sequence[tuple[str, float]], fresh: Sequence[str], seen: set[str], top_k: int
) -> list[RecommendedItem]:
    """A list for a user without taste yet: what is trending in the feed, then the newest items."""
    out: list[RecommendedItem] = []
    taken: set[str] = set(seen)
    best = trending[0][1] if trending else 0.0
    for item_id, score in trending:
        if len(out) >= top_k:
            break
        if item_id not in taken and best > 0:
            taken.add(item_id)
            out.append(RecommendedItem(item_id=item_id, score=round(score / best, 6), reason=trending_reason(feed)))
    for item_id in fresh:
        if len(out) >= top_k:
            break
        if item_id not in taken:
            taken.add(item_id)
            out.append(RecommendedItem(item_id=item_id, score=0.0, reason="new"))
    return out
