"""An exact in-memory item index (``ranking.index.Index``), like the Milvus-backed ``storage.milvus.MilvusIndex``.

Offline evaluation ranks every user against the full catalogue: doing that through the same
interface keeps it on the code path the live agents use, without a server round trip per query.
With ``search`` (``SearchTierParams``) it searches as the worker's in-process tier does (the IVF
index with its float16 codes, ``ranking.feed_matrix``), so an evaluation can measure what the ANN
tier costs in ranking quality.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ranking.domain import Feed
from ranking.feed_matrix import FeedMatrix, SearchTierParams, new_feed_matrix
from ranking.index import Hit, IndexedItem


class InMemoryIndex:
    def __init__(self, dim: int, search: SearchTierParams | None = None) -> None:
        self.dim = dim
        self.search_params = search
        self._items: dict[str, IndexedItem] = {}
        self._matrix: dict[Feed, tuple[list[str], np.ndarray]] | None = None
        self._tier: dict[Feed, FeedMatrix] = {}

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        for it in items:
            self._items[it.item_id] = it
        self._matrix = None
        self._tier = {}

    def get(self, item_ids: Iterable[str], use_cache: bool = True) -> dict[str, IndexedItem]:
        """``use_cache`` is accepted for interface parity with ``MilvusIndex``: this index is its own truth."""
        return {i: self._items[i] for i in item_ids if i in self._items}

    def set_live(self, item_id: str, is_live: bool) -> IndexedItem | None:
        item = self._items.get(item_id)
        if item is None:
            return None
        self.upsert([item.with_live(is_live)])
        return self._items[item_id]

    def count(self) -> int:
        return len(self._items)

    def _feed_matrix(self, feed: Feed) -> tuple[list[str], np.ndarray]:
        if self._matrix is None:
            self._matrix = {}
            for f in Feed:
                ids = [i for i, it in self._items.items() if it.feed is f and (f is not Feed.live or it.is_live)]
                vecs = [self._items[i].vector for i in ids]
                matrix = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, self.dim), np.float32)
                self._matrix[f] = (ids, matrix)
        return self._matrix[feed]

    def scores(self, queries: np.ndarray, feed: Feed) -> tuple[list[str], np.ndarray]:
        """Inner products of every query with every item of the feed: (ids, [n_queries, n_items])."""
        ids, matrix = self._feed_matrix(feed)
        return ids, np.asarray(queries, dtype=np.float32) @ matrix.T

    def search(
        self, queries: Sequence[np.ndarray], feed: Feed, limit: int, with_vectors: bool = False
    ) -> list[list[Hit]]:
        if not len(queries):
            return []
        if self.search_params is not None:
            return self._tier_search(np.stack(queries), feed, limit, with_vectors)
        ids, scores = self.scores(np.stack(queries), feed)
        out: list[list[Hit]] = []
        for row, top in zip(scores, self._top(scores, limit, len(ids)), strict=True):
            hits = []
            for j in top:
                it = self._items[ids[j]]
                hits.append(
                    Hit(
                        it.item_id, float(row[j]), it.feed, it.created_at, it.title, it.vector if with_vectors else None
                    )
                )
            out.append(hits)
        return out

    def _tier_search(self, queries: np.ndarray, feed: Feed, limit: int, with_vectors: bool) -> list[list[Hit]]:
        """``search`` through the worker tier's feed matrix (built on first use after a write)."""
        matrix = self._tier.get(feed)
        if matrix is None:
            assert self.search_params is not None
            matrix = self._tier[feed] = new_feed_matrix(self.dim, feed, self.search_params)
            for it in self._items.values():
                if it.feed is feed:
                    matrix.put(it.item_id, it.vector, feed is not Feed.live or it.is_live)
        out: list[list[Hit]] = []
        for rows, scores in matrix.top_rows(queries, limit):
            hits = []
            for j, score in zip(rows, scores, strict=True):
                it = self._items[matrix.ids[j]]
                hits.append(
                    Hit(it.item_id, score, it.feed, it.created_at, it.title, it.vector if with_vectors else None)
                )
            out.append(hits)
        return out

    def search_ids(self, queries: Sequence[np.ndarray], feed: Feed, limit: int) -> list[list[str]]:
        """``search`` as item ids only: ranking needs no hit objects (see ``ranking.signals.search_unseen``)."""
        if not len(queries):
            return []
        if self.search_params is not None:
            return [[h.item_id for h in hits] for hits in self._tier_search(np.stack(queries), feed, limit, False)]
        ids, scores = self.scores(np.stack(queries), feed)
        return [[ids[j] for j in top.tolist()] for top in self._top(scores, limit, len(ids))]

    @staticmethod
    def _top(scores: np.ndarray, limit: int, n: int) -> list[np.ndarray]:
        k = min(limit, n)
        out = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k else np.array([], dtype=int)
            out.append(top[np.argsort(-row[top])])
        return out
