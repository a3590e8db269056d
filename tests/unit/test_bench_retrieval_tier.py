"""``livelens bench retrieval --only tier`` on a small catalogue: it measures what it says (the IVF's recall
against exact over the same rows, the live feed exact, replaced vectors found) and its figures hang together."""

from __future__ import annotations

from rich.console import Console

from bench.retrieval import make_data
from bench.retrieval_tier import REPLACED, run_tier_size


def test_the_tier_bench_on_a_small_catalogue() -> None:
    items, queries = make_data(6_000, 64, 20)
    out = run_tier_size(items, queries, 5, Console(quiet=True))
    assert out["short_video_items"] == 5_700 and out["live_items"] == 300
    assert out["params"]["exact_below"] == 2_850 and out["nlist"] == 146  # trained on 5,700 // 39 lists
    assert [row["nprobe"] for row in out["ann"]] == [16, 32, 64]
    recalls = [row["recall_at_100"] for row in out["ann"]]
    assert recalls == sorted(recalls) and recalls[-1] >= 0.95  # more lists probed, more found
    assert out["live_feed"]["recall_at_100"] == 1.0
    assert out["replace_vectors"]["replaced_in_top_100"] == min(100, REPLACED)
    assert out["memory"]["ivf_codes_mib"] < out["memory"]["float32_rows_mib"]
