"""An in-process search tier in front of Milvus: candidate retrieval without a server round trip.

Why: on the interaction hot path a Milvus (Lite) search costs 20-200 ms per call and dominated the
worker's time per micro-batch (README "Benchmarks"). This tier keeps every item vector of each feed in
a numpy matrix (``ranking.feed_matrix``) and answers ``search`` from an IVF index beside it (or, with
``SearchTierParams.kind="exact"``, and for the small live feed, with one matrix product), and ``get``
from a dict. Milvus stays the source of truth: writes go to Milvus first and then here
(write-through), and a background thread polls Milvus for what other workers wrote (new items,
live-status flips), so those appear within
``refresh_s``, or longer where polls are dear: Milvus Lite evaluates every query over every row
(~0.65 s of server CPU per query at 19,220 items, whatever the filter), so the wait between polls
grows to keep polling under ``max_poll_share`` of the time, and the count check that catches writes
the stamps missed runs at most every ``count_check_s``. Back-to-back polls at 1 s kept half a core
of this 2-core machine busy while idle. Exact search is O(items) per query
(~42 interactions/s drained at 1M items); the IVF index keeps recall@100 near 1 at a fraction of that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from ranking.domain import Feed
from ranking.feed_matrix import AnnFeedMatrix, FeedMatrix, SearchTierParams, new_feed_matrix
from ranking.index import Hit, Index, IndexedItem

__all__ = ["Catalog", "FeedMatrix", "LocalSearchTier", "SearchTierParams", "searchable"]

log = logging.getLogger(__name__)

FETCH_CHUNK = 4_096  # items per fetch by primary key: a poll merges each chunk as it arrives


class Catalog(Protocol):
    """Read-only queries the tier polls to learn what other workers wrote (``storage.catalog.MilvusCatalog``).

    A stamp is what ``changed_since`` orders by: the write stamp (``storage.milvus.WRITE_STAMP``) when
    the collection has one (``tracks_writes``: every upsert, live flips and refreshed vectors included,
    shows up), else the item's ``created_at`` (new items only; flips need ``live_ids``).
    """

    tracks_writes: bool

    def changed_since(self, stamp: float | None) -> dict[str, float]: ...
    def live_ids(self) -> set[str]: ...
    def count(self) -> int: ...
    def fetch(self, item_ids: Sequence[str]) -> list[IndexedItem]: ...


def searchable(item: IndexedItem) -> bool:
    """Whether an item belongs in its feed's results (ended live streams stay indexed but hidden)."""
    return item.feed is not Feed.live or item.is_live


class LocalSearchTier:
    """An ``Index`` (``ranking.index``) over a Milvus-backed one: reads in memory, writes through.

    Thread safety: the agents call it from one executor thread and the refresher from its own; one
    lock guards the in-memory state, never held across a Milvus call. A write by this worker bumps the
    item's sequence number, and a refresh result older than that write is not applied over it (so a
    stream that just ended here cannot be revived by a poll that started before the end).
    """

    def __init__(
        self,
        source: Index,
        catalog: Catalog,
        dim: int,
        refresh_s: float = 1.0,
        lookback_s: float = 0.0,
        start: bool = True,
        search: SearchTierParams | None = None,
        max_poll_share: float = 0.2,
        count_check_s: float = 30.0,
    ) -> None:
        self.source = source
        self.catalog = catalog
        self.dim = dim
        self.refresh_s = refresh_s
        self.lookback_s = lookback_s
        self.items: dict[str, IndexedItem] = {}
        self.search_params = search or SearchTierParams()
        self.feeds: dict[Feed, FeedMatrix] = {f: new_feed_matrix(dim, f, self.search_params) for f in Feed}
        self._written_seq: dict[str, int] = {}
        self._seq = 0
        self._stamp = 0.0  # newest catalog stamp taken in (see Catalog)
        # ids taken in within the look-back window, with their stamps (refresher thread only): each poll
        # re-reads the window and fetches only what is not here. Without it, every poll re-fetched and
        # re-indexed every item of the window (after a bulk load, half the catalogue, forever).
        self._window: dict[str, float] = {}
        self.last_poll_s = 0.0
        self.max_poll_share = max_poll_share
        self.count_check_s = count_check_s
        self._next_count_check = 0.0  # monotonic time; the first quiet poll checks
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0
        self.last_refresh_error: str | None = None
        self.load()
        if start and refresh_s > 0:
            self._thread = threading.Thread(target=self._refresh_loop, name="livelens-local-tier", daemon=True)
            for matrix in self.feeds.values():  # the refresher builds indexes: a search never waits for one
                if isinstance(matrix, AnnFeedMatrix):
                    matrix.build_on_search = False
            self._thread.start()

    # --- Index interface -------------------------------------------------------------------------
    def upsert(self, items: Sequence[IndexedItem]) -> None:
        self.source.upsert(items)
        with self._lock:
            for it in items:
                self._seq += 1
                self._written_seq[it.item_id] = self._seq
                self._apply(it)

    def get(self, item_ids: Iterable[str], use_cache: bool = True) -> dict[str, IndexedItem]:
        """Items by id from memory; ``use_cache=False`` reads Milvus (a check-then-write must see the truth)."""
        if not use_cache:
            with self._lock:
                seq = self._seq
            fetched = self.source.get(list(dict.fromkeys(item_ids)), use_cache=False)
            self.merge(fetched.values(), since_seq=seq)
            return fetched
        # Lock-free read: writers only assign whole values into the dict (atomic under the GIL), and
        # this is called per recommended item, so it must stay cheap.
        ids = list(item_ids)
        values = list(map(self.items.get, ids))  # the look-ups in C (a micro-batch asks for ~5,000)
        missing = list(dict.fromkeys(i for i, it in zip(ids, values, strict=True) if it is None))
        found: dict[str, IndexedItem] = dict(zip(ids, values, strict=True))
        if missing:
            for i in missing:
                del found[i]  # written by another worker since the last refresh: ask Milvus, remember
            fetched = self.source.get(missing)
            self.merge(fetched.values(), since_seq=None)
            found.update(fetched)
        return found

    def set_live(self, item_id: str, is_live: bool) -> IndexedItem | None:
        item = self.source.set_live(item_id, is_live)
        if item is not None:
            with self._lock:
                self._seq += 1
                self._written_seq[item_id] = self._seq
                self._apply(item)
        return item

    def search(
        self, queries: Sequence[np.ndarray], feed: Feed, limit: int, with_vectors: bool = False
    ) -> list[list[Hit]]:
        if not len(queries):
            return []
        q = np.stack([np.asarray(x, dtype=np.float32) for x in queries])
        with self._lock:
            matrix = self.feeds[feed]
            ids, items = matrix.ids, self.items
            out: list[list[Hit]] = []
            for rows, scores in matrix.top_rows(q, limit):
                hits = []
                for j, score in zip(rows, scores, strict=True):
                    it = items[ids[j]]
                    vector = it.vector if with_vectors else None
                    hits.append(Hit(it.item_id, score, feed, it.created_at, it.title, vector))
                out.append(hits)
            return out

    def search_ids(self, queries: Sequence[np.ndarray], feed: Feed, limit: int) -> list[list[str]]:
        """``search`` as item ids only (the ranking path reads nothing else of a hit)."""
        if not len(queries):
            return []
        q = np.stack([np.asarray(x, dtype=np.float32) for x in queries])
        with self._lock:
            matrix = self.feeds[feed]
            ids = matrix.ids
            return [list(map(ids.__getitem__, rows)) for rows, _ in matrix.top_rows(q, limit)]

    def count(self) -> int:
        with self._lock:
            return len(self.items)

    def forget(self, item_ids: Iterable[str]) -> int:
        """Drop items deleted from Milvus from this copy (polls report writes, not deletes): they are never
        returned again. An item still in Milvus comes back with the next quiet poll's count check.
        Returns how many were known."""
        n = 0
        with self._lock:
            for item_id in item_ids:
                old = self.items.pop(item_id, None)
                if old is not None:
                    self.feeds[old.feed].set_active(item_id, False)
                    n += 1
        return n

    def sync_indexes(self) -> None:
        """Build the ANN index a feed has grown into, and apply pending writes, off the query path:
        called after the start-up load and after each poll. A build holds the lock only in short steps
        (``AnnFeedMatrix.build``), so searches go on meanwhile."""
        for matrix in self.feeds.values():
            if not isinstance(matrix, AnnFeedMatrix):
                continue
            with self._lock:
                due = matrix.build_due()
            if due:
                matrix.build(self._lock)
            with self._lock:
                matrix.sync(build=False)

    def source_count(self) -> int:
        """Items in Milvus itself (readiness must ask the source of truth, not this copy)."""
        return int(self.source.count())

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    # --- keeping in sync -------------------------------------------------------------------------
    def _apply(self, item: IndexedItem) -> None:
        """Store one item (lock held). The vector is copied into the feed matrix and shared from there."""
        old = self.items.get(item.item_id)
        if old is not None and old.feed is not item.feed:
            self.feeds[old.feed].set_active(item.item_id, False)
        matrix = self.feeds[item.feed]
        buffer = matrix.vectors
        matrix.put(item.item_id, item.vector, searchable(item))
        if matrix.vectors is not buffer:
            self._share_rows(item.feed)
        vector = matrix.vectors[matrix.row_of[item.item_id]]
        self.items[item.item_id] = item.with_vector(vector)

    def _share_rows(self, feed: Feed) -> None:
        """The feed's matrix grew into a new buffer: point its items' vectors at their rows there (lock
        held). Views into the old buffer would keep it alive, so every doubling would stay resident
        (at 200k items, 9 buffers and 2.2x the matrix's memory)."""
        matrix = self.feeds[feed]
        for item_id, row in matrix.row_of.items():
            it = self.items.get(item_id)
            if it is not None and it.feed is feed:
                self.items[item_id] = it.with_vector(matrix.vectors[row])

    def merge(self, items: Iterable[IndexedItem], since_seq: int | None) -> int:
        """Apply items read from Milvus, except those this worker wrote after the read began."""
        n = 0
        with self._lock:
            for it in items:
                if since_seq is not None and self._written_seq.get(it.item_id, 0) > since_seq:
                    continue
                self._apply(it)
                n += 1
        return n

    def merge_live(self, live: set[str], since_seq: int) -> int:
        """Make the live feed's searchable set equal Milvus's, except items written here since."""
        changed = 0
        with self._lock:
            matrix = self.feeds[Feed.live]
            for item_id, row in matrix.row_of.items():
                want = item_id in live
                if bool(matrix.active[row]) == want or self._written_seq.get(item_id, 0) > since_seq:
                    continue
                matrix.set_active(item_id, want)
                old = self.items[item_id]
                self.items[item_id] = old.with_live(want)
                changed += 1
        return changed

    def load(self) -> int:
        """Read the whole collection (start-up)."""
        stamps = self.catalog.changed_since(None)
        n = self._catch_up(stamps, since_seq=None)
        self._remember_window(stamps)
        self.sync_indexes()
        return n

    def _remember_window(self, taken: dict[str, float]) -> None:
        """Note ``taken``'s stamps and forget those that fell out of the look-back window."""
        if not self.catalog.tracks_writes or self.lookback_s <= 0:
            return
        floor = self._stamp - self.lookback_s
        self._window.update((i, s) for i, s in taken.items() if s >= floor)
        self._window = {i: s for i, s in self._window.items() if s >= floor}

    def _catch_up(self, stamps: dict[str, float], since_seq: int | None) -> int:
        """Fetch ``stamps``' items in chunks, each merged as it arrives (a bulk load of 100,000s of items
        makes progress even if a later chunk's call fails or times out); the stamp watermark advances only
        once every chunk is in, so a failed poll is retried from where it stood."""
        ids = sorted(stamps)
        n = 0
        for start in range(0, len(ids), FETCH_CHUNK):
            n += self.merge(self.catalog.fetch(ids[start : start + FETCH_CHUNK]), since_seq)
        if stamps:
            with self._lock:
                self._stamp = max(self._stamp, max(stamps.values()))
        return n

    def refresh(self) -> dict[str, int]:
        """One poll: what changed since the stamp watermark (minus a look-back for late or skewed writers);
        without write stamps also the live set; and, when the poll brought nothing new and no count check
        ran in the last ``count_check_s``, a count check that fetches whatever is still missing (writes
        the stamps missed)."""
        started = time.perf_counter()
        with self._lock:
            seq, stamp = self._seq, self._stamp
        if self.catalog.tracks_writes:
            polled = self.catalog.changed_since(stamp - self.lookback_s if stamp > 0 else None)
            changed = {i: s for i, s in polled.items() if self._window.get(i) != s}  # not taken in yet
        else:  # created_at is no write clock (a bulk load may share one): no look-back, and none asked at 0
            changed = self.catalog.changed_since(stamp) if stamp > 0 else {}
        new = sum(1 for i in changed if i not in self.items)
        self._catch_up(changed, seq)
        self._remember_window(changed)
        flipped = 0
        if not self.catalog.tracks_writes:
            # Live streams' vectors change while they run (encoders/live.py, maybe on an encoder worker):
            # without write stamps, re-read them each poll; the live set is small next to the catalogue.
            live = self.catalog.live_ids()
            flipped = self.merge_live(live, seq)
            self.merge(self.catalog.fetch(sorted(live)), seq)
        missing: list[str] = []
        if not new and time.monotonic() >= self._next_count_check:
            self._next_count_check = time.monotonic() + self.count_check_s
            if self.catalog.count() != self.count():
                known = set(self.items)
                missing = [i for i in self.catalog.changed_since(None) if i not in known]
                self._catch_up(dict.fromkeys(missing, 0.0), seq)
        self.sync_indexes()
        self.refreshes += 1
        self.last_poll_s = time.perf_counter() - started
        return {"changed": len(changed), "new": new, "live_flips": flipped, "missing_fetched": len(missing)}

    def poll_wait_s(self) -> float:
        """Seconds until the next poll: ``refresh_s``, or long enough that polls of ``last_poll_s`` take
        at most ``max_poll_share`` of the time."""
        return max(self.refresh_s, self.last_poll_s * (1.0 / self.max_poll_share - 1.0))

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.poll_wait_s()):
            try:
                self.refresh()
                self.last_refresh_error = None
            except Exception as exc:  # Milvus briefly down: keep serving what we have, retry next tick
                self.last_refresh_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("local search tier refresh failed: %s", self.last_refresh_error)
