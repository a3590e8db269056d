"""The pure parts of ``livelens bench load``: drain time from samples, RSS from /proc."""

from __future__ import annotations

import os

from bench import BENCHES
from bench.load import drain_time, rss_mib


def test_drain_time_counts_from_the_end_of_the_offer_to_the_first_complete_sample() -> None:
    samples = [{"t": 1.0, "consumed": 5}, {"t": 4.0, "consumed": 9}, {"t": 7.5, "consumed": 10}]
    assert drain_time(samples, offered=10, stop_at=3.0) == 4.5
    assert drain_time(samples, offered=11, stop_at=3.0) is None  # never caught up
    assert drain_time([{"t": 2.0, "consumed": 10}], offered=10, stop_at=3.0) is None  # before the end


def test_rss_of_a_live_and_a_gone_process() -> None:
    mine = rss_mib(os.getpid())
    assert mine is not None and mine > 1
    assert rss_mib(None) is None and rss_mib(2**22 + 12345) is None


def test_registered_as_livelens_bench_load() -> None:
    assert BENCHES["load"] == "bench.load"
