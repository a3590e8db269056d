"""The in-process search tier: exact top-k, write-through, and the refresh merge rules."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

import ranking.local_tier as local_tier
from ranking.domain import Feed
from ranking.index import IndexedItem
from ranking.local_tier import FeedMatrix, LocalSearchTier
from ranking.memory_index import InMemoryIndex
from storage.catalog import refuses_unbounded


def item(item_id: str, feed: Feed, vec: list[float], live: bool = True, created: float = 1.0) -> IndexedItem:
    v = np.asarray(vec, dtype=np.float32)
    return IndexedItem(item_id, feed, live if feed is Feed.live else False, created, item_id.upper(), v)


class StampedIndex(InMemoryIndex):
    """An in-memory 'Milvus' that stamps each write with a counter (the write stamp's stand-in)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.stamps: dict[str, float] = {}
        self.writes = 0

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        super().upsert(items)
        for it in items:
            self.writes += 1
            self.stamps[it.item_id] = float(self.writes)


class DictCatalog:
    """What another worker wrote to 'Milvus', as the tier's polls would see it: with write stamps, or
    (``tracks_writes=False``, a collection from before the stamp) by ``created_at`` plus the live set."""

    def __init__(self, source: StampedIndex, tracks_writes: bool = True) -> None:
        self.source = source
        self.tracks_writes = tracks_writes
        self.scans = 0
        self.counts = 0
        self.fetched = 0

    def changed_since(self, stamp: float | None) -> dict[str, float]:
        self.scans += stamp is None
        items = self.source._items.values()
        stamp_of = (lambda it: self.source.stamps[it.item_id]) if self.tracks_writes else (lambda it: it.created_at)
        return {it.item_id: stamp_of(it) for it in items if stamp is None or stamp_of(it) > stamp}

    def live_ids(self) -> set[str]:
        return {i for i, it in self.source._items.items() if it.feed is Feed.live and it.is_live}

    def count(self) -> int:
        self.counts += 1
        return len(self.source._items)

    def fetch(self, item_ids: Sequence[str]) -> list[IndexedItem]:
        self.fetched += len(item_ids)
        return list(self.source.get(item_ids).values())


def tier_over(items: list[IndexedItem], tracks_writes: bool = True) -> tuple[LocalSearchTier, StampedIndex]:
    source = StampedIndex(2)
    source.upsert(items)
    return LocalSearchTier(source, DictCatalog(source, tracks_writes), dim=2, start=False), source


def test_feed_matrix_top_k_is_exact_and_skips_inactive_rows() -> None:
    m = FeedMatrix(2, capacity=1)  # forces growth
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 2)).astype(np.float32)
    for i, v in enumerate(vecs):
        m.put(f"i{i}", v, active=i % 5 != 0)
    q = np.array([[1.0, 0.5]], dtype=np.float32)
    got = [i for i, _ in m.top(q, 7)[0]]
    scores = vecs @ q[0]
    want = [f"i{j}" for j in np.argsort(-scores) if j % 5 != 0][:7]
    assert got == want
    assert m.top(q, 100)[0].__len__() == 40
    assert FeedMatrix(2).top(q, 5) == [[]]


def test_search_matches_the_in_memory_reference_per_feed() -> None:
    rng = np.random.default_rng(1)
    items = [item(f"v{i}", Feed.short_video, list(rng.normal(size=2))) for i in range(30)]
    items += [item(f"l{i}", Feed.live, list(rng.normal(size=2)), live=i % 2 == 0) for i in range(10)]
    tier, source = tier_over(items)
    queries = [rng.normal(size=2).astype(np.float32) for _ in range(3)]
    for feed in Feed:
        got = [[h.item_id for h in row] for row in tier.search(queries, feed, 5)]
        want = [[h.item_id for h in row] for row in source.search(queries, feed, 5)]
        assert got == want
    hit = tier.search(queries[:1], Feed.short_video, 1, with_vectors=True)[0][0]
    assert hit.vector is not None and hit.title == hit.item_id.upper()


def test_writes_go_through_to_the_source_and_show_at_once() -> None:
    tier, source = tier_over([item("l1", Feed.live, [1, 0]), item("l2", Feed.live, [0.9, 0.1])])
    tier.set_live("l1", False)
    assert source.get(["l1"])["l1"].is_live is False
    assert [h.item_id for h in tier.search([np.array([1, 0], np.float32)], Feed.live, 5)[0]] == ["l2"]
    tier.upsert([item("v9", Feed.short_video, [0, 1])])
    assert "v9" in source.get(["v9"]) and tier.get(["v9"])["v9"].feed is Feed.short_video


def test_items_share_the_rows_of_the_matrix_as_it_is_after_it_grows() -> None:
    """A view into a grown-out buffer would keep that buffer alive (every doubling resident)."""
    tier, _ = tier_over([])
    rng = np.random.default_rng(0)
    for n in range(3_000):  # the matrix starts at 1,024 rows: two doublings
        v = rng.standard_normal(2).tolist()
        tier.upsert([item(f"v{n}", Feed.short_video, v)])
    tier.upsert([item("v1", Feed.live, [1, 0])])  # an item that moved feed keeps the live feed's row
    matrix = tier.feeds[Feed.short_video]
    assert len(matrix.vectors) == 4_096
    items = tier.get([f"v{n}" for n in range(3_000)])
    assert all(it.vector.base is matrix.vectors for i, it in items.items() if i != "v1"), (
        "every short video's vector is a view of the current matrix"
    )
    assert items["v2"].vector.tolist() == matrix.vectors[matrix.row_of["v2"]].tolist()
    assert items["v1"].vector.base is tier.feeds[Feed.live].vectors


@pytest.mark.parametrize("tracks_writes", [True, False])
def test_refresh_picks_up_other_workers_writes(tracks_writes: bool) -> None:
    tier, source = tier_over([item("l1", Feed.live, [1, 0], created=100.0)], tracks_writes)
    source.upsert(
        [item("v2", Feed.short_video, [0, 1], created=200.0), item("old", Feed.short_video, [0, 1], created=0)]
    )
    source.set_live("l1", False)  # another worker ended the stream
    stats = tier.refresh()
    assert tier.search([np.array([1, 0], np.float32)], Feed.live, 5) == [[]]
    if tracks_writes:  # "old" was written after the last poll, whatever its creation time
        assert stats == {"changed": 3, "new": 2, "live_flips": 0, "missing_fetched": 0}
    else:  # "old" predates the created_at watermark: found by the next quiet poll's count check
        assert stats == {"changed": 1, "new": 1, "live_flips": 1, "missing_fetched": 0}
        assert tier.refresh()["missing_fetched"] == 1
    assert tier.count() == 3


def test_a_quiet_poll_reads_only_recent_writes_and_does_not_scan() -> None:
    tier, source = tier_over([item(f"v{i}", Feed.short_video, [1, 0]) for i in range(50)])
    scans = tier.catalog.scans  # the start-up load
    source.upsert([item("v1", Feed.short_video, [0, 1])])  # another worker re-encoded v1
    assert tier.refresh() == {"changed": 1, "new": 0, "live_flips": 0, "missing_fetched": 0}
    assert tier.refresh()["changed"] == 0
    assert tier.catalog.scans == scans
    assert [h.item_id for h in tier.search([np.array([0, 1], np.float32)], Feed.short_video, 1)[0]] == ["v1"]


@pytest.mark.parametrize("lookback", [0.0, 5.0])
def test_a_write_stamped_before_the_watermark_is_found_by_look_back_or_by_the_count_check(lookback: float) -> None:
    tier, source = tier_over([item("v0", Feed.short_video, [1, 0])])
    tier.lookback_s = lookback
    source.upsert([item("v1", Feed.short_video, [0, 1])])
    tier.refresh()
    source.upsert([item("late", Feed.short_video, [0, 1])])
    source.stamps["late"] = tier._stamp - 1  # stamped earlier, committed after the last poll read
    stats = tier.refresh()
    assert "late" in tier.items
    assert (stats["new"], stats["missing_fetched"]) == ((1, 0) if lookback else (0, 1))


def test_polls_fetch_only_what_the_look_back_window_has_not_taken_in_yet() -> None:
    """The look-back re-reads recent stamps each poll; what was already taken in is not fetched again
    (after a bulk load every poll re-fetched and re-indexed half the catalogue)."""
    source = StampedIndex(2)
    source.upsert([item(f"v{i}", Feed.short_video, [1, 0]) for i in range(20)])
    tier = LocalSearchTier(source, DictCatalog(source), dim=2, lookback_s=5.0, start=False)
    catalog = tier.catalog
    loaded = catalog.fetched
    assert tier.refresh()["changed"] == 0 and catalog.fetched == loaded  # stamps 15-20 are in the window
    source.upsert([item("v3", Feed.short_video, [0, 1]), item("new", Feed.short_video, [0, 1])])  # stamps 21, 22
    assert tier.refresh() == {"changed": 2, "new": 1, "live_flips": 0, "missing_fetched": 0}
    assert catalog.fetched == loaded + 2
    assert tier.refresh()["changed"] == 0 and catalog.fetched == loaded + 2
    assert set(tier._window) == {f"v{i}" for i in range(16, 20)} | {"v3", "new"}  # stamps >= 22 - 5
    assert {h.item_id for h in tier.search([np.array([0, 1], np.float32)], Feed.short_video, 2)[0]} == {"new", "v3"}


def test_the_count_check_runs_at_most_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Milvus Lite scans every row for a count: quiet polls must not pay for one each time."""
    clock = [1000.0]
    monkeypatch.setattr(local_tier.time, "monotonic", lambda: clock[0])
    tier, source = tier_over([item("v0", Feed.short_video, [1, 0])])
    tier.count_check_s = 30.0
    tier.refresh()
    tier.refresh()
    assert tier.catalog.counts == 1
    source.upsert([item("late", Feed.short_video, [0, 1])])
    source.stamps["late"] = tier._stamp - 1  # missed by the stamps: only the count check finds it
    tier.refresh()
    assert "late" not in tier.items
    clock[0] += 30.0
    assert tier.refresh()["missing_fetched"] == 1 and "late" in tier.items
    assert tier.catalog.counts == 2


@pytest.mark.parametrize(("poll_s", "wait_s"), [(0.01, 1.0), (0.65, 2.6), (2.0, 8.0)])
def test_dear_polls_stretch_the_wait_to_keep_their_share(poll_s: float, wait_s: float) -> None:
    tier, _ = tier_over([item("v0", Feed.short_video, [1, 0])])
    tier.refresh_s, tier.max_poll_share, tier.last_poll_s = 1.0, 0.2, poll_s
    assert tier.poll_wait_s() == pytest.approx(wait_s)
    assert poll_s / (poll_s + tier.poll_wait_s()) <= 0.2 + 1e-9


def test_a_poll_older_than_a_local_write_does_not_undo_it() -> None:
    tier, _ = tier_over([item("l1", Feed.live, [1, 0])])
    seq_before = tier._seq
    stale_live = {"l1"}  # read from Milvus before this worker ended l1
    tier.set_live("l1", False)
    assert tier.merge_live(stale_live, seq_before) == 0
    assert tier.merge([item("l1", Feed.live, [1, 0], live=True)], seq_before) == 0
    assert tier.search([np.array([1, 0], np.float32)], Feed.live, 5) == [[]]


def test_get_falls_back_to_the_source_for_unknown_items() -> None:
    tier, source = tier_over([])
    source.upsert([item("v1", Feed.short_video, [1, 0])])
    assert "v1" in tier.get(["v1", "nope"])
    assert [h.item_id for h in tier.search([np.array([1, 0], np.float32)], Feed.short_video, 3)[0]] == ["v1"]


def test_catching_up_keeps_each_fetched_chunk_even_when_a_later_one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_tier, "FETCH_CHUNK", 2)
    tier, source = tier_over([item("v0", Feed.short_video, [1, 0], created=100.0)])
    source.upsert([item(f"b{i}", Feed.short_video, [0, 1], created=0.0) for i in range(5)])  # a bulk load
    real_fetch, calls = tier.catalog.fetch, []

    def flaky_fetch(ids: Sequence[str]) -> list[IndexedItem]:
        calls.append(list(ids))
        if len(calls) == 2:
            raise TimeoutError("Milvus took too long")
        return real_fetch(ids)

    monkeypatch.setattr(tier.catalog, "fetch", flaky_fetch)
    stamp = tier._stamp
    with pytest.raises(TimeoutError):
        tier.refresh()
    assert tier.count() == 3  # the first chunk stayed
    assert calls[0] == ["b0", "b1"]
    assert tier._stamp == stamp  # not advanced: the next poll asks again for everything since
    stats = tier.refresh()
    assert tier.count() == 6 and stats["changed"] == 5 and stats["new"] == 3


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        ("invalid max query result window, (offset+limit) should be in range [1, 16384]", True),
        ("query results exceed the maxOutputSize limit", True),
        ("<_InactiveRpcError: StatusCode.DEADLINE_EXCEEDED, Deadline Exceeded>", False),
        ("Retry timeout: 10s, message=rate limit exceeded", False),
        ("collection not found", False),
    ],
)
def test_only_a_too_large_result_switches_the_catalog_to_paging(message: str, refused: bool) -> None:
    assert refuses_unbounded(message) is refused
