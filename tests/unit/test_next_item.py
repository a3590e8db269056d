"""The online next-item model: learns what follows what, generalises through shared contexts, stays bounded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from ranking.next_item import (
    HEAD_RANKS,
    RANK_SAMPLE,
    ContextScores,
    NextItemLearner,
    NextItemModel,
    NextItemParams,
)


def trained(pairs: list[tuple[list[str], str]], passes: int = 30, **kw: object) -> NextItemModel:
    model = NextItemModel(NextItemParams(dim=16, negatives=4, **kw))  # type: ignore[arg-type]
    for _ in range(passes):
        model.learn_many(pairs)
    return model


def test_learns_which_item_comes_next() -> None:
    pairs = [(["a"], "b"), (["c"], "d"), (["e"], "f")] * 5
    model = trained(pairs)
    s = model.scores(["a"], ["b", "d", "f"])
    assert s[0] > s[1] and s[0] > s[2]
    s = model.scores(["c"], ["b", "d", "f"])
    assert s[1] > s[0] and s[1] > s[2]


def test_generalises_to_pairs_never_seen_through_shared_contexts() -> None:
    # a and x are both followed by b; a is also followed by c. Nobody watched c after x, but x behaves
    # like a, so c should rank above an unrelated item for context x.
    pairs = [(["a"], "b"), (["x"], "b"), (["a"], "c"), (["p"], "q"), (["r"], "q")] * 4
    model = trained(pairs, passes=60)
    c, q = model.scores(["x"], ["c", "q"])
    assert c > q


def test_non_positive_weights_and_empty_contexts_do_not_train_embeddings() -> None:
    model = NextItemModel(NextItemParams(dim=8))
    assert model.learn_many([(["a"], "b")], weights=[-1.0]) == 0
    assert model.learn_many([([], "b")]) == 0
    assert len(model) == 1  # b was counted (popularity), a never entered
    assert model.user_vector(["a"]) is None


def test_standardized_scores_and_top_items() -> None:
    model = trained([(["a"], "b"), (["c"], "d"), (["e"], "f")] * 5)
    scores = model.context_scores(["a"])
    assert scores is not None
    z = scores.z(["b", "d", "never-seen"])
    assert z["b"] > z["d"] > z["never-seen"] or z["never-seen"] <= min(z["b"], z["d"])
    assert z["never-seen"] <= min(scores.z(scores.ids).values())
    top = scores.top(2)
    assert top[0] == "b" and len(top) == 2
    assert model.context_scores([]) is None


def test_memory_is_bounded_and_recent_items_survive() -> None:
    model = NextItemModel(NextItemParams(dim=4, max_items=10))
    for n in range(100):
        model.learn_many([([f"i{n}"], f"i{n + 1}")])
    assert len(model) == 10
    assert "i100" in model.row and "i0" not in model.row
    assert np.isfinite(model.e_in).all() and np.isfinite(model.e_out).all()


def test_content_seeds_a_new_item() -> None:
    vectors = {"a": np.array([1.0, 0, 0], np.float32), "b": np.array([1.0, 0, 0], np.float32)}
    model = NextItemModel(NextItemParams(dim=8, content_scale=1.0), content=vectors.get)
    model.learn_many([([], "a"), ([], "b"), ([], "z")])
    a, b, z = (model.e_in[model.row[i]] for i in "abz")

    def cos(x: np.ndarray, y: np.ndarray) -> float:
        return float(x @ y) / float(np.linalg.norm(x) * np.linalg.norm(y))

    assert cos(a, b) > 0.99  # same content, same prior
    assert abs(cos(a, z)) < 0.9  # no content: a random start


def test_confidence_ramps_with_what_the_model_learned() -> None:
    model = NextItemModel(NextItemParams(dim=4))
    assert model.confidence(100) == 0.0
    model.learn_many([(["a"], "b")] * 50)
    assert model.confidence(100) == 0.5
    model.learn_many([(["a"], "b")] * 100)
    assert model.confidence(100) == 1.0 and model.confidence(0) == 1.0


def embedding_model() -> NextItemLearner:
    return trained([(["a"], "b"), (["c"], "d"), (["b"], "c"), (["b", "c"], "a")] * 5)


def transformer_model() -> NextItemLearner:
    from ranking.next_item_transformer import TransformerNextItem, TransformerParams

    model = TransformerNextItem(TransformerParams(dim=16, batch=8, max_items=50, dropout=0.0, learning_rate=5e-3))
    for _ in range(10):
        model.learn_many([(["a"], "b"), (["c"], "d"), (["b", "c"], "a")])
    model.flush()
    return model


@pytest.mark.parametrize(("make", "rtol", "atol"), [(embedding_model, 1e-5, 1e-6), (transformer_model, 1e-4, 1e-5)])
def test_batched_scores_equal_one_at_a_time(make: Callable[[], NextItemLearner], rtol: float, atol: float) -> None:
    model = make()
    contexts = [["a"], [], ["never-seen"], ["c", "b"], ["c", "b", "a"]]
    batched = model.context_scores_many(contexts)
    assert batched[1] is None and batched[2] is None
    for context, scores in zip(contexts, batched, strict=True):
        single = model.context_scores(context)
        if single is None:
            assert scores is None
            continue
        assert scores is not None and scores.ids == single.ids
        np.testing.assert_allclose(scores.logits, single.logits, rtol=rtol, atol=atol)


def test_item_rows_reuse_the_least_recently_used_row() -> None:
    from ranking.next_item import ItemRows

    rows = ItemRows(max_items=2, first=1)
    assert (rows.allocate("a"), rows.allocate("b")) == (1, 2)
    assert rows.touch("a") == 1 and rows.touch("zzz") is None
    assert rows.allocate("c") == 2  # b was the least recently used
    assert list(rows) == ["a", "c"] and rows.next_row == 3


def test_item_rows_keep_their_known_list_until_their_content_or_order_changes() -> None:
    from ranking.next_item import ItemRows, known_rows

    rows = ItemRows(max_items=3)
    for item in "abc":
        rows.allocate(item)

    def listed() -> tuple[list[str], list[int]]:
        ids, r = known_rows(rows)
        return ids, r.tolist()

    assert listed() == (["a", "b", "c"], [0, 1, 2])
    assert known_rows(rows) is known_rows(rows)  # kept, not rebuilt
    rows.touch("a")  # least recently used order changes
    assert listed() == (["b", "c", "a"], [1, 2, 0])
    rows.allocate("d")  # full: b's row is reused
    assert listed() == (["c", "a", "d"], [2, 0, 1])
    rows.pop("c")
    assert listed() == (["a", "d"], [0, 1])
    rows["e"] = 7
    del rows["a"]
    assert listed() == (["d", "e"], [1, 7])
    rows.clear()
    assert listed() == ([], [])


def scores_over(logits: np.ndarray) -> ContextScores:
    ids = [f"i{n}" for n in range(len(logits))]
    return ContextScores(dict(zip(ids, range(len(ids)), strict=True)), logits, ids, logits)


@pytest.mark.parametrize("n_items", [50, RANK_SAMPLE, 19_220, 100_000])
def test_ranks_are_exact_in_the_head_and_close_below_it(n_items: int) -> None:
    rng = np.random.default_rng(n_items)
    logits = rng.standard_normal(n_items).astype(np.float32)
    logits[::7] = logits[3]  # ties
    scores = scores_over(logits)
    probe = np.concatenate([logits[rng.choice(n_items, 300)], [logits.max() + 1, logits.min() - 1]]).astype(np.float64)
    exact = np.array([(logits > v).sum() for v in probe])
    got = scores.above(probe)
    head = len(scores.head()[0])
    assert head >= min(n_items, HEAD_RANKS // 2)  # about HEAD_RANKS: the sample's item at that rank
    in_head = exact < head
    np.testing.assert_array_equal(got[in_head], exact[in_head])
    assert (got[~in_head] >= head).all()
    if n_items <= RANK_SAMPLE:
        np.testing.assert_array_equal(got, exact)  # the sample is every item
    else:  # below the head: the strided sample's count times its stride, within its noise
        stride = n_items // RANK_SAMPLE
        err = np.abs(got[~in_head] - exact[~in_head])
        assert (err <= 4 * np.sqrt(exact[~in_head] * stride) + 2 * stride).all()
    order = np.argsort(-logits, kind="stable")
    for k in (1, 100, HEAD_RANKS, HEAD_RANKS + 1000):
        top = scores.top(k)
        assert len(top) == min(k, n_items)
        np.testing.assert_array_equal(np.sort(logits[[int(i[1:]) for i in top]])[::-1], logits[order[: len(top)]])


def test_batched_statistics_equal_one_context_alone() -> None:
    model = trained([(["a"], "b"), (["c"], "d"), (["e"], "f"), (["b"], "c")] * 5)
    model.forget("d")  # a freed row: the known items no longer fill a range of rows (gathered, not sliced)
    assert model.row.dense() is None
    for context in (["a"], ["c", "b"]):
        scores = model.context_scores(context)
        assert scores is not None and "d" not in scores.ids
        alone = ContextScores(model.row, scores._by_row, scores.ids, scores.logits.copy())
        assert scores.mean == pytest.approx(alone.mean) and scores.std == pytest.approx(alone.std)
        assert scores.lse == pytest.approx(alone.lse, rel=1e-5)
        assert scores.top(3) == alone.top(3)


def test_item_rows_say_when_the_known_items_fill_a_range_of_rows() -> None:
    from ranking.next_item import ItemRows

    rows = ItemRows(max_items=3, first=1)
    for item in "abc":
        rows.allocate(item)
    rows.touch("a")  # order changes, rows do not
    assert rows.dense() == (1, ["a", "b", "c"])
    rows.allocate("d")  # full: b's row is reused
    assert rows.dense() == (1, ["a", "d", "c"])
    rows.pop("d")
    assert rows.dense() is None  # row 2 holds no item now
    rows.pop("a")
    assert rows.dense() == (3, ["c"])
