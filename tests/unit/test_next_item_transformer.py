"""The self-attentive next-item model: learns order, buffers online examples, stays bounded."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from ranking.next_item_transformer import TransformerNextItem, TransformerParams
from streams.params import online_models_from_settings
from streams.settings import Settings


def small(**kw: object) -> TransformerNextItem:
    base: dict[str, object] = {"dim": 16, "batch": 8, "max_items": 50, "dropout": 0.0, "learning_rate": 5e-3}
    return TransformerNextItem(TransformerParams(**{**base, **kw}))  # type: ignore[arg-type]


def test_learns_that_order_matters() -> None:
    # the same two items in either order are followed by different items: a bag of recent items
    # cannot tell these apart, attention over positions can
    pairs = [(["a"], "b"), (["c"], "d"), (["a", "c"], "x"), (["c", "a"], "y")] * 4
    model = small()
    for _ in range(60):
        model.learn_many(pairs)
    model.flush()
    for context, expected in ((["a"], "b"), (["c"], "d"), (["a", "c"], "x"), (["c", "a"], "y")):
        scores = model.context_scores(context)
        assert scores is not None
        assert scores.top(1) == [expected], context
        z = scores.z(["b", "d", "x", "y"])
        assert z[expected] == max(z.values())


def test_examples_are_buffered_until_a_batch_and_flush_applies_the_rest() -> None:
    model = small(batch=4)
    before = model.net.items.weight.detach().clone()
    assert model.learn_many([(["a"], "b"), (["b"], "c"), (["c"], "d")]) == 3
    assert model.learned == 0
    assert model.learn_many([(["d"], "e")]) == 1  # the 4th example makes a batch: one step
    assert model.learned == 4
    stepped = model.net.items.weight.detach().clone()
    assert not np.allclose(before[1:6].numpy(), stepped[1:6].numpy())
    model.learn_many([(["e"], "f")])
    model.flush()
    assert model.learned == 5
    model.flush()  # nothing buffered: no step
    assert model.learned == 5


def test_non_positive_weights_and_empty_contexts_are_skipped() -> None:
    model = small()
    assert model.learn_many([(["a"], "b")], weights=[0.0]) == 0
    assert model.learn_many([([], "b"), (["b"], "b")]) == 0  # no context; an item is not its own context
    assert model.context_scores(["never-seen"]) is None
    assert model.context_scores([]) is None


def test_item_rows_are_bounded_and_reused() -> None:
    model = small(max_items=5, batch=2)
    for n in range(40):
        model.learn_many([([f"i{n}"], f"i{n + 1}")])
    model.flush()
    assert len(model) == 5
    assert set(model.row) == {f"i{n}" for n in range(36, 41)}  # the most recently used
    assert sorted(model.row.values()) == [1, 2, 3, 4, 5]  # row 0 stays padding
    scores = model.context_scores(["i39"])
    assert scores is not None and np.isfinite(scores.logits).all()


def test_content_seeds_new_items() -> None:
    model = small()
    rng = np.random.default_rng(0)
    v, w = rng.standard_normal(32).astype(np.float32), rng.standard_normal(32).astype(np.float32)
    model.note("twin1", v)
    model.note("twin2", v)
    model.note("other", w)
    e = model.net.items.weight.detach().numpy()
    r1, r2, r3 = model.row["twin1"], model.row["twin2"], model.row["other"]

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    assert cos(e[r1], e[r2]) > 0.9 > cos(e[r1], e[r3])


def test_settings_pick_the_model() -> None:
    assert isinstance(online_models_from_settings(Settings()).next_item, TransformerNextItem)  # the default
    models = online_models_from_settings(Settings(next_item_model="embedding"))  # type: ignore[call-arg]
    assert type(models.next_item).__name__ == "NextItemModel"


def test_rows_grow_without_losing_what_was_learned() -> None:
    model = small(max_items=5_000)
    pairs = [(["a"], "b"), (["c"], "d")] * 4
    for _ in range(40):
        model.learn_many(pairs)
    model.flush()
    before = model.context_scores(["a"])
    assert before is not None and before.top(1) == ["b"]
    rows_before = model.net.items.weight.shape[0]
    for i in range(2 * rows_before):  # new items: the rows must grow
        model.note(f"n{i}", np.ones(8, np.float32))
    assert model.net.items.weight.shape[0] > rows_before
    assert model.net.items.weight.shape[0] == model.net.bias.shape[0]
    after = model.context_scores(["a"])
    assert after is not None
    old = ["a", "b", "c", "d"]
    np.testing.assert_allclose(
        [after.logits[after.ids.index(i)] for i in old], [before.logits[before.ids.index(i)] for i in old], rtol=1e-5
    )
    # the optimiser kept its moments for the old rows and trains the grown ones
    state = model.optimizer.state[model.net.items.weight]
    assert state["exp_avg"].shape == model.net.items.weight.shape
    model.learn_many([(["n5"], "n6")] * 8)
    model.flush()
    assert model.learned == 40 * 8 + 8
