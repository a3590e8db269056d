import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from ranking.datasets import load_csv_dataset
from ranking.domain import Feed, InteractionType
from ranking.evaluation import (
    RANKER_ALTERNATIVES,
    Catalogue,
    LiveLensRun,
    Protocol,
    evaluate_cooccurrence,
    evaluate_livelens,
    evaluate_popularity,
    hit_rate,
    ndcg,
    rank_of_target,
    run_evaluation,
    split_users,
    stream_order,
    summarize,
)
from ranking.feed_matrix import SearchTierParams
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.recommender import RankingParams
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModelParams


def test_metrics_against_hand_computed_values() -> None:
    ranks = [0, 3, 12, None]  # hit at 1st, 4th, 13th place, and a miss
    assert hit_rate(ranks, 10) == 0.5
    assert hit_rate(ranks, 20) == 0.75
    assert ndcg(ranks, 10) == pytest.approx((1 / math.log2(2) + 1 / math.log2(5)) / 4)
    assert ndcg(ranks, 20) == pytest.approx((1.0 + 1 / math.log2(5) + 1 / math.log2(14)) / 4)
    assert summarize(ranks, [10])["HR@10"] == 0.5


def test_rank_of_target_masks_history_and_counts_ties_against_the_target() -> None:
    scores = np.array([5.0, 4.0, 3.0, 3.0, 1.0])
    assert rank_of_target(scores, 2, masked=[]) == 3  # two better, one tie
    assert rank_of_target(scores, 2, masked=[0, 1]) == 1


def test_split_follows_the_paper_protocol() -> None:
    seqs = {"u": [str(i) for i in range(20)], "short": ["a", "b"]}
    strict = split_users(seqs, Protocol())
    assert list(strict) == ["u"]
    sp = strict["u"]
    assert sp.target == "19" and sp.history[-1] == "18" and len(sp.history) == 12
    assert sp.train == tuple(str(i) for i in range(7, 18))  # strict: validation item not in global stats
    assert split_users(seqs, Protocol(variant="streaming"))["u"].train[-1] == "18"
    valid = split_users(seqs, Protocol(target="valid"))["u"]
    assert valid.target == "18" and valid.history[-1] == "17"


def test_baselines_on_a_tiny_catalogue() -> None:
    # Everyone watched x then y in training; the test target is y after x for user t.
    seqs = {f"u{n}": ["x", "y", "z", "w"] for n in range(5)} | {"t": ["q", "x", "y"]}
    splits = split_users(seqs, Protocol(min_interactions=3))
    cat = Catalogue(["q", "w", "x", "y", "z"])
    co = evaluate_cooccurrence(splits, cat, [10])
    assert co[-1] == 0  # y co-occurs with x (t's last history item)
    pop = evaluate_popularity(splits, cat, [10])
    assert all(r is not None for r in pop)


def test_livelens_replays_history_and_ranks_the_nearest_item_first() -> None:
    index = InMemoryIndex(3)
    vecs = {"a": [1, 0, 0], "a2": [0.9, 0.1, 0], "b": [0, 1, 0], "c": [0, 0, 1]}
    index.upsert([IndexedItem(i, Feed.short_video, False, 0.0, i, np.asarray(v, np.float32)) for i, v in vecs.items()])
    splits = split_users({"u": ["b", "a", "a2"]}, Protocol(min_interactions=3))
    params = UserModelParams(event_weights={InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()})
    ranks = evaluate_livelens(splits, index, params, [10], stream_batch=64)
    assert ranks == [0]  # a2 is nearest to the last taste (a), b is seen and masked


def test_generic_csv_input(tmp_path: Path) -> None:
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp,event_type\n1,a,3,like\n1,b,1,view\n1,c,2,gift\n")
    (tmp_path / "items.csv").write_text("item_id,title,tags\na,Alpha,x|y\nb,Beta,\nc,Gamma,\n")
    data = load_csv_dataset(tmp_path / "i.csv", tmp_path / "items.csv")
    assert [i.item_id for i in data.sequences["1"]] == ["b", "c", "a"]  # ordered by timestamp
    assert data.sequences["1"][1].type is InteractionType.gift
    assert data.items["a"].tags == ("x", "y")

    def encode(texts: list[str]) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[: len(texts)]

    params = UserModelParams(event_weights={InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()})
    result = run_evaluation(data, encode, params, Protocol(), "test", stream_batch=64)
    signals = {f"signal:{s}" for s in ("taste", "content", "co", "next_item", "trending")}
    assert set(result.methods) == {"livelens", "livelens:no_mmr", "popularity", "cooccurrence"} | signals
    assert all(set(m) == {"HR@10", "NDCG@10", "HR@20", "NDCG@20"} for m in result.methods.values())
    assert set(result.not_exercised) == {"signal:live", "signal:freshness", "signal:new_items", "exploration"}
    assert result.dataset["users"] == 1
    c = result.candidates
    assert 0 <= c["target_in_candidates"] <= 1 and c["mean_candidates"] >= 1
    assert set(c["by_source"]) >= {"taste", "co", "next_item"}

    compared = run_evaluation(data, encode, params, Protocol(), "test", stream_batch=64, compare_rankers=True)
    alternatives = {f"ranker:{name}" for name in RANKER_ALTERNATIVES}
    assert set(compared.methods) == set(result.methods) | alternatives
    assert compared.methods["livelens"] == result.methods["livelens"]  # shadows never change what is served

    # as a worker: a catalogue under the tier's threshold is searched exactly, and the run says so
    as_worker = run_evaluation(data, encode, params, Protocol(), "test", stream_batch=64, search=SearchTierParams())
    assert as_worker.protocol["search"] == "exact" and as_worker.methods == result.methods
    forced = SearchTierParams(nlist=1, nprobe=1, exact_below=0)
    assert run_evaluation(data, encode, params, Protocol(), "test", stream_batch=64, search=forced).protocol[
        "search"
    ] == asdict(forced)


def test_without_mmr_the_served_lists_are_the_rankers_own_order() -> None:
    """``livelens:no_mmr`` ranks the same candidates by the ranker's score alone: with MMR switched off
    (lambda 1) it must equal the served lists, and with strong diversification it may differ."""
    rng = np.random.default_rng(3)
    items = [f"i{n}" for n in range(40)]
    index = InMemoryIndex(8)
    index.upsert(
        [IndexedItem(i, Feed.short_video, False, 0.0, i, rng.normal(size=8).astype(np.float32)) for i in items]
    )
    seqs = {f"u{n}": list(rng.choice(items, size=8, replace=False)) for n in range(30)}
    splits = split_users(seqs, Protocol(min_interactions=3))
    params = UserModelParams(event_weights={InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()})
    for lam, same in ((1.0, True), (0.0, False)):
        run = LiveLensRun()
        ranking = RankingParams(mmr_lambda=lam)
        evaluate_livelens(splits, index, params, [10, 20], stream_batch=64, ranking=ranking, run=run)
        hits = [r for r in run.unshaped_ranks if r is not None and r < 20]
        assert hits, "no target ranked: the comparison would mean nothing"
        served = [r if r is not None and r < 20 else None for r in run.ranks]
        unshaped = [r if r is not None and r < 20 else None for r in run.unshaped_ranks]
        assert (served == unshaped) is same


def test_the_stream_interleaves_users_and_keeps_each_users_order() -> None:
    splits = split_users({"u": ["a", "b", "c", "d", "e"], "v": ["x", "y", "z"]}, Protocol(min_interactions=3))
    assert stream_order(splits, "train") == [("u", 0, "a"), ("v", 0, "x"), ("u", 1, "b"), ("u", 2, "c")]
    assert stream_order(splits, "history")[-1] == ("u", 3, "d")
