"""What shapes a ranked list around the learned ranker's scores (pure logic, no I/O).

``RankingParams``: list length, candidates per source, the hand blend the ranker starts from, MMR and
the exploration slot. ``mmr``: maximal marginal relevance, so a list does not repeat one topic.
``cold_start``: a user without taste yet gets what is trending in the feed, then the newest items.
Scoring itself is ``ranking.ranker``; the path from states to lists is ``ranking.online``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.domain import Feed, RecommendedItem

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
    content_candidates: int = 100  # taste search (and half as many from the last item's neighbours)


def shorten(title: str, limit: int = REASON_TITLE_CHARS) -> str:
    title = " ".join(title.split())
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def trending_reason(feed: Feed) -> str:
    return "trending live now" if feed is Feed.live else "trending now"


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


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float64 rows scaled to unit length (zero rows stay zero), exactly as ``mmr`` scales each vector:
    the float32 norm (``np.vecdot`` is the same dot product as ``np.linalg.norm`` of one vector), then
    a float64 division."""
    v32 = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.vecdot(v32, v32)).astype(np.float64) if len(v32) else np.zeros(0)
    out = v32.astype(np.float64)
    nonzero = norms > 0
    if nonzero.all():  # the usual case: one division, not a masked copy and write-back
        out /= norms[:, None]
        return out
    out[nonzero] /= norms[nonzero, None]
    out[~nonzero] = 0.0
    return out


def mmr_batch(scores: Sequence[np.ndarray], vectors: Sequence[np.ndarray], lam: float, k: int) -> list[list[int]]:
    """``mmr`` for many pools at once, on arrays: pool ``u`` is ``scores[u]`` (float64, best first) and
    ``vectors[u]`` (one row per score); returns each pool's picked positions, in pick order.

    Why: the serving path ran ``mmr`` once per user with a dict of vectors; here every user's greedy
    step is one array operation over a (users, pool) matrix. Same choices as ``mmr`` (min-max scaled
    relevance, first maximum on ties, the same similarity products), checked on random inputs in
    ``tests/unit/test_recommender.py``.
    """
    n_pools = len(scores)
    sizes = [len(s) for s in scores]
    if n_pools == 0 or k <= 0:
        return [[] for _ in range(n_pools)]
    if lam >= 1.0:
        return [list(range(min(k, n))) for n in sizes]
    width = max(sizes)
    rel = np.zeros((n_pools, width))
    sims = np.zeros((n_pools, width, width))
    taken = np.ones((n_pools, width), dtype=bool)  # padding counts as taken: never picked
    for u, (s, v) in enumerate(zip(scores, vectors, strict=True)):
        n = sizes[u]
        if not n:
            continue
        s = np.asarray(s, dtype=np.float64)
        span = float(s.max() - s.min())
        rel[u, :n] = (s - s.min()) / span if span > 0 else np.ones_like(s)
        mat = unit_rows(v)
        sims[u, :n, :n] = mat @ mat.T  # one product per pool, as ``mmr`` computes it
        taken[u, :n] = False
    max_sim = np.full((n_pools, width), -np.inf)
    picks = np.zeros((n_pools, min(k, width)), dtype=np.int64)
    at = np.arange(n_pools)
    for step in range(picks.shape[1]):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = np.where(taken, -np.inf, lam * rel - (1.0 - lam) * penalty)
        best = np.argmax(value, axis=1)  # first maximum: ties keep the input order
        picks[:, step] = best
        taken[at, best] = True
        max_sim = np.maximum(max_sim, sims[at, best])
    return [picks[u, : min(k, n)].tolist() for u, n in enumerate(sizes)]


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
