"""``livelens bench retrieval`` (issues 6, 15): top-100 over 100k / 1M items in Milvus Lite and in the
worker's in-process tier (``bench.retrieval_tier``: exact vs the IVF index), vs exact numpy.

Vectors are synthetic but shaped like fused item embeddings: L2-normalised points scattered around
``clusters`` topic centres (so neighbours are meaningful and ANN recall is not trivially 1), and user
queries drawn the same way (a taste vector sits near the topics a user watched). The reference is an
exact numpy brute force over the same matrix, timed in the same run; recall@100 is measured against it.

Milvus Lite is opened in-process (``milvus_lite.MilvusLite``), the engine the worker's gRPC server runs,
so figures exclude the gRPC hop. Each configured index type is built on the same rows; per-query latency
is one ``search`` call with one vector, per-batch latency one call with ``batch`` vectors. ``--only tier``
or ``--only milvus`` runs one part (1M in Milvus Lite alone takes ~30 min here).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench import BenchOptions, percentiles

TOP_K = 100
LIVE_SHARE = 0.02  # share of items that are live streams: the live feed searches with is_live == true
LIVE_FILTER = "is_live == true"
FULL_SIZES = (100_000, 1_000_000)
QUICK_SIZES = (20_000,)
DIMS = (384, 512)
QUICK_DIMS = (384,)
STRONG_QUERIES = 20  # a server's Strong searches wait for a time tick (~0.2-0.4 s): fewer of them


@dataclass(frozen=True)
class IndexConfig:
    """One index to build and the search params to sweep over it."""

    index_type: str
    build: dict[str, int] = field(default_factory=dict)
    sweeps: tuple[dict[str, int], ...] = ({},)


def default_configs(quick: bool, n: int = 100_000, server: bool = False) -> list[IndexConfig]:
    """FLAT (exact, the product default) plus IVF_FLAT and HNSW with a small search-param sweep.

    Above 200k items the Milvus Lite sweep is cut to what mattered at 100k: each search there costs ~1 s
    of Milvus Lite bookkeeping (README), and HNSW (recall 0.63-0.74 at 100k on these multi-topic queries,
    slowest build) is left out; a server keeps the full sweep. ``extra={"index_types": [...]}`` chooses."""
    if n > 200_000 and not server:
        return [
            IndexConfig("FLAT"),
            IndexConfig("IVF_FLAT", {"nlist": 1024}, ({"nprobe": 16}, {"nprobe": 32})),
        ]
    if quick:
        return [
            IndexConfig("FLAT"),
            IndexConfig("IVF_FLAT", {"nlist": 256}, ({"nprobe": 16}, {"nprobe": 32})),
            IndexConfig("HNSW", {"M": 16, "efConstruction": 64}, ({"ef": 128}, {"ef": 256})),
        ]
    return [
        IndexConfig("FLAT"),
        IndexConfig("IVF_FLAT", {"nlist": 1024}, ({"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64})),
        IndexConfig("HNSW", {"M": 16, "efConstruction": 64}, ({"ef": 128}, {"ef": 256})),
    ]


# --- data ---------------------------------------------------------------------------------------
def topic_centres(dim: int, topics: int, seed: int, super_topics: int = 50, spread: float = 1.0) -> np.ndarray:
    """Unit topic centres grouped under a few super-topics, so neighbouring topics overlap (graded similarity)."""
    rng = np.random.default_rng(seed)
    sup = rng.standard_normal((super_topics, dim)).astype(np.float32)
    sup /= np.linalg.norm(sup, axis=1, keepdims=True)
    c = sup[rng.integers(0, super_topics, topics)]
    c = c + rng.standard_normal((topics, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def synthetic_chunks(
    n: int, centres: np.ndarray, spread: float, seed: int, chunk: int = 50_000
) -> Iterator[np.ndarray]:
    """Unit vectors near random centres, in chunks so 1M rows never need a second full copy."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)]
        x = x + rng.standard_normal((m, dim), dtype=np.float32) * (spread / np.sqrt(dim))
        yield (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def taste_queries(n: int, centres: np.ndarray, interests: int, spread: float, seed: int) -> np.ndarray:
    """User taste vectors: the mean of a few topics a user watched plus noise (so top-100 spans topics)."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    x = centres[rng.integers(0, len(centres), (n, interests))].mean(axis=1)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    x = x + rng.standard_normal((n, dim), dtype=np.float32) * (spread / np.sqrt(dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_topk(queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 200_000) -> np.ndarray:
    """Exact inner-product top-k ids (sorted best first), scanning items in chunks to bound memory."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(items), chunk):
        s = queries @ items[start : start + chunk].T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k each result list recovers."""
    k = truth.shape[1]
    hits = [len(set(f[:k]) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k)


def ms(values: list[float]) -> dict[str, float]:
    return {k: round(v * 1000, 3) for k, v in percentiles(values).items()}


def make_data(n: int, dim: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """The items and the user queries every part of this bench searches (the same for a given size)."""
    centres = topic_centres(dim, topics=max(100, n // 500), seed=dim)
    items = np.empty((n, dim), dtype=np.float32)
    pos = 0
    for block in synthetic_chunks(n, centres, 1.5, seed=1):
        items[pos : pos + len(block)] = block
        pos += len(block)
    return items, taste_queries(n_queries, centres, interests=3, spread=0.5, seed=2)


# --- Milvus Lite --------------------------------------------------------------------------------
def create_collection(db: Any, name: str, dim: int) -> Any:
    from milvus_lite import CollectionSchema, DataType, FieldSchema

    schema = CollectionSchema(
        fields=[
            FieldSchema(name="id", dtype=DataType.INT64, is_primary=True),
            FieldSchema(name="is_live", dtype=DataType.BOOL),
            FieldSchema(name="vector", dtype=DataType.FLOAT_VECTOR, dim=dim),
        ]
    )
    return db.create_collection(name, schema)


def insert_rows(col: Any, vectors: np.ndarray, live: np.ndarray, chunk: int = 5_000) -> None:
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk].tolist()
        flags = live[start : start + chunk].tolist()
        col.insert(
            [{"id": start + i, "is_live": f, "vector": v} for i, (v, f) in enumerate(zip(block, flags, strict=True))]
        )


def time_searches(
    col: Any, queries: np.ndarray, batch: int, params: dict[str, int], expr: str | None = None
) -> tuple[list[list[int]], list[float], list[float]]:
    """One call per query (per-query latency, ids for recall), then whole batches (per-batch latency)."""
    found: list[list[int]] = []
    single: list[float] = []
    sp = params or None
    for q in queries:
        t = time.perf_counter()
        res = col.search([q.tolist()], top_k=TOP_K, metric_type="IP", expr=expr, output_fields=[], search_params=sp)
        single.append(time.perf_counter() - t)
        found.append([int(h["id"]) for h in res[0]])
    if expr is not None:
        return found, single, []
    batched: list[float] = []
    for start in range(0, len(queries) - batch + 1, batch):
        block = [q.tolist() for q in queries[start : start + batch]]
        t = time.perf_counter()
        col.search(block, top_k=TOP_K, metric_type="IP", output_fields=[], search_params=sp)
        batched.append(time.perf_counter() - t)
    return found, single, batched


def raw_index_time(col: Any, queries: np.ndarray, params: dict[str, int]) -> list[float]:
    """Per-query time inside the segment indexes alone (no Milvus Lite bookkeeping), for the breakdown."""
    segments = [s for s in col._segment_cache.values() if s.num_rows > 0]  # private: breakdown only
    out: list[float] = []
    for q in queries:
        qq = q[None, :]
        t = time.perf_counter()
        for seg in segments:
            index = seg.indexes.get("vector")
            if index is not None:
                index.search(qq, TOP_K, valid_mask=None, params=params or None)
        out.append(time.perf_counter() - t)
    return out


@dataclass
class Workload:
    """One size's items, queries and exact answers, with the numpy reference timed on them."""

    items: np.ndarray
    queries: np.ndarray
    live: np.ndarray
    truth: np.ndarray
    live_truth: np.ndarray
    reference: dict[str, Any]


def workload(n: int, dim: int, n_queries: int, batch: int, console: Console) -> Workload:
    """Synthetic items and taste queries, their exact top-100, and numpy's exact search timed on them."""
    items, queries = make_data(n, dim, n_queries)
    live = np.random.default_rng(3).random(n) < LIVE_SHARE
    live_ids = np.flatnonzero(live)
    live_truth = live_ids[exact_topk(queries, items[live_ids], TOP_K)]

    # Reference: exact numpy brute force, per query and per batch, in this run.
    t = time.perf_counter()
    truth = exact_topk(queries, items, TOP_K)
    numpy_batch_all = time.perf_counter() - t
    numpy_single: list[float] = []
    for q in queries[: min(len(queries), 50)]:
        t = time.perf_counter()
        exact_topk(q[None, :], items, TOP_K)
        numpy_single.append(time.perf_counter() - t)
    numpy_batches: list[float] = []
    for start in range(0, len(queries) - batch + 1, batch):
        t = time.perf_counter()
        exact_topk(queries[start : start + batch], items, TOP_K)
        numpy_batches.append(time.perf_counter() - t)
    ref = {
        "per_query_ms": ms(numpy_single),
        "per_batch_ms": ms(numpy_batches),
        "all_queries_one_batch_s": round(numpy_batch_all, 3),
    }
    console.print(
        f"n={n:,} dim={dim}: numpy exact p50 {ref['per_query_ms'].get('p50')} ms/query, "
        f"{ref['per_batch_ms'].get('p50')} ms/batch of {batch}"
    )
    return Workload(items, queries, live, truth, live_truth, ref)


Timings = tuple[list[list[int]], list[float], list[float]]  # ids found per query, per-query s, per-batch s


def result_row(
    cfg: IndexConfig,
    params: dict[str, int],
    build_s: float,
    batch: int,
    ref: dict[str, Any],
    searched: Timings,
    truth: np.ndarray,
    live: tuple[list[list[int]], list[float]],
    live_truth: np.ndarray,
    **extra: dict[str, float],
) -> dict[str, Any]:
    """One index setting's figures, the same fields for Milvus Lite and a server (plus ``extra``)."""
    found, single, batched = searched
    found_live, single_live = live
    return {
        "index_type": cfg.index_type,
        "build_params": cfg.build,
        "search_params": params,
        "build_s": round(build_s, 2),
        "recall_at_100": round(recall_at_k(found, truth), 4),
        "per_query_ms": ms(single),
        "per_batch_ms": ms(batched),
        "per_query_in_batch_ms": ms([b / batch for b in batched]),
        **extra,
        "live_filter_recall_at_100": round(recall_at_k(found_live, live_truth[: len(found_live)]), 4),
        "live_filter_mean_hits": round(float(np.mean([len(f) for f in found_live])), 1),
        "live_filter_per_query_ms": ms(single_live),
        "p99_vs_numpy_p99": _ratio(ms(single).get("p99"), ref["per_query_ms"].get("p99")),
    }


def run_size(
    n: int, dim: int, configs: list[IndexConfig], n_queries: int, batch: int, console: Console, workdir: Path
) -> dict[str, Any]:
    from milvus_lite import MilvusLite

    w = workload(n, dim, n_queries, batch, console)
    items, queries, live, truth, live_truth, ref = w.items, w.queries, w.live, w.truth, w.live_truth, w.reference
    del w

    data_dir = workdir / f"milvus_{n}_{dim}"
    shutil.rmtree(data_dir, ignore_errors=True)
    db = MilvusLite(str(data_dir))
    try:
        col = create_collection(db, "items", dim)
        t = time.perf_counter()
        insert_rows(col, items, live)
        col.flush()
        col._wait_for_bg()  # settle compaction before timing the build
        insert_s = time.perf_counter() - t
        segments = sum(1 for s in col._segment_cache.values() if s.num_rows > 0)
        console.print(
            f"  insert + flush + compaction: {insert_s:.1f} s ({n / insert_s:,.0f} rows/s), {segments} segments"
        )
        del items
        gc.collect()
        results: list[dict[str, Any]] = []
        for cfg in configs:
            if col.has_index("vector"):
                col.release()
                col.drop_index("vector")
            t = time.perf_counter()
            col.create_index("vector", {"index_type": cfg.index_type, "metric_type": "IP", "params": cfg.build})
            col.load()
            build_s = time.perf_counter() - t
            for params in cfg.sweeps:
                found, single, batched = time_searches(col, queries, batch, params)
                raw = raw_index_time(col, queries[: min(len(queries), 50)], params)
                live_q = queries[: min(len(queries), 50)]
                found_live, single_live, _ = time_searches(col, live_q, batch, params, LIVE_FILTER)
                row = result_row(
                    cfg,
                    params,
                    build_s,
                    batch,
                    ref,
                    (found, single, batched),
                    truth,
                    (found_live, single_live),
                    live_truth,
                    index_only_per_query_ms=ms(raw),
                )
                results.append(row)
                console.print(
                    f"  {cfg.index_type} {cfg.build} {params}: build {build_s:.1f} s, recall@100 "
                    f"{row['recall_at_100']:.3f}, p50/p99 {row['per_query_ms'].get('p50')}/"
                    f"{row['per_query_ms'].get('p99')} ms/query (index alone p99 "
                    f"{row['index_only_per_query_ms'].get('p99')}), batch p99 {row['per_batch_ms'].get('p99')} ms, "
                    f"live-filter recall@100 {row['live_filter_recall_at_100']:.3f}"
                )
        db.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return {
        "items": n,
        "dim": dim,
        "queries": n_queries,
        "batch": batch,
        "segments": segments,
        "insert_s": round(insert_s, 2),
        "insert_rows_per_s": round(n / insert_s),
        "numpy_exact": ref,
        "indexes": results,
    }


# --- a Milvus server, over gRPC -----------------------------------------------------------------
def server_search(
    client: Any,
    name: str,
    queries: np.ndarray,
    batch: int,
    params: dict[str, int],
    expr: str | None = None,
    consistency: str = "Bounded",
) -> tuple[list[list[int]], list[float], list[float]]:
    """``time_searches`` through pymilvus against a server. Bounded: the index's own cost; Strong (the
    worker's collection level) also waits for the server's next time tick (``proxy.timeTickInterval``)."""
    sp = {"metric_type": "IP", "params": params}

    def search(block: list[list[float]], filter_expr: str) -> Any:
        return client.search(
            name,
            data=block,
            limit=TOP_K,
            filter=filter_expr,
            output_fields=[],
            search_params=sp,
            consistency_level=consistency,
        )

    found: list[list[int]] = []
    single: list[float] = []
    for q in queries:
        t = time.perf_counter()
        res = search([q.tolist()], expr or "")
        single.append(time.perf_counter() - t)
        found.append([int(h["id"]) for h in res[0]])
    if expr is not None:
        return found, single, []
    batched: list[float] = []
    for start in range(0, len(queries) - batch + 1, batch):
        block = [q.tolist() for q in queries[start : start + batch]]
        t = time.perf_counter()
        search(block, "")
        batched.append(time.perf_counter() - t)
    return found, single, batched


def run_size_server(
    n: int, dim: int, configs: list[IndexConfig], n_queries: int, batch: int, console: Console, uri: str
) -> dict[str, Any]:
    """``run_size`` against a Milvus server at ``uri`` (its own collection, dropped afterwards); the
    gRPC hop is included, as a worker pays it. No index-only breakdown: the server's internals are opaque."""
    from pymilvus import DataType, MilvusClient

    w = workload(n, dim, n_queries, batch, console)
    queries, truth, live_truth, ref = w.queries, w.truth, w.live_truth, w.reference
    client = MilvusClient(uri)
    name = f"livelens_bench_{n}_{dim}"
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("is_live", DataType.BOOL)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        client.create_collection(name, schema=schema, consistency_level="Strong")
        t = time.perf_counter()
        for start in range(0, n, 5_000):
            block = w.items[start : start + 5_000].tolist()
            flags = w.live[start : start + 5_000].tolist()
            client.insert(
                name,
                [
                    {"id": start + i, "is_live": f, "vector": v}
                    for i, (v, f) in enumerate(zip(block, flags, strict=True))
                ],
            )
        client.flush(name)
        insert_s = time.perf_counter() - t
        console.print(f"  insert + flush over gRPC: {insert_s:.1f} s ({n / insert_s:,.0f} rows/s)")
        del w
        gc.collect()
        results: list[dict[str, Any]] = []
        for cfg in configs:
            client.release_collection(name)
            for index_name in client.list_indexes(name):
                client.drop_index(name, index_name)
            t = time.perf_counter()
            params = client.prepare_index_params()
            params.add_index(field_name="vector", index_type=cfg.index_type, metric_type="IP", params=cfg.build)
            client.create_index(name, params)  # returns once built
            client.load_collection(name)
            build_s = time.perf_counter() - t
            for sp in cfg.sweeps:
                server_search(client, name, queries[:5], batch, sp)  # warm the loaded segments
                found, single, batched = server_search(client, name, queries, batch, sp)
                live_q = queries[: min(len(queries), 50)]
                found_live, single_live, _ = server_search(client, name, live_q, batch, sp, LIVE_FILTER)
                _, strong, _ = server_search(client, name, queries[:STRONG_QUERIES], batch, sp, "", "Strong")
                row = result_row(
                    cfg,
                    sp,
                    build_s,
                    batch,
                    ref,
                    (found, single, batched),
                    truth,
                    (found_live, single_live),
                    live_truth,
                    strong_per_query_ms=ms(strong),
                )
                results.append(row)
                console.print(
                    f"  {cfg.index_type} {cfg.build} {sp}: build {build_s:.1f} s, recall@100 "
                    f"{row['recall_at_100']:.3f}, p50/p99 {row['per_query_ms'].get('p50')}/"
                    f"{row['per_query_ms'].get('p99')} ms/query (Strong: {row['strong_per_query_ms'].get('p50')}/"
                    f"{row['strong_per_query_ms'].get('p99')}), batch p99 {row['per_batch_ms'].get('p99')} ms, "
                    f"live-filter recall@100 {row['live_filter_recall_at_100']:.3f} "
                    f"p99 {row['live_filter_per_query_ms'].get('p99')} ms"
                )
    finally:
        if client.has_collection(name):
            client.drop_collection(name)
        client.close()
    return {
        "items": n,
        "dim": dim,
        "queries": n_queries,
        "batch": batch,
        "insert_s": round(insert_s, 2),
        "insert_rows_per_s": round(n / insert_s),
        "numpy_exact": ref,
        "indexes": results,
    }


def server_engine(uri: str) -> str:
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    try:
        return (
            f"Milvus server {client.get_server_version()} over gRPC (loopback); searches Bounded, "
            f"strong_per_query_ms Strong (the worker's level) on {STRONG_QUERIES} queries"
        )
    finally:
        client.close()


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    sizes = (options.items,) if options.items else (QUICK_SIZES if options.quick else FULL_SIZES)
    dims = tuple(int(d) for d in options.extra.get("dims", QUICK_DIMS if options.quick else DIMS))
    batch = (options.batch_sizes or [10])[0]
    only = set(options.extra.get("index_types", ()))
    part = options.extra.get("only")  # "tier" | "milvus": one part only; default both
    uri = options.extra.get("milvus_uri")
    runs: list[dict[str, Any]] = []
    tier_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="livelens-retrieval-") as tmp:
        for n in sizes:
            # Milvus Lite search cost grows with n (see README): fewer queries at 1M keep the run short.
            n_queries = int(options.extra.get("queries", 50 if options.quick or n > 200_000 else 200))
            configs = default_configs(options.quick, n, server=bool(uri))
            if only:  # any type from the full sweep, at any size
                configs = [c for c in default_configs(options.quick) if c.index_type in only]
            for dim in dims:
                if part != "tier":
                    if uri:
                        runs.append(run_size_server(n, dim, configs, n_queries, batch, console, str(uri)))
                    else:
                        runs.append(run_size(n, dim, configs, n_queries, batch, console, Path(tmp)))
                    gc.collect()
                if part != "milvus":
                    tier_runs.append(run_tier(n, dim, int(options.extra.get("queries", 200)), batch, console))
                    gc.collect()
    return {
        "top_k": TOP_K,
        "data": "synthetic: L2-normalised points around n/500 topic centres (themselves spread around 50 "
        "super-topics, noise norm 1), item noise norm 1.5 (cosine to own topic ~0.55); "
        "queries are user tastes: the mean of 3 random topics plus noise norm 0.5; 2% of items are live "
        "(is_live), searched with the live feed's filter for live_filter_* (recall vs exact over live items)",
        "engine": server_engine(str(uri)) if uri else "milvus_lite in-process (no gRPC hop)",
        "goal": {"items": 1_000_000, "per_query_p99_ms": 10.0, "recall_at_100": 0.95},
        "runs": runs,
        "tier_runs": tier_runs,
    }


def run_tier(n: int, dim: int, n_queries: int, batch: int, console: Console) -> dict[str, Any]:
    """The worker's in-process tier over the same data (``bench.retrieval_tier``), plus the raw faiss
    comparison its index type was chosen by, at sizes where HNSW builds in minutes."""
    from bench.retrieval_tier import CHOICE_MAX_ITEMS, index_choice, run_tier_size

    items, queries = make_data(n, dim, n_queries)
    console.print(f"n={n:,} dim={dim}: in-process tier")
    out = run_tier_size(items, queries, batch, console)
    if n <= CHOICE_MAX_ITEMS:
        out["index_choice"] = index_choice(items, queries, console)
    return out
