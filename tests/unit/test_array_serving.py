"""The serving path's array shortcuts give what the plain code gave (issue 15): ids-only search, the
co-engagement partition, and trending's kept top list."""

from __future__ import annotations

import numpy as np

from ranking.domain import Feed
from ranking.index import IndexedItem
from ranking.local_tier import LocalSearchTier
from ranking.memory_index import InMemoryIndex
from ranking.signal import Candidates, RankRequest
from ranking.signals import best_by_score, search_ids
from ranking.trending import Trending, TrendingParams


class NoCatalog:
    tracks_writes = True

    def changed_since(self, stamp: float | None) -> dict[str, float]:
        return {}

    def live_ids(self) -> set[str]:
        return set()

    def count(self) -> int:
        return 0

    def fetch(self, item_ids: object) -> list[IndexedItem]:
        return []


def catalogue(n: int, dim: int, seed: int) -> list[IndexedItem]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors[1::7] = vectors[0]  # duplicate vectors: tied scores
    return [IndexedItem(f"i{k}", Feed.short_video, False, float(k), f"t{k}", vectors[k]) for k in range(n)]


def test_search_ids_are_the_ids_of_search() -> None:
    items = catalogue(300, 16, 1)
    memory = InMemoryIndex(16)
    memory.upsert(items)
    tier = LocalSearchTier(InMemoryIndex(16), NoCatalog(), 16, start=False)
    tier.upsert(items)
    queries = list(np.random.default_rng(2).standard_normal((9, 16)).astype(np.float32))
    queries.append(items[0].vector)  # a query tied with every duplicate
    for index in (memory, tier):
        for limit in (1, 10, 57, 400):
            want = [[h.item_id for h in hits] for hits in index.search(queries, Feed.short_video, limit)]
            assert search_ids(index, queries, Feed.short_video, limit) == want
            assert index.search_ids(queries, Feed.short_video, limit) == want


def test_best_by_score_is_the_full_sort() -> None:
    rng = np.random.default_rng(3)
    for size in (0, 5, 40, 400, 3000):
        scores = {f"i{k}": float(v) for k, v in enumerate(np.round(rng.random(size), 2))}  # many ties
        for limit in (0, 1, 10, 100):
            want = [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]
            assert best_by_score(scores, limit) == want


def test_trending_top_is_kept_until_scores_or_clock_change() -> None:
    t = Trending(TrendingParams(half_life_s=10.0, window_s=100.0))
    t.learn_one("a", Feed.short_video, 1.0, 0.0)
    t.learn_one("b", Feed.short_video, 2.0, 0.0)
    first = t.top(Feed.short_video, 5)
    assert first == t._sorted_top(Feed.short_video, 5, ())
    first.clear()  # callers get a copy
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["b", "a"]
    t.learn_one("a", Feed.short_video, 5.0, 1.0)  # scores and clock move
    assert t.top(Feed.short_video, 5) == t._sorted_top(Feed.short_video, 5, ())
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["a", "b"]
    t.forget("a")
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["b"]
    t.scores[Feed.short_video]["c"] = (9.0, 1.0)  # a direct write is seen after invalidate()
    t.invalidate()
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["c", "b"]
    assert t.top(Feed.short_video, 5, exclude={"c"}) == t._sorted_top(Feed.short_video, 5, {"c"})


def test_trending_top_is_the_full_sort_with_ties_and_idle_items() -> None:
    rng = np.random.default_rng(4)
    t = Trending(TrendingParams(half_life_s=50.0, window_s=400.0))
    for k in range(3000):  # rounded weights at few timestamps: many exact ties, broken by id
        t.learn_one(f"i{k % 900}", Feed.short_video, float(np.round(rng.random(), 1)), float(rng.integers(0, 500)))
    row = t.scores[Feed.short_video]
    live = [(t._decayed(s, ts, t.clock), i) for i, (s, ts) in row.items() if t.clock - ts <= 400.0]
    want = [(i, s) for s, i in sorted(live, key=lambda si: (-si[0], si[1]))]
    assert len(want) < len(row)  # some items have left the window
    for limit in (0, 1, 30, 10_000):
        assert t._sorted_top(Feed.short_video, limit, ()) == want[:limit]
    assert t._sorted_top(Feed.short_video, 30, {want[0][0]}) == want[1:31]


def test_item_codes_name_each_row_by_its_distinct_item() -> None:
    items = ["b", "a", "b", "c", "a", "b"]
    plain = Candidates(np.zeros(6, np.int64), items, np.array([0, 6]), None, np.zeros(6), np.zeros((6, 1), bool))
    distinct, codes = plain.item_codes()
    assert distinct == ["b", "a", "c"] and codes.tolist() == [0, 1, 0, 2, 1, 0]
    vectors = np.eye(3, dtype=np.float32)
    merged = Candidates(
        np.zeros(6, np.int64), items, np.array([0, 6]), None, np.zeros(6), np.zeros((6, 1), bool),
        item_vectors=vectors, vector_rows=np.array([2, 0, 2, 1, 0, 2]), distinct=["a", "c", "b"],
    )  # fmt: skip
    distinct, codes = merged.item_codes()
    assert [distinct[c] for c in codes] == items
    assert (merged.block(0, 6) == vectors[codes]).all()  # the codes are the rows of ``item_vectors``


def test_servable_mask_is_servable_of_each_id() -> None:
    items = catalogue(30, 8, 5)
    items[3] = IndexedItem("i3", Feed.live, True, 3.0, "t3", items[3].vector)  # on air
    items[4] = IndexedItem("i4", Feed.live, False, 4.0, "t4", items[4].vector)  # ended
    memory = InMemoryIndex(8)
    memory.upsert(items)
    ids = ["i3", "nope", "i4", "i0", "i3", "i29", "also-nope"]
    for feed in (Feed.short_video, Feed.live):
        request = RankRequest(feed, [], 0.0, memory)
        request.items(ids)
        assert request.servable_mask(ids).tolist() == [request.servable(i) for i in ids]
    assert RankRequest(Feed.live, [], 0.0, memory).servable_mask([]).tolist() == []
