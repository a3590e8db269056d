"""The generic checks every ranking signal passes (in the spirit of river's estimator checks).

A new signal joins ``SIGNALS`` below and gets every check: replayed events change nothing, a
snapshot restores identical features, ``forget`` removes an item, memory stays under its bound on a
stream of ten times more distinct items than fit, and a fixed seed gives identical results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ranking.coengagement import CoEngagementParams
from ranking.creators import CoFollowSignal, CreatorParams, CreatorVectorsSignal, EngagedCreatorsSignal
from ranking.domain import Feed, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.next_item import NextItemModel, NextItemParams
from ranking.next_item_transformer import TransformerNextItem, TransformerParams
from ranking.signal import Candidates, Observation, RankRequest, Signal, UserContext, decode_snapshot
from ranking.signals import (
    CoEngagementSignal,
    ContentSignal,
    FreshnessSignal,
    LiveSignal,
    NeighboursSignal,
    NewItemsSignal,
    NextItemSignal,
    TasteSignal,
    TrendingSignal,
)

DIM = 8
UNKNOWN = "never-seen"


@dataclass(frozen=True)
class Case:
    make: Callable[[], Signal]  # a fresh signal, configured to hold about ``capacity`` items
    capacity: int
    keeps_items: bool = True  # False: reads only the catalogue (forget has nothing to drop)
    follows: bool = False  # True: its stream also holds follows and unfollows of creators (feed ``creators``)


def _transformer(cap: int) -> TransformerNextItem:
    return TransformerNextItem(TransformerParams(dim=8, window=3, layers=1, heads=1, batch=8, max_items=cap))


SIGNALS: dict[str, Case] = {
    "taste": Case(lambda: TasteSignal(max_bytes=200_000), 0, keeps_items=False),
    "content": Case(lambda: ContentSignal(max_bytes=200_000), 0, keeps_items=False),
    "freshness": Case(lambda: FreshnessSignal(max_bytes=200_000), 0, keeps_items=False),
    "co": Case(lambda: CoEngagementSignal(CoEngagementParams(), max_bytes=200_000), 300),
    "next_item": Case(
        lambda: NextItemSignal(NextItemModel(NextItemParams(dim=8, max_items=300)), 500, max_bytes=300_000), 300
    ),
    "next_item_transformer": Case(lambda: NextItemSignal(_transformer(300), 500, max_bytes=400_000), 300),
    "neighbours": Case(lambda: NeighboursSignal(max_bytes=200_000), 300),
    "trending": Case(lambda: TrendingSignal(max_bytes=200_000), 300),
    "live": Case(lambda: LiveSignal(max_bytes=200_000), 300),
    "new_items": Case(lambda: NewItemsSignal(max_bytes=200_000), 300),
    "creators": Case(lambda: CreatorVectorsSignal(CreatorParams(), max_bytes=200_000), 300),
    "cofollow": Case(lambda: CoFollowSignal(CreatorParams(), max_bytes=200_000), 300, follows=True),
    "engaged": Case(lambda: EngagedCreatorsSignal(max_bytes=200_000), 0, keeps_items=False),
}
CREATORS = 10


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def catalogue() -> InMemoryIndex:
    index = InMemoryIndex(DIM)
    items = [
        IndexedItem(f"i{n}", Feed.short_video, False, float(n), f"video {n}", vec(n), creator_id=f"c{n % CREATORS}")
        for n in range(40)
    ]
    items += [
        IndexedItem(f"l{n}", Feed.live, True, float(n), f"stream {n}", vec(100 + n), creator_id=f"c{n}")
        for n in range(8)
    ]
    items.append(IndexedItem(UNKNOWN, Feed.short_video, False, 0.0, "never seen", vec(999)))
    index.upsert(items)
    return index


def stream(n_events: int, n_items: int = 40, prefix: str = "e", follows: bool = False) -> list[Observation]:
    """A deterministic interaction stream: 12 users, short videos and some live gifts and comments
    (``follows``: every third event follows or unfollows one of ``CREATORS`` creators instead)."""
    rng = np.random.default_rng(5)
    history: dict[str, list[str]] = {}
    followed: dict[str, list[str]] = {}
    out = []
    for n in range(n_events):
        user = f"u{rng.integers(0, 12)}"
        if follows and n % 3 == 0:
            creator = f"c{rng.integers(0, CREATORS)}"
            mine = followed.setdefault(user, [])
            on = creator not in mine or rng.random() < 0.3
            kind = InteractionType.follow if on else InteractionType.unfollow
            out.append(Observation(f"{prefix}{n}", user, creator, kind, float(n), 0.0, Feed.creators, tuple(mine)))
            mine[:] = [c for c in mine if c != creator] + ([creator] if on else [])
            continue
        live = rng.random() < 0.2
        item = f"l{rng.integers(0, 8)}" if live else f"i{rng.integers(0, n_items)}"
        kind = InteractionType.gift if live and rng.random() < 0.5 else InteractionType.comment
        before = tuple(history.get(user, []))
        out.append(
            Observation(
                f"{prefix}{n}",
                user,
                item,
                kind,
                float(n),
                2.0,
                Feed.live if live else Feed.short_video,
                before,
                vec(int(item[1:]) + (100 if live else 0)) if item[1:].isdigit() else vec(n),
            )
        )
        history.setdefault(user, []).append(item)
    return out


# the feeds this stream has items or follows in (music has its own tests: tests/unit/test_music.py)
FEEDS = (Feed.short_video, Feed.live, Feed.creators)


def content_of(index: InMemoryIndex) -> list[IndexedItem]:
    return list(index.get([f"i{n}" for n in range(40)] + [f"l{n}" for n in range(8)]).values())


def request(index: InMemoryIndex, feed: Feed) -> RankRequest:
    users = [
        UserContext("u1", ("i1", "i2", "i3"), {"i1", "i2", "i3"}, vec(1), (), {"c1": 1.0}, {"c2": [1, 0, 0, 3.0, 1.0]}),
        UserContext("u2", ("i5",), {"i5"}, vec(5), (), {"c3": 2.0, "c4": 3.0}),
    ]
    return RankRequest(feed, users, 50.0, index)


def every_item(req: RankRequest, index: InMemoryIndex, n_sources: int = 1) -> Candidates:
    """Every catalogue item of the feed as a candidate of every user: features for all to compare."""
    ids = [
        i
        for i, it in index.get([*(f"i{n}" for n in range(40)), *(f"l{n}" for n in range(8)), UNKNOWN]).items()
        if it.feed is req.feed
    ]
    req.items(ids)
    items = ids * len(req.users)
    known = req.items(items)
    return Candidates(
        user=np.repeat(np.arange(len(req.users)), len(ids)),
        items=items,
        offsets=np.arange(len(req.users) + 1) * len(ids),
        vectors=np.stack([known[i].vector for i in items]) if items else np.zeros((0, DIM), np.float32),
        created_at=np.asarray([known[i].created_at for i in items]),
        sources=np.zeros((len(items), n_sources), bool),
    )


def observe(signal: Signal, index: InMemoryIndex, feed: Feed) -> tuple[list[list[str]], np.ndarray]:
    req = request(index, feed)
    view = signal.read(req)
    cands = view.candidates(20)
    return cands, np.asarray(view.features(every_item(req, index)), np.float32)


def trained(case: Case, index: InMemoryIndex) -> Signal:
    s = case.make()
    s.learn_content(content_of(index))  # type: ignore[attr-defined]
    events = stream(300, follows=case.follows)
    for start in range(0, len(events), 50):
        s.learn(events[start : start + 50])
    return s


@pytest.fixture(scope="module")
def index() -> InMemoryIndex:
    return catalogue()


@pytest.mark.parametrize("name", SIGNALS)
def test_its_columns_and_candidates_have_the_declared_shape(name: str, index: InMemoryIndex) -> None:
    s = trained(SIGNALS[name], index)
    for feed in FEEDS:
        cands, features = observe(s, index, feed)
        assert len(cands) == 2 and all(len(c) <= 20 for c in cands)
        assert features.shape[1] == len(s.columns) and np.isfinite(features).all()


@pytest.mark.parametrize("name", SIGNALS)
def test_a_replayed_event_changes_nothing(name: str, index: InMemoryIndex) -> None:
    s = trained(SIGNALS[name], index)
    before = [observe(s, index, feed) for feed in FEEDS]
    meta, arrays = decode_snapshot(s.snapshot(), s.name, s.version)  # type: ignore[attr-defined]
    s.learn(stream(300, follows=SIGNALS[name].follows)[100:160])  # delivered again: the same event ids
    after = [observe(s, index, feed) for feed in FEEDS]
    for (c1, f1), (c2, f2) in zip(before, after, strict=True):
        assert c1 == c2
        np.testing.assert_array_equal(f1, f2)
    meta2, arrays2 = decode_snapshot(s.snapshot(), s.name, s.version)  # type: ignore[attr-defined]
    assert meta == meta2 and arrays.keys() == arrays2.keys()
    for k in arrays:
        np.testing.assert_array_equal(arrays[k], arrays2[k])


@pytest.mark.parametrize("name", SIGNALS)
def test_a_snapshot_restores_identical_features_and_learning(name: str, index: InMemoryIndex) -> None:
    case = SIGNALS[name]
    s = trained(case, index)
    copy = case.make()
    copy.restore(s.snapshot())
    for feed in FEEDS:
        (c1, f1), (c2, f2) = observe(s, index, feed), observe(copy, index, feed)
        assert c1 == c2
        np.testing.assert_allclose(f1, f2, rtol=1e-6, atol=1e-6)
    more = stream(400, prefix="more", follows=case.follows)[300:]  # both go on learning the same way
    s.learn(more)
    copy.learn(more)
    np.testing.assert_allclose(
        observe(s, index, Feed.short_video)[1], observe(copy, index, Feed.short_video)[1], atol=1e-5
    )


@pytest.mark.parametrize("name", [n for n, c in SIGNALS.items() if c.keeps_items])
def test_forget_removes_the_item_from_candidates_and_features(name: str, index: InMemoryIndex) -> None:
    s = trained(SIGNALS[name], index)
    for feed in FEEDS:
        cands, features = observe(s, index, feed)
        req = request(index, feed)
        ids = every_item(req, index).items[: len(features) // 2]
        unknown_row = features[ids.index(UNKNOWN)] if UNKNOWN in ids else np.zeros(features.shape[1], np.float32)
        proposed = [i for c in cands for i in c]
        differs = [i for n, i in enumerate(ids) if not np.allclose(features[n], unknown_row)]
        victim = next(iter(proposed + differs), None)
        if victim is None:
            continue  # this signal knows nothing in this feed
        s.forget(victim)
        cands_after, features_after = observe(s, index, feed)
        assert victim not in {i for c in cands_after for i in c}
        if UNKNOWN in ids:
            np.testing.assert_allclose(features_after[ids.index(victim)], features_after[ids.index(UNKNOWN)], atol=1e-6)


@pytest.mark.parametrize("name", SIGNALS)
def test_memory_stays_under_its_bound(name: str) -> None:
    case = SIGNALS[name]
    s = case.make()
    distinct = max(10 * case.capacity, 100)
    rng = np.random.default_rng(3)
    items = [
        IndexedItem(f"x{n}", Feed.short_video, False, float(n), f"x {n}", vec(n), creator_id=f"k{n}")
        for n in range(distinct)
    ]
    peak = 0
    for start in range(0, distinct, 100):
        s.learn_content(items[start : start + 100])  # type: ignore[attr-defined]
        batch = [
            Observation(
                f"m{n}",
                f"u{rng.integers(0, 500)}",
                f"x{n}",
                InteractionType.comment,
                float(n),
                2.0,
                Feed.short_video,
                (f"x{max(0, n - 1)}", f"x{max(0, n - 2)}"),
                items[n].vector,
            )
            for n in range(start, min(distinct, start + 100))
        ]
        if case.follows:  # every user follows ever more creators
            batch = [
                Observation(
                    f"m{n}",
                    f"u{rng.integers(0, 500)}",
                    f"k{n}",
                    InteractionType.follow,
                    float(n),
                    0.0,
                    Feed.creators,
                    (f"k{max(0, n - 1)}", f"k{max(0, n - 2)}"),
                )
                for n in range(start, min(distinct, start + 100))
            ]
        s.learn(batch)
        peak = max(peak, s.memory_bytes())
    assert 0 < peak <= s.max_bytes


@pytest.mark.parametrize("name", SIGNALS)
def test_a_fixed_seed_gives_identical_results(name: str, index: InMemoryIndex) -> None:
    a, b = trained(SIGNALS[name], index), trained(SIGNALS[name], index)
    for feed in FEEDS:
        (c1, f1), (c2, f2) = observe(a, index, feed), observe(b, index, feed)
        assert c1 == c2
        np.testing.assert_array_equal(f1, f2)


def test_next_item_rehearsal_takes_the_least_rehearsed_examples_first(index: InMemoryIndex) -> None:
    """Bursts spread rehearsal evenly: after each, no buffered example is rehearsed more than once beyond
    another, so the newest are caught up rather than the oldest drawn again and again."""
    s = NextItemSignal(_transformer(300), 10_000, max_bytes=10_000_000)
    events = [e for e in stream(600) if e.feed is Feed.short_video and e.context]
    for start in range(0, len(events), 100):
        s.learn(events[start : start + 100])
        s.rehearse(150, seed=start)
        times = np.asarray(s.rehearsals)
        assert len(times) == len(s.buffer) == start + len(events[start : start + 100])
        assert times.max() - times.min() <= 1
    assert np.asarray(s.rehearsals).sum() == 150 * len(range(0, len(events), 100))
    restored = NextItemSignal(_transformer(300), 10_000, max_bytes=10_000_000)
    restored.restore(s.snapshot())
    assert list(restored.rehearsals) == list(s.rehearsals)
    s.rehearse(1000, seed=1)  # more than the buffer holds: every example at least once more
    restored.rehearse(1000, seed=1)
    assert list(restored.rehearsals) == list(s.rehearsals)
    np.testing.assert_allclose(
        observe(s, index, Feed.short_video)[1], observe(restored, index, Feed.short_video)[1], atol=1e-5
    )


def test_event_window_keeps_its_byte_count_through_admits_evictions_and_loads() -> None:
    from ranking.signal import EventWindow

    def obs(event_id: str) -> Any:
        return SimpleNamespace(event_id=event_id)

    window = EventWindow(3)
    ids = ["a", "bb", "ccc", "bb", "dddd", "e"]  # "bb" again: a duplicate, not admitted
    assert [o.event_id for o in window.admit([obs(i) for i in ids])] == ["a", "bb", "ccc", "dddd", "e"]
    assert window.ids == ["ccc", "dddd", "e"]
    assert window.memory_bytes() == sum(64 + len(i) for i in window.ids)
    window.load(["xy", "z"])
    assert window.memory_bytes() == 64 * 2 + 3
