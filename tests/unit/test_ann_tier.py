"""The in-process tier's ANN search (ranking.feed_matrix): recall against exact, and the catalogue's life
(grows from empty, live vectors replaced, items ended or forgotten) never leaking a stale result."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bench.retrieval import exact_topk, recall_at_k, synthetic_chunks, taste_queries, topic_centres
from ranking.domain import Feed
from ranking.feed_matrix import AnnFeedMatrix, FeedMatrix, LiveFeedMatrix, SearchTierParams, new_feed_matrix
from ranking.index import IndexedItem
from ranking.local_tier import LocalSearchTier
from tests.unit.test_local_tier import DictCatalog, StampedIndex

DIM = 64
SMALL = SearchTierParams(kind="ann", nlist=64, nprobe=16, exact_below=1_000)


def clustered(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Items around n/500 topics and multi-topic taste queries, as ``livelens bench retrieval`` draws them."""
    centres = topic_centres(DIM, topics=max(20, n // 500), seed=seed)
    items = np.concatenate(list(synthetic_chunks(n, centres, 1.5, seed=seed)))
    return items, taste_queries(50, centres, interests=3, spread=0.5, seed=seed + 1)


def short(item_id: str, vector: np.ndarray) -> IndexedItem:
    return IndexedItem(item_id, Feed.short_video, False, 1.0, item_id, vector)


def live(item_id: str, vector: np.ndarray, on_air: bool) -> IndexedItem:
    return IndexedItem(item_id, Feed.live, on_air, 1.0, item_id, vector)


def tier_of(items: list[IndexedItem], params: SearchTierParams) -> tuple[LocalSearchTier, StampedIndex]:
    source = StampedIndex(DIM)
    source.upsert(items)
    return LocalSearchTier(source, DictCatalog(source), dim=DIM, start=False, search=params), source


def rows_found(matrix: FeedMatrix, queries: np.ndarray, k: int) -> list[list[int]]:
    return [rows for rows, _ in matrix.top_rows(queries, k)]


def test_the_live_feed_and_the_exact_setting_stay_exact() -> None:
    assert type(new_feed_matrix(DIM, Feed.live, SMALL)) is LiveFeedMatrix
    assert type(new_feed_matrix(DIM, Feed.short_video, SearchTierParams(kind="exact"))) is FeedMatrix
    assert isinstance(new_feed_matrix(DIM, Feed.short_video, SMALL), AnnFeedMatrix)


def test_grows_from_empty_trains_once_big_enough_and_retrains_as_it_grows() -> None:
    vectors, queries = clustered(4_000)
    m = AnnFeedMatrix(DIM, SearchTierParams(nlist=32, nprobe=32, exact_below=1_000, retrain_growth=2.0))
    assert rows_found(m, queries[:1], 10) == [[]]
    for n, v in enumerate(vectors):
        m.put(f"i{n}", v, active=True)
        if n + 1 in (10, 999, 1_000, 2_500, 4_000):
            got = rows_found(m, queries, 100)
            truth = exact_topk(queries, vectors[: n + 1], min(100, n + 1))
            assert recall_at_k(got, truth) >= (1.0 if n + 1 < 1_000 else 0.95)
            assert (m.ivf is None) == (n + 1 < 1_000)
    assert m.builds == 2  # at 1,000, and at the first search past 2,000 (twice what it was trained on)
    assert m.trained_on == 2_500 and m.ivf.ntotal == 4_000


def test_recall_at_100_against_exact_on_clustered_data() -> None:
    vectors, queries = clustered(20_000)
    params = SearchTierParams(kind="ann", nlist=256, nprobe=32, exact_below=1_000)
    tier, _ = tier_of([short(f"v{n}", v) for n, v in enumerate(vectors)], params)
    assert isinstance(tier.feeds[Feed.short_video], AnnFeedMatrix) and tier.feeds[Feed.short_video].ivf is not None
    hits = tier.search(list(queries), Feed.short_video, 100)
    found = [[int(h.item_id[1:]) for h in row] for row in hits]
    assert recall_at_k(found, exact_topk(queries, vectors, 100)) >= 0.95
    for row in hits:  # the float16 codes only choose: scores are the exact float32 products, best first
        sims = [h.similarity for h in row]
        assert sims == sorted(sims, reverse=True)
        assert sims[0] == pytest.approx(float(vectors[int(row[0].item_id[1:])] @ queries[hits.index(row)]), abs=1e-5)


def test_the_live_filter_loses_nothing() -> None:
    vectors, queries = clustered(6_000, seed=3)
    on_air = np.random.default_rng(0).random(len(vectors)) < 0.1
    items = [live(f"l{n}", v, bool(a)) for n, (v, a) in enumerate(zip(vectors, on_air, strict=True))]
    tier, source = tier_of(items, SMALL)
    got = [[h.item_id for h in row] for row in tier.search(list(queries), Feed.live, 100)]
    want = [[h.item_id for h in row] for row in source.search(list(queries), Feed.live, 100)]
    assert got == want


def test_a_replaced_vector_is_found_at_its_new_position_and_not_at_its_old() -> None:
    vectors, queries = clustered(5_000, seed=5)
    tier, _ = tier_of([short(f"v{n}", v) for n, v in enumerate(vectors)], SMALL)
    q_new, q_old = queries[0], vectors[7]
    assert tier.search([q_old], Feed.short_video, 1)[0][0].item_id == "v7"
    tier.upsert([short("v7", q_new)])  # re-encoded (a live stream's vector moves every few seconds)
    top = tier.search([q_new], Feed.short_video, 1)[0][0]
    assert top.item_id == "v7" and top.similarity == pytest.approx(float(q_new @ q_new), abs=1e-5)
    assert "v7" not in [h.item_id for h in tier.search([q_old], Feed.short_video, 10)[0]]
    for _ in range(3):  # replaced again and again: one entry per item, never a stale copy
        tier.upsert([short("v7", q_old)])
    ids = [h.item_id for h in tier.search([q_old], Feed.short_video, 100)[0]]
    assert ids.count("v7") == 1 and ids[0] == "v7"
    assert tier.feeds[Feed.short_video].ivf.ntotal == 5_000


def test_removed_items_are_never_returned() -> None:
    vectors, queries = clustered(5_000, seed=7)
    tier, source = tier_of([short(f"v{n}", v) for n, v in enumerate(vectors)], SMALL)
    forgotten = {f"v{n}" for n in range(0, 5_000, 3)}
    moved = {f"v{n}" for n in range(1, 5_000, 7)} - forgotten  # moved to the live feed, ended
    for i in forgotten:  # deleted from Milvus (the polls do not report deletes: the shell tells the tier)
        del source._items[i]
    assert tier.forget(forgotten) == len(forgotten)
    tier.upsert([live(i, vectors[int(i[1:])], on_air=False) for i in sorted(moved)])
    gone = forgotten | moved
    probes = np.concatenate([queries, vectors[[int(i[1:]) for i in sorted(gone)][:50]]])
    for row in tier.search(list(probes), Feed.short_video, 100):
        assert len(row) == 100 and not {h.item_id for h in row} & gone
    assert tier.feeds[Feed.short_video].ivf.ntotal == 5_000 - len(gone)
    tier.refresh()
    assert not {h.item_id for h in tier.search(list(queries), Feed.short_video, 100)[0]} & gone


def test_exact_search_over_a_few_active_rows_among_many() -> None:
    m = FeedMatrix(4)
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(200, 4)).astype(np.float32)
    for n, v in enumerate(vecs):
        m.put(f"i{n}", v, active=n % 20 == 0)
    q = rng.normal(size=(3, 4)).astype(np.float32)
    scores = q @ vecs.T
    for rows, (got, sims) in zip(scores, m.top_rows(q, 5), strict=True):
        want = [j for j in np.argsort(-rows) if j % 20 == 0][:5]
        assert got == want and sims == pytest.approx(rows[want].tolist(), abs=1e-6)
    m.set_active("i1", True)
    assert m.n_active == 11


def test_the_evaluation_index_can_search_through_the_ann_tier() -> None:
    from ranking.memory_index import InMemoryIndex

    vectors, queries = clustered(5_000, seed=11)
    items = [short(f"v{n}", v) for n, v in enumerate(vectors)] + [live("on", vectors[0], True)]
    exact, ann = InMemoryIndex(DIM), InMemoryIndex(DIM, replace_params(exact_below=0))
    exact.upsert(items)
    ann.upsert(items)
    got = ann.search(list(queries), Feed.short_video, 100, with_vectors=True)
    want = exact.search(list(queries), Feed.short_video, 100)
    assert ann._tier[Feed.short_video].ivf is not None  # type: ignore[attr-defined]
    found = [[int(h.item_id[1:]) for h in row] for row in got]
    assert recall_at_k(found, np.array([[int(h.item_id[1:]) for h in row] for row in want])) >= 0.95
    assert got[0][0].vector is not None
    assert [h.item_id for h in ann.search([vectors[0]], Feed.live, 5)[0]] == ["on"]


def replace_params(**changes: int) -> SearchTierParams:
    from dataclasses import replace

    return replace(SMALL, **changes)


class WritesBetweenSteps:
    """A stand-in for the tier's lock: before each step of a build after the first, another thread's
    write lands (as it may whenever the build lets the lock go)."""

    def __init__(self, writes: list[Callable[[], object]]) -> None:
        self.writes, self.entered = writes, 0

    def __enter__(self) -> None:
        self.entered += 1
        if self.entered > 1 and self.writes:
            self.writes.pop(0)()

    def __exit__(self, *exc: object) -> None:
        return None


def test_writes_during_a_background_build_reach_the_new_index() -> None:
    vectors, queries = clustered(3_000, seed=13)
    m = AnnFeedMatrix(DIM, SearchTierParams(nlist=16, nprobe=16, exact_below=1_000))
    m.build_on_search = False  # the tier's refresher builds, not the search
    for n, v in enumerate(vectors):
        m.put(f"i{n}", v, active=True)
    assert m.build_due() and rows_found(m, queries[:1], 5) == rows_found(m, queries[:1], 5)
    assert m.ivf is None  # searched exactly meanwhile
    target = queries[0]
    m.build(
        WritesBetweenSteps(
            [
                lambda: (  # before the one chunk is added: i5 re-encoded, and a new item
                    m.put("i5", target, active=True),
                    m.put("new", vectors[9], active=True),
                ),
                lambda: m.set_active("i9", False),  # before the swap: ended
            ]
        )
    )
    assert m.builds == 1 and not m.build_due()
    top = m.top(target[None, :], 3)[0]
    assert top[0][0] == "i5" and top[0][1] == pytest.approx(float(target @ target), abs=1e-5)
    near_9 = [i for i, _ in m.top(vectors[9][None, :], 50)[0]]
    assert "i9" not in near_9 and near_9[0] == "new"
    assert m.ivf.ntotal == 3_000  # 3,000 - i9 + new


def test_with_a_refresher_searches_never_build_and_the_refresher_does() -> None:
    vectors, queries = clustered(2_000, seed=17)
    source = StampedIndex(DIM)
    tier = LocalSearchTier(source, DictCatalog(source), dim=DIM, refresh_s=3600, search=SMALL)
    try:
        matrix = tier.feeds[Feed.short_video]
        assert isinstance(matrix, AnnFeedMatrix) and not matrix.build_on_search
        tier.upsert([short(f"v{n}", v) for n, v in enumerate(vectors)])
        assert len(tier.search([queries[0]], Feed.short_video, 10)[0]) == 10 and matrix.ivf is None
        tier.refresh()  # what the refresher thread does each poll
        assert matrix.ivf is not None and matrix.ivf.ntotal == 2_000
    finally:
        tier.close()


@pytest.mark.parametrize("cls", [FeedMatrix, LiveFeedMatrix])
def test_exact_search_through_streams_starting_ending_and_re_encoded(cls: type[FeedMatrix]) -> None:
    rng = np.random.default_rng(4)
    m, truth = cls(8), {}
    for step in range(3_000):
        item = f"s{rng.integers(0, 300)}"
        if rng.random() < 0.3:
            m.set_active(item, False)
            truth.pop(item, None)
        else:
            v = rng.normal(size=8).astype(np.float32)
            on_air = bool(rng.random() < 0.5)
            m.put(item, v, on_air)
            truth.pop(item, None)
            if on_air:
                truth[item] = v
        if step % 500 == 0 or step == 2_999:
            q = rng.normal(size=(2, 8)).astype(np.float32)
            for qv, got in zip(q, m.top(q, 10), strict=True):
                want = sorted(truth, key=lambda i: -float(truth[i] @ qv))[:10]
                assert [i for i, _ in got] == want


def test_the_tier_searches_exactly_below_its_threshold_or_when_told() -> None:
    params = SearchTierParams(exact_below=10_000)
    assert params.searches_exactly(9_999) and not params.searches_exactly(10_000)
    assert SearchTierParams(kind="exact").searches_exactly(10**6)
    assert not SearchTierParams(exact_below=0).searches_exactly(1)


@pytest.mark.parametrize(
    ("tier", "exact_below"), [("worker", SearchTierParams().exact_below), ("ann", 0), ("exact", None)]
)
def test_eval_searches_as_the_worker_does_unless_told(tier: str, exact_below: int | None) -> None:
    from streams.cli import _eval_search

    got = _eval_search(SearchTierParams(), tier)
    assert (got.exact_below if got is not None else None) == exact_below
