"""``livelens bench retrieval``, the in-process tier's part (issue 15): the worker's own search, exact vs ANN.

The worker searches its in-process copy of the catalogue (``ranking.local_tier``), not Milvus. This
part loads the same synthetic vectors as the Milvus part into a ``LocalSearchTier`` (through its
start-up load, as a worker does), 95 % as short videos and 5 % as live streams of which 2 % of all
items are on air, and measures, one BLAS/OpenMP thread as in the worker (``LIVELENS_BLAS_THREADS=1``):
the exact search it used to do (``FeedMatrix.exact_top_rows``) against the IVF (``AnnFeedMatrix``) over
the short-video feed, recall@100 of the IVF against exact over the same rows, the live feed (exact by
design) against exact over the on-air items, the cost of replacing vectors, and memory. At sizes up to
``CHOICE_MAX_ITEMS`` it also compares the raw faiss candidates the choice of IVF was made between.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from rich.console import Console

from bench.retrieval import TOP_K, exact_topk, ms, recall_at_k
from ranking.domain import Feed
from ranking.feed_matrix import AnnFeedMatrix, SearchTierParams
from ranking.index import Hit, IndexedItem
from ranking.local_tier import LocalSearchTier

ENDED_SHARE = 0.03  # live-feed items whose stream has ended: indexed, never returned
NPROBES = (16, 32, 64)
EXACT_QUERIES = 30  # exact search at 1M costs ~0.2 s a query on one thread
REPLACED = 1_000  # vectors re-encoded between two searches (live streams refresh every ~5 s)
CHOICE_MAX_ITEMS = 200_000  # HNSW builds too slowly beyond this on 2 cores


class ArrayCatalog:
    """The tier's view of 'Milvus' over the bench's arrays: every item written once (stamp 1)."""

    tracks_writes = True

    def __init__(self, items: np.ndarray, n_short: int, on_air: np.ndarray) -> None:
        self.items, self.n_short, self.on_air = items, n_short, on_air

    def item(self, row: int) -> IndexedItem:
        if row < self.n_short:
            return IndexedItem(str(row), Feed.short_video, False, 0.0, "", self.items[row])
        return IndexedItem(str(row), Feed.live, bool(self.on_air[row - self.n_short]), 0.0, "", self.items[row])

    def changed_since(self, stamp: float | None) -> dict[str, float]:
        return dict.fromkeys(map(str, range(len(self.items))), 1.0) if stamp is None else {}

    def live_ids(self) -> set[str]:
        return {str(self.n_short + int(r)) for r in np.flatnonzero(self.on_air)}

    def count(self) -> int:
        return len(self.items)

    def fetch(self, item_ids: Sequence[str]) -> list[IndexedItem]:
        return [self.item(int(i)) for i in item_ids]


class NullSource:
    """Writes through to nothing: the bench measures the tier, not Milvus."""

    def __init__(self, n: int) -> None:
        self.n = n

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        pass

    def get(self, item_ids: Iterable[str], use_cache: bool = True) -> dict[str, IndexedItem]:
        return {}

    def set_live(self, item_id: str, is_live: bool) -> IndexedItem | None:
        return None

    def search(
        self, queries: Sequence[np.ndarray], feed: Feed, limit: int, with_vectors: bool = False
    ) -> list[list[Hit]]:
        return [[] for _ in queries]

    def count(self) -> int:
        return self.n


def timed(fn: Any, args: Iterable[Any]) -> tuple[list[Any], list[float]]:
    out, times = [], []
    for a in args:
        t = time.perf_counter()
        out.append(fn(a))
        times.append(time.perf_counter() - t)
    return out, times


def run_tier_size(
    items: np.ndarray,
    queries: np.ndarray,
    batch: int,
    console: Console,
    params: SearchTierParams | None = None,
) -> dict[str, Any]:
    """The tier over ``items`` (rows stay in place: the first 95 % are short videos, a view, not a copy)."""
    import faiss
    from threadpoolctl import threadpool_limits

    n, dim = items.shape
    n_short = int(n * (1 - 0.02 - ENDED_SHARE))
    if params is None:  # the worker's defaults; a small bench run still measures the IVF
        params = SearchTierParams()
        params = replace(params, exact_below=min(params.exact_below, n_short // 2))
    live_rows = np.arange(n_short, n)
    on_air = np.random.default_rng(3).random(len(live_rows)) < 0.02 / (0.02 + ENDED_SHARE)
    on_air_rows = live_rows[on_air]
    truth = exact_topk(queries, items[:n_short], TOP_K)
    live_truth = on_air_rows[exact_topk(queries, items[on_air_rows], min(TOP_K, len(on_air_rows)))]

    faiss.omp_set_num_threads(1)
    with threadpool_limits(limits=1):
        t = time.perf_counter()
        tier = LocalSearchTier(
            NullSource(n), ArrayCatalog(items, n_short, on_air), dim, refresh_s=0, start=False, search=params
        )
        load_s = time.perf_counter() - t
        matrix = tier.feeds[Feed.short_video]
        assert isinstance(matrix, AnnFeedMatrix)
        console.print(
            f"  tier: {n_short:,} short videos, {len(on_air_rows):,} live on air of {len(live_rows):,}; load + IVF "
            f"build {load_s:.1f} s (nlist {matrix.nlist}, {matrix.builds} build)"
        )
        qs = [q[None, :] for q in queries]
        _, exact_single = timed(lambda q: matrix.exact_top_rows(q, TOP_K), qs[:EXACT_QUERIES])
        batches = [queries[s : s + batch] for s in range(0, min(len(queries), EXACT_QUERIES) - batch + 1, batch)]
        _, exact_batch = timed(lambda b: matrix.exact_top_rows(b, TOP_K), batches)
        exact = {"per_query_ms": ms(exact_single), "per_batch_ms": ms(exact_batch)}
        console.print(f"  exact (as before): p50/p99 {exact['per_query_ms']} ms/query")
        sweeps: list[dict[str, Any]] = []
        for nprobe in NPROBES:
            matrix.params = replace(params, nprobe=nprobe)
            hits, single = timed(lambda q: tier.search([q], Feed.short_video, TOP_K)[0], queries)
            all_batches = [queries[s : s + batch] for s in range(0, len(queries) - batch + 1, batch)]
            _, batched = timed(lambda b: tier.search(list(b), Feed.short_video, TOP_K), all_batches)
            found = [[int(h.item_id) for h in row] for row in hits]
            row = {
                "nprobe": nprobe,
                "recall_at_100": round(recall_at_k(found, truth), 4),
                "per_query_ms": ms(single),
                "per_batch_ms": ms(batched),
                "p50_speedup_vs_exact": _ratio(exact["per_query_ms"].get("p50"), ms(single).get("p50")),
            }
            sweeps.append(row)
            console.print(
                f"  ann nprobe {nprobe}: recall@100 {row['recall_at_100']:.4f}, p50/p99 "
                f"{row['per_query_ms'].get('p50')}/{row['per_query_ms'].get('p99')} ms/query, batch of {batch} "
                f"p50 {row['per_batch_ms'].get('p50')} ms ({row['p50_speedup_vs_exact']}x faster than exact)"
            )
        matrix.params = params
        live_hits, live_single = timed(lambda q: tier.search([q], Feed.live, TOP_K)[0], queries)
        live = {
            "searched": "exact (the live feed always is)",
            "recall_at_100": round(recall_at_k([[int(h.item_id) for h in r] for r in live_hits], live_truth), 4),
            "mean_hits": round(float(np.mean([len(r) for r in live_hits])), 1),
            "per_query_ms": ms(live_single),
        }
        console.print(f"  live feed: recall@100 {live['recall_at_100']:.4f}, p50 {live['per_query_ms'].get('p50')} ms")
        churn = replace_vectors(tier, matrix, items, n_short, queries)
        console.print(f"  replace {REPLACED:,} vectors: {churn}")
        memory = {
            "float32_rows_mib": round(n_short * dim * 4 / 2**20, 1),
            "ivf_codes_mib": round(matrix.ivf.ntotal * matrix.ivf.code_size / 2**20, 1),  # type: ignore[attr-defined]
        }
        tier.close()
    return {
        "items": n,
        "short_video_items": n_short,
        "live_items": len(live_rows),
        "live_on_air": len(on_air_rows),
        "dim": dim,
        "queries": len(queries),
        "batch": batch,
        "params": asdict(params),
        "threads": 1,
        "load_and_build_s": round(load_s, 2),
        "nlist": matrix.nlist,
        "exact": exact,
        "ann": sweeps,
        "live_feed": live,
        "replace_vectors": churn,
        "memory": memory,
    }


def replace_vectors(
    tier: LocalSearchTier, matrix: AnnFeedMatrix, items: np.ndarray, n_short: int, queries: np.ndarray
) -> dict[str, Any]:
    """Re-encode ``REPLACED`` short videos to point at a query: the next search must find them there."""
    rng = np.random.default_rng(9)
    rows = rng.choice(n_short, REPLACED, replace=False)
    target = queries[0]
    t = time.perf_counter()
    tier.upsert([IndexedItem(str(r), Feed.short_video, False, 0.0, "", target) for r in rows])
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    tier.sync_indexes()
    sync_s = time.perf_counter() - t
    top = {int(h.item_id) for h in tier.search([target], Feed.short_video, TOP_K)[0]}
    for r in rows:  # put the originals back (the tier copied them; the bench's array is unchanged)
        tier.upsert([IndexedItem(str(r), Feed.short_video, False, 0.0, "", items[r])])
    tier.sync_indexes()
    return {
        "replaced": REPLACED,
        "write_ms": round(write_s * 1000, 1),
        "index_sync_ms": round(sync_s * 1000, 1),
        "replaced_in_top_100": len(top & set(rows.tolist())),
    }


def index_choice(items: np.ndarray, queries: np.ndarray, console: Console) -> list[dict[str, Any]]:
    """Raw faiss, float16 codes, one thread: IVF (nlist 1024) vs HNSW (M 32), recall@100 and latency."""
    import faiss

    faiss.omp_set_num_threads(1)
    dim = items.shape[1]
    truth = exact_topk(queries, items, TOP_K)
    rows: list[dict[str, Any]] = []

    def measure(name: str, index: Any, build_s: float, setting: str, values: tuple[int, ...]) -> None:
        for v in values:
            if setting == "nprobe":
                index.nprobe = v
            else:
                index.hnsw.efSearch = v
            found, single = timed(lambda q: index.search(q[None, :], TOP_K)[1][0].tolist(), queries)
            row = {
                "index": name,
                setting: v,
                "build_s": round(build_s, 1),
                "recall_at_100": round(recall_at_k(found, truth), 4),
                "per_query_ms": ms(single),
            }
            rows.append(row)
            console.print(
                f"  choice {name} {setting} {v}: recall@100 {row['recall_at_100']:.4f}, {row['per_query_ms']}"
            )

    t = time.perf_counter()
    ivf = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, 1024, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    ivf.train(items[np.random.default_rng(0).choice(len(items), min(len(items), 50 * 1024), replace=False)])
    ivf.add(items)
    measure("IVF1024,SQfp16", ivf, time.perf_counter() - t, "nprobe", NPROBES)
    del ivf
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    hnsw.train(items[:1000])
    faiss.omp_set_num_threads(2)  # the build alone on both cores (minutes otherwise)
    hnsw.add(items)
    faiss.omp_set_num_threads(1)
    measure("HNSW32,SQfp16 (efConstruction 80, built on 2 threads)", hnsw, time.perf_counter() - t, "ef", (128, 512))
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 1) if a and b else None
