"""The creators feed's replay protocol: pseudo-creators, derived follows and what each cutoff lets a method see."""

from __future__ import annotations

import numpy as np

from ranking.creator_eval import CreatorProtocol, derive_follows, evaluate_creators, pseudo_creators
from ranking.datasets import Dataset, Interaction, Item
from ranking.domain import InteractionType
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModelParams


def test_pseudo_creators_group_by_first_hashtag_in_runs_and_bucket_the_untagged() -> None:
    items = {
        "1": Item("1", "a #King Glory #x", ("King Glory", "x")),
        "2": Item("2", "b #kingglory", ("kingglory",)),
        "3": Item("3", "c #KING GLORY", ("KING GLORY",)),
        "10": Item("10", "d #cats", ("cats",)),
        "7": Item("7", "no tag"),
    }
    got = pseudo_creators(items, CreatorProtocol(per_creator=2, untagged_buckets=3))
    assert got["1"] == got["2"] == "kingglory~0" and got["3"] == "kingglory~1"  # runs of 2 in id order
    assert got["10"] == "cats~0" and got["7"].startswith("untagged~")


def test_a_follow_comes_with_the_repeated_engagement() -> None:
    creator_of = {"a1": "A", "a2": "A", "b1": "B", "a3": "A", "b2": "B"}
    follows = derive_follows(["a1", "b1", "a2", "a3", "b2"], creator_of, follow_after=2)
    assert [(f.creator, f.position) for f in follows] == [("A", 2), ("B", 4)]


def dataset() -> tuple[Dataset, np.ndarray]:
    """Two themes, each with two creators (tags x/y on one axis, z/w on the other); users met a theme's
    first creator twice (a follow), then its second creator twice (the held-out follow)."""
    items: dict[str, Item] = {}
    for tag in ("x", "y", "z", "w"):
        for n in range(3):
            items[f"{tag}{n}"] = Item(f"{tag}{n}", f"#{tag}", (tag,))
    ids = sorted(items)
    vectors = np.asarray([[1.0, 0.0] if i[0] in "xy" else [0.0, 1.0] for i in ids], np.float32)
    seqs = {}
    for u in range(40):
        first, second = ("x", "y") if u % 2 else ("z", "w")
        order = [f"{first}0", f"{first}1", f"{second}0", f"{second}1"]
        seqs[f"u{u}"] = [Interaction(i, InteractionType.comment) for i in order]
    return Dataset("toy", items, seqs), vectors


def params() -> UserModelParams:
    return UserModelParams({InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()})


def test_with_the_trigger_cutoff_the_target_was_engaged_with_and_the_baseline_finds_it() -> None:
    data, vectors = dataset()
    result = evaluate_creators(data, vectors, params(), protocol=CreatorProtocol(per_creator=3))
    assert result.dataset["users_evaluated"] == 40 and result.dataset["derived_follows"] == 80
    assert result.methods["engaged-most"]["HR@10"] == 1.0
    assert result.methods["livelens"]["HR@10"] == 1.0


def test_with_the_discovery_cutoff_the_target_was_never_engaged_with() -> None:
    data, vectors = dataset()
    result = evaluate_creators(data, vectors, params(), protocol=CreatorProtocol(per_creator=3, cutoff="discovery"))
    # the baseline falls back to popularity (every creator is followed as often: it cannot tell); the taste
    # of the followed creator's theme finds the other creator of that theme first
    assert result.methods["livelens"]["NDCG@10"] == 1.0
    assert result.methods["engaged-most"]["NDCG@10"] < 0.8
