"""Trending and live velocity against hand-computed values (pure logic, no I/O)."""

import math

import pytest

from ranking.domain import Feed, InteractionType
from ranking.trending import LiveVelocity, LiveVelocityParams, Trending, TrendingParams


def test_trending_decays_with_event_time_and_ranks_hottest_first() -> None:
    t = Trending(TrendingParams(half_life_s=10.0, window_s=100.0))
    t.learn_one("a", Feed.short_video, 2.0, ts=0.0)
    t.learn_one("b", Feed.short_video, 1.0, ts=10.0)
    # clock 10: a = 2 x 0.5^(10/10) = 1.0, b = 1.0 -> a tie, broken by id
    assert t.score("a", Feed.short_video) == pytest.approx(1.0)
    assert t.top(Feed.short_video, 5) == [("a", pytest.approx(1.0)), ("b", pytest.approx(1.0))]
    t.learn_one("c", Feed.short_video, 3.0, ts=20.0)
    t.learn_one("a", Feed.short_video, 1.0, ts=20.0)  # a = 2 x 0.25 + 1 = 1.5; b = 0.5; c = 3
    assert t.top(Feed.short_video, 5) == [("c", 3.0), ("a", pytest.approx(1.5)), ("b", pytest.approx(0.5))]
    assert t.normalized(Feed.short_video, 2) == {"c": 1.0, "a": pytest.approx(0.5)}
    assert t.top(Feed.live, 5) == []  # feeds are separate


def test_trending_window_skips_and_bounds() -> None:
    t = Trending(TrendingParams(half_life_s=1e9, window_s=15.0, max_items=2))
    t.learn_one("old", Feed.short_video, 5.0, ts=0.0)
    t.learn_one("skipped", Feed.short_video, -0.6, ts=1.0)  # a skip never makes an item trend
    t.learn_one("new", Feed.short_video, 1.0, ts=20.0)
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["new"]  # "old" idle 20 s > 15 s window
    assert t.score("old", Feed.short_video) == 0.0 and "skipped" not in t.scores[Feed.short_video]
    t.learn_one("x", Feed.short_video, 2.0, ts=21.0)
    t.learn_one("y", Feed.short_video, 3.0, ts=21.0)
    assert len(t.scores[Feed.short_video]) == 2  # bounded: the weakest two were dropped
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["y", "x"]
    t.forget("y")
    assert [i for i, _ in t.top(Feed.short_video, 5)] == ["x"]


def test_live_velocity_counts_a_sliding_window_and_boosts_with_a_reason() -> None:
    v = LiveVelocity(LiveVelocityParams(window_s=60.0, gift_weight=3.0))
    for ts in (0.0, 30.0, 50.0):
        v.learn_one("l1", InteractionType.gift, ts)
    v.learn_one("l1", InteractionType.comment, 55.0)
    v.learn_one("l1", InteractionType.view, 56.0)  # views do not count toward velocity
    assert v.counts("l1") == {InteractionType.gift: 3, InteractionType.comment: 1}
    assert v.velocity("l1") == 10.0  # 3 gifts x 3 + 1 comment
    boost, reason = v.boosts(["l1", "l2"], weight=0.3)["l1"]
    assert boost == pytest.approx(0.3 * math.log1p(10.0))
    assert reason == "live now: 3 gifts in the last minute"
    assert "l2" not in v.boosts(["l1", "l2"], weight=0.3)
    v.learn_one("l2", InteractionType.comment, 100.0)  # the clock moves to 100: window is [40, 100]
    assert v.counts("l1") == {InteractionType.gift: 1, InteractionType.comment: 1}
    assert v.boosts(["l1"], 1.0)["l1"][1] == "live now: 1 gift in the last minute"
    assert v.boosts(["l2"], 1.0)["l2"] == (pytest.approx(math.log1p(1.0)), "live now: 1 comment in the last minute")


def test_live_velocity_is_bounded_per_item_and_in_items() -> None:
    v = LiveVelocity(LiveVelocityParams(window_s=1e9, max_events_per_item=5, max_items=2))
    for n in range(12):
        v.learn_one("busy", InteractionType.gift, float(n))
    assert v.counts("busy")[InteractionType.gift] == 5
    v.learn_one("b", InteractionType.comment, 20.0)
    v.learn_one("c", InteractionType.comment, 21.0)  # the least recently engaged stream ("busy") goes
    assert set(v.events) == {"b", "c"}
    v.forget("b")
    assert set(v.events) == {"c"}


def test_a_memo_lasts_while_the_scores_and_clock_stand() -> None:
    t = Trending()
    t.learn_one("a", Feed.short_video, 1.0, 100.0)
    memo = t.memo("k")
    memo["a"] = 1.0
    assert t.memo("k") == {"a": 1.0} and t.memo("other") == {}
    t.learn_one("b", Feed.short_video, 1.0, 100.0)  # scores change
    assert t.memo("k") == {}
    t.memo("k")["a"] = 2.0
    t.learn_one("c", Feed.short_video, -1.0, 200.0)  # a skip: no score, but the clock moves
    assert t.memo("k") == {}
    t.memo("k")["a"] = 3.0
    t.invalidate()
    assert t.memo("k") == {}
