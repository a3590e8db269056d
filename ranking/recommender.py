"""Turn retrieved candidates into a ranked, explained recommendation list (pure logic, no I/O).

Score = content similarity to the user's query vector + a small freshness bonus. Items the user has
already interacted with are dropped. Each item is explained by the recent positive interaction whose
item is most similar to it ("because you gifted <title>").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.index import Hit
from ranking.user_state import POSITIVE_VERBS, UserState
from streams.schemas import RecommendedItem

REASON_TITLE_CHARS = 60


@dataclass(frozen=True)
class RankingParams:
    top_k: int = 10
    freshness_weight: float = 0.05
    freshness_half_life_s: float = 24 * 3600.0


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


def rank(
    hits: Sequence[Hit],
    state: UserState,
    recent_vectors: Mapping[str, tuple[np.ndarray, str]],
    now: float,
    params: RankingParams,
    vector_of: Callable[[str], np.ndarray | None] | None = None,
) -> list[RecommendedItem]:
    """Drop seen items, score the rest, keep the top K, and give each a reason.

    ``vector_of`` supplies item vectors for the reasons when the hits carry none (searching without
    vectors is much cheaper; the index keeps recent items' vectors in memory).
    """
    seen = state.seen_items
    scored = [
        (h.similarity + params.freshness_weight * freshness(h.created_at, now, params.freshness_half_life_s), h)
        for h in hits
        if h.item_id not in seen
    ]
    scored.sort(key=lambda sh: sh[0], reverse=True)
    return [
        RecommendedItem(
            item_id=h.item_id,
            score=round(score, 6),
            reason=explain(
                h.vector if h.vector is not None or vector_of is None else vector_of(h.item_id), state, recent_vectors
            ),
        )
        for score, h in scored[: params.top_k]
    ]
