"""When to run a micro-batch: a pure, clock-injected helper, so the policy is testable without asyncio.

Encoders are far cheaper per item in batches (one forward pass for 32 frames instead of 32), but a lone item
must not wait forever for company. ``MicroBatcher`` holds items until either ``max_size`` are waiting or the
oldest has waited ``max_wait_s``; the caller owns the clock and the sleeping (``deadline`` says until when).
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["MicroBatcher"]


class MicroBatcher(Generic[T]):
    """Collects items; ``add`` hands back a full batch, ``due`` says when a partial one has waited long enough.

    Typical loop::

        batch = batcher.add(item, now) or (batcher.drain() if batcher.due(now) else None)
        # else sleep until batcher.deadline
    """

    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._items: list[T] = []
        self._oldest: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def deadline(self) -> float | None:
        """The time at which the waiting items become due, or None when nothing waits."""
        return None if self._oldest is None else self._oldest + self.max_wait_s

    def add(self, item: T, now: float) -> list[T] | None:
        """Queue ``item`` (arrived at ``now``); returns the batch when this item filled it, else None."""
        if self._oldest is None:
            self._oldest = now
        self._items.append(item)
        if len(self._items) >= self.max_size:
            return self.drain()
        return None

    def due(self, now: float) -> bool:
        """True when items wait and the oldest has waited ``max_wait_s`` (or the batch is full)."""
        if not self._items or self._oldest is None:
            return False
        return len(self._items) >= self.max_size or now - self._oldest >= self.max_wait_s

    def drain(self) -> list[T]:
        """All waiting items, oldest first; the batcher is empty afterwards."""
        items, self._items, self._oldest = self._items, [], None
        return items
