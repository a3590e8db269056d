"""The newest items per feed, remembered as content arrives (pure, bounded): the exploration slot.

Why: an item nobody has engaged with yet can only be found by content similarity, and only if it
resembles the user's taste; reserving a slot for the newest unseen items gives every new upload a
chance to collect its first interactions (and the user a glimpse of what is new).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from ranking.domain import Feed


@dataclass
class NewItems:
    max_items: int = 200  # per feed
    items: dict[Feed, dict[str, float]] = field(default_factory=lambda: {f: {} for f in Feed})

    def add(self, item_id: str, feed: Feed, created_at: float) -> None:
        row = self.items[feed]
        row[item_id] = created_at
        if len(row) > self.max_items + self.max_items // 4:  # prune with slack: the sort is amortised
            oldest = sorted(row, key=lambda i: (row[i], i))[: len(row) - self.max_items]
            for item in oldest:
                del row[item]

    def forget(self, item_id: str) -> None:
        for row in self.items.values():
            row.pop(item_id, None)

    def newest(self, feed: Feed, limit: int, exclude: Container[str] = ()) -> list[str]:
        """Newest first (by creation time, then id), skipping ``exclude``."""
        row = self.items[feed]
        ranked = sorted((i for i in row if i not in exclude), key=lambda i: (-row[i], i))
        return ranked[:limit]
