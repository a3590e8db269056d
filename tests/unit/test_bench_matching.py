"""Freshness matching: events coalesced into one list count until that list arrives; redeliveries are flagged."""

from __future__ import annotations

from bench.freshness import coalesced_latencies


def test_coalesced_events_take_the_arrival_of_the_list_that_covers_them() -> None:
    sent = {("u", "short_video"): [("e1", 1.0), ("e2", 1.5), ("e3", 2.0)], ("v", "live"): [("f1", 1.0)]}
    recs = [
        (2.25, "u", "short_video", "e2"),  # covers e1 and e2 (one micro-batch)
        (2.5, "u", "short_video", "e2"),  # at-least-once redelivery
        (3.0, "u", "short_video", "e3"),
        (9.0, "x", "live", "other-phase"),  # not ours
    ]
    m = coalesced_latencies(sent, recs)
    assert sorted(m.latencies_s) == [0.75, 1.0, 1.25]
    assert (m.lists, m.duplicates, m.missing) == (2, 1, 1)  # f1 never got a list
    assert m.last_arrival == 3.0
