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


def test_model_freshness_waits_for_the_last_worker_to_serve_a_version_that_includes_the_event() -> None:
    from bench.model_freshness import latencies

    published = {"e1": 10.0, "e2": 10.5, "e3": 11.0}
    version_of = {"e1": 4, "e2": 5}  # e3 never reached a delta
    applied = [{3: 10.2, 5: 11.0}, {4: 10.8, 6: 12.0}]  # worker -> version served -> first time
    lat, missing = latencies(published, version_of, applied)
    # e1 (v4): worker 1 serves v5 at 11.0, worker 2 v4 at 10.8 -> 1.0; e2 (v5): worker 2 only at v6 (12.0) -> 1.5
    assert lat == [1.0, 1.5] and missing == 1


def test_through_kafka_agreement_states_the_difference_against_one_standard_error() -> None:
    from streams.kafka_eval import KafkaEvalResult

    ranks_in = [0, 3, None, None] * 25  # HR@10 0.5 over 100 users: SE 0.05
    ranks_kafka = [0, 3, None, None] * 24 + [None] * 4  # 0.48
    r = KafkaEvalResult(100, 10, {"HR@10": 0.5}, {"HR@10": 0.48}, ranks_in, ranks_kafka)
    a = r.agreement()
    assert a["same_rank_users"] == 98 and a["same_rank_share"] == 0.98
    assert a["HR@10"]["standard_error"] == 0.05 and a["HR@10"]["within_one_se"]
    assert abs(a["HR@10"]["difference"] + 0.02) < 1e-12
