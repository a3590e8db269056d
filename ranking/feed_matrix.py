"""One feed's item vectors for the in-process search tier: exact top-k, or an IVF index (faiss) beside it.

Why: exact search is one matrix product over every row, O(items) per query: at 1M items a worker
drained ~42 interactions/s. ``AnnFeedMatrix`` keeps the same rows (the tier's items share their vectors
from them, and the found rows are rescored exactly) and answers top-k from a faiss IVF index with
float16 codes. IVF, not HNSW, by measurement on clustered multi-topic queries (bench/README.md
"Retrieval", issue 15): at 100k × 384 IVF nlist 1024 nprobe 32 had recall@100 0.9997 at 0.24 ms p50,
HNSW M 32 efSearch 512 0.93 at 0.82 ms. IVF also removes and re-adds single vectors (HNSW cannot
remove), which a catalogue whose live streams are re-encoded every few seconds needs.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ranking.domain import Feed

SearchKind = Literal["exact", "ann"]
Codes = Literal["fp16", "sq8", "flat"]
MIN_POINTS_PER_LIST = 39  # faiss k-means wants at least this many training points per centroid
TRAIN_POINTS_PER_LIST = 50  # a sample this size per list trains as well as all rows, much faster
ADD_CHUNK = 65_536
EXACT_FEEDS = frozenset({Feed.live})  # small, and filtered by "live now": searched exactly, nothing lost


@dataclass(frozen=True)
class SearchTierParams:
    """How the in-process tier searches a feed (``LIVELENS_LOCAL_SEARCH_*``).

    ``kind``: "exact" (matrix product over every row) or "ann" (IVF). A feed with fewer than
    ``exact_below`` searchable items is searched exactly either way (training an IVF on a few items
    buys nothing), and the live feed always is. The IVF has ``nlist`` lists (fewer when trained on
    fewer than 39 × nlist items), searches ``nprobe`` of them, stores ``codes`` (float16 by default),
    and is retrained from scratch once the feed has grown ``retrain_growth``-fold since it was trained.
    """

    kind: SearchKind = "ann"
    nlist: int = 1024
    nprobe: int = 32
    # 10,000: at MicroLens-50K's 19,220 items the IVF (492 lists, 32 probed) drains a median 268
    # interactions/s against 244 exact, and moves strict HR@10 by -0.7 % (bench/README.md "The IVF at 19,220 items")
    exact_below: int = 10_000
    codes: Codes = "fp16"
    retrain_growth: float = 4.0

    def searches_exactly(self, n_items: int) -> bool:
        """Whether a feed of ``n_items`` searchable items is searched exactly (no IVF yet, or none asked)."""
        return self.kind == "exact" or n_items < max(1, self.exact_below)


class FeedMatrix:
    """One feed's item vectors as rows of a growable float32 matrix, with a mask of searchable rows.

    Rows are never moved (an item keeps its row for life: the tier's items share their vectors from
    it), so an update is an in-place write and a removal just clears the mask bit. Exact search
    multiplies by the searchable rows only when they are a minority.
    """

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.vectors = np.zeros((capacity, dim), dtype=np.float32)
        self.active = np.zeros(capacity, dtype=bool)
        self._active_rows: np.ndarray | None = None  # cache of flatnonzero(active), None when stale

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_active(self) -> int:
        return len(self.active_rows())

    def active_rows(self) -> np.ndarray:
        """Row numbers of the searchable items, ascending (cached until a row's flag changes)."""
        if self._active_rows is None:
            self._active_rows = np.flatnonzero(self.active[: len(self.ids)])
        return self._active_rows

    def put(self, item_id: str, vector: np.ndarray, active: bool) -> None:
        row = self.row_of.get(item_id)
        if row is None:
            row = len(self.ids)
            if row == len(self.vectors):
                self._grow()
            self.ids.append(item_id)
            self.row_of[item_id] = row
        self.vectors[row] = vector
        if self.active[row] != active:
            self.active[row] = active
            self._active_rows = None
        self._changed(row)

    def set_active(self, item_id: str, active: bool) -> bool:
        """Returns False when the item has no row here."""
        row = self.row_of.get(item_id)
        if row is None:
            return False
        if self.active[row] != active:
            self.active[row] = active
            self._active_rows = None
            self._changed(row)
        return True

    def _changed(self, row: int) -> None:
        """A row's vector or flag changed (a hook for indexes kept beside the matrix)."""

    def _grow(self) -> None:
        capacity = max(1024, 2 * len(self.vectors))
        vectors = np.zeros((capacity, self.dim), dtype=np.float32)
        vectors[: len(self.ids)] = self.vectors[: len(self.ids)]
        active = np.zeros(capacity, dtype=bool)
        active[: len(self.ids)] = self.active[: len(self.ids)]
        self.vectors, self.active = vectors, active

    def top(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` best active rows by inner product for each query, best first."""
        return [
            [(self.ids[j], s) for j, s in zip(rows, scores, strict=True)] for rows, scores in self.top_rows(queries, k)
        ]

    def top_rows(self, queries: np.ndarray, k: int) -> list[tuple[list[int], list[float]]]:
        """``top`` as (row numbers, scores) per query, as Python lists (cheaper to walk than arrays)."""
        return self.exact_top_rows(queries, k)

    def exact_top_rows(self, queries: np.ndarray, k: int) -> list[tuple[list[int], list[float]]]:
        n = len(self.ids)
        rows = self.active_rows()
        k = min(k, len(rows))
        if k <= 0:
            return [([], []) for _ in range(len(queries))]
        q = np.asarray(queries, dtype=np.float32)
        if len(rows) < n // 2:  # few searchable rows: multiply by those alone
            scores = q @ self.vectors[rows].T
            col_row: np.ndarray | None = rows
        else:
            scores = q @ self.vectors[:n].T
            col_row = None
            if len(rows) < n:
                scores[:, ~self.active[:n]] = -np.inf
        m = scores.shape[1]
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (len(scores), 1))
        out: list[tuple[list[int], list[float]]] = []
        for row, cols in zip(scores, part, strict=True):
            order = cols[np.argsort(-row[cols], kind="stable")]
            found = order if col_row is None else col_row[order]
            out.append((found.tolist(), row[order].tolist()))
        return out


class LiveFeedMatrix(FeedMatrix):
    """A ``FeedMatrix`` that also keeps the searchable rows' vectors packed together, for exact search.

    Why: the live feed's searchable items (streams on air now) are a small, ever-changing minority of
    its rows (every stream that ever ran), and their vectors are rewritten every few seconds. Gathering
    them per search copied every on-air vector each time (20 ms a query for 20k on air at 1M items);
    the packed copy is kept in step by each write (O(1): append, overwrite, or swap with the last).
    """

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        super().__init__(dim, capacity)
        self.packed = np.zeros((64, dim), dtype=np.float32)
        self.packed_rows = np.zeros(64, dtype=np.int64)
        self.n_packed = 0
        self._pos: dict[int, int] = {}

    def _changed(self, row: int) -> None:
        pos = self._pos.get(row)
        if self.active[row]:
            if pos is None:
                if self.n_packed == len(self.packed):
                    self.packed = np.concatenate([self.packed, np.zeros_like(self.packed)])
                    self.packed_rows = np.concatenate([self.packed_rows, np.zeros_like(self.packed_rows)])
                pos = self._pos[row] = self.n_packed
                self.packed_rows[pos] = row
                self.n_packed += 1
            self.packed[pos] = self.vectors[row]
        elif pos is not None:
            last = self.n_packed - 1
            if pos != last:
                moved = int(self.packed_rows[last])
                self.packed[pos], self.packed_rows[pos] = self.packed[last], moved
                self._pos[moved] = pos
            del self._pos[row]
            self.n_packed = last

    def exact_top_rows(self, queries: np.ndarray, k: int) -> list[tuple[list[int], list[float]]]:
        m = self.n_packed
        k = min(k, m)
        if k <= 0:
            return [([], []) for _ in range(len(queries))]
        scores = np.asarray(queries, dtype=np.float32) @ self.packed[:m].T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < m else np.tile(np.arange(m), (len(scores), 1))
        out: list[tuple[list[int], list[float]]] = []
        for row, cols in zip(scores, part, strict=True):
            order = cols[np.argsort(-row[cols], kind="stable")]
            out.append((self.packed_rows[order].tolist(), row[order].tolist()))
        return out


class AnnFeedMatrix(FeedMatrix):
    """A ``FeedMatrix`` searched through a faiss IVF index of its searchable rows (ids = row numbers).

    The index starts absent (exact search) and is trained once the feed holds ``exact_below`` searchable
    items, and rebuilt from scratch (new lists for a grown catalogue) at ``retrain_growth`` times the
    items it was trained on. Writes only mark rows pending; each search (and the tier's refresh) first
    applies them: a row whose vector changed or that stopped being searchable is removed from the
    index, and re-added when searchable. So a removed item is never returned and a re-encoded one is found where it is
    now. The index's float16 codes only choose the candidates: their scores come from the float32 rows.
    """

    def __init__(self, dim: int, params: SearchTierParams, capacity: int = 1024) -> None:
        super().__init__(dim, capacity)
        self.params = params
        self.ivf: Any = None  # faiss.IndexIVFScalarQuantizer, built by ``build``
        self._quantizer: Any = None  # the IVF's coarse quantizer, kept alive beside it
        self.nlist = 0
        self.trained_on = 0
        self.builds = 0
        self._in_index = np.zeros(capacity, dtype=bool)
        self._pending: set[int] = set()  # rows changed since the index last saw them
        self._next_pending: set[int] | None = None  # the same for an index being built
        # False when a background thread builds (``LocalSearchTier`` with its refresher): a search
        # then never waits for a build; it searches exactly (or the old index) until the swap.
        self.build_on_search = True

    def _changed(self, row: int) -> None:
        if self.ivf is not None:
            self._pending.add(row)
        if self._next_pending is not None:
            self._next_pending.add(row)

    def _grow(self) -> None:
        super()._grow()
        in_index = np.zeros(len(self.vectors), dtype=bool)
        in_index[: len(self._in_index)] = self._in_index
        self._in_index = in_index

    def build_due(self) -> bool:
        """Whether the feed has grown into an index (or ``retrain_growth``-fold past the one it has)."""
        n = self.n_active
        return n >= max(1, self.params.exact_below) and (
            self.ivf is None or n >= self.params.retrain_growth * self.trained_on
        )

    def sync(self, build: bool = True) -> None:
        """Bring the index up to date: build it first when due (``build``), then apply the pending rows."""
        if build and self.build_due():
            self.build(contextlib.nullcontext())
        if self.ivf is None or not self._pending:
            return
        import faiss

        rows = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
        self._pending.clear()
        rows.sort()
        drop = rows[self._in_index[rows]]
        if len(drop):
            self.ivf.remove_ids(faiss.IDSelectorArray(len(drop), faiss.swig_ptr(drop)))
        add = rows[self.active[rows]]
        if len(add):
            self.ivf.add_with_ids(self.vectors[add], add)
        self._in_index[rows] = False
        self._in_index[add] = True

    def build(self, lock: AbstractContextManager[Any]) -> None:
        """(Re)build the index while searches go on: ``lock`` (the tier's) is held only to take the rows
        and a training sample, for each chunk of rows added, and for the swap. The old index (or exact
        search) serves meanwhile; rows written meanwhile are re-applied to the new one after the swap."""
        import faiss

        with lock:
            rows = self.active_rows().copy()
            nlist = max(1, min(self.params.nlist, len(rows) // MIN_POINTS_PER_LIST))
            sample = rows
            if len(rows) > TRAIN_POINTS_PER_LIST * nlist:
                rng = np.random.default_rng(len(rows))
                sample = np.sort(rng.choice(rows, TRAIN_POINTS_PER_LIST * nlist, replace=False))
            training = self.vectors[sample]  # a copy
            self._next_pending = set()
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf: Any
        if self.params.codes == "flat":
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            qtype = faiss.ScalarQuantizer.QT_fp16 if self.params.codes == "fp16" else faiss.ScalarQuantizer.QT_8bit
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove by id
        ivf.train(training)  # faiss releases the GIL: the worker's other threads run meanwhile
        del training
        for start in range(0, len(rows), ADD_CHUNK):
            chunk = rows[start : start + ADD_CHUNK]
            with lock:  # the rows' vectors as they are now (a write between chunks is pending anyway)
                ivf.add_with_ids(self.vectors[chunk], chunk)
        with lock:
            self.ivf, self._quantizer, self.nlist, self.trained_on = ivf, quantizer, nlist, len(rows)
            self._in_index[:] = False
            self._in_index[rows] = True
            self._pending, self._next_pending = self._next_pending or set(), None
            self.builds += 1

    def top_rows(self, queries: np.ndarray, k: int) -> list[tuple[list[int], list[float]]]:
        self.sync(build=self.build_on_search)
        if self.ivf is None or self.n_active < self.params.exact_below:
            return self.exact_top_rows(queries, k)
        k = min(k, self.n_active)
        if k <= 0:
            return [([], []) for _ in range(len(queries))]
        q = np.ascontiguousarray(queries, dtype=np.float32)
        self.ivf.nprobe = min(self.params.nprobe, self.nlist)
        _, found = self.ivf.search(q, k)
        out: list[tuple[list[int], list[float]]] = []
        for qv, ids in zip(q, found, strict=True):
            rows = ids[ids >= 0]
            scores = self.vectors[rows] @ qv  # exact float32 scores for the candidates the codes chose
            order = np.argsort(-scores, kind="stable")
            out.append((rows[order].tolist(), scores[order].tolist()))
        return out


def new_feed_matrix(dim: int, feed: Feed, params: SearchTierParams) -> FeedMatrix:
    """The matrix the tier keeps for ``feed`` under ``params`` (the live feed is always exact)."""
    if feed in EXACT_FEEDS:
        return LiveFeedMatrix(dim)
    if params.kind == "ann":
        return AnnFeedMatrix(dim, params)
    return FeedMatrix(dim)
