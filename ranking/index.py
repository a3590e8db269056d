"""The item index as the core sees it: the plain item and hit types, and the one ``Index`` protocol.

Implementations: ``storage.milvus.MilvusIndex`` (Milvus Lite or a server, the source of truth),
``ranking.local_tier.LocalSearchTier`` (an in-process exact copy in front of it) and
``ranking.memory_index.InMemoryIndex`` (offline evaluation, tests). The ranking code
(``ranking.online``) and the shell's handlers (``streams.handlers``) are written against ``Index``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ranking.domain import Feed


@dataclass(frozen=True)
class IndexedItem:
    item_id: str
    feed: Feed
    is_live: bool
    created_at: float
    title: str
    vector: np.ndarray
    creator_id: str = ""  # who published it ("" when the producer did not say)

    def with_live(self, is_live: bool) -> IndexedItem:
        return replace(self, is_live=is_live)

    def with_vector(self, vector: np.ndarray) -> IndexedItem:
        return replace(self, vector=vector)


@dataclass(frozen=True)
class Hit:
    item_id: str
    similarity: float
    feed: Feed
    created_at: float
    title: str
    vector: np.ndarray | None


class Index(Protocol):
    """Items by id, written whole, searched by inner product within a feed.

    ``search`` returns, per query, the ``limit`` best items of the feed (for the live feed only streams
    that are live now), best first. ``get(..., use_cache=False)`` must read the source of truth (a
    check-then-write, such as "is this stream still live?", must not see a stale copy).
    """

    def upsert(self, items: Sequence[IndexedItem]) -> None: ...
    def get(self, item_ids: Sequence[str], use_cache: bool = True) -> dict[str, IndexedItem]: ...
    def set_live(self, item_id: str, is_live: bool) -> IndexedItem | None: ...
    def search(
        self, queries: Sequence[np.ndarray], feed: Feed, limit: int, with_vectors: bool = False
    ) -> list[list[Hit]]: ...
    def count(self) -> int: ...
