"""Sequence neighbours against hand-computed scores."""

import pytest

from ranking.neighbours import NeighbourParams, SequenceNeighbours


def test_nearest_sequences_score_their_items() -> None:
    nn = SequenceNeighbours(NeighbourParams(neighbours=2, recent=2, recency_decay=0.5))
    for user, items in {"u1": ["a", "b", "x"], "u2": ["b", "y"], "u3": ["c", "z"]}.items():
        for item in items:
            nn.learn_one(user, item)
    nn.learn_one("u3", "skip-me", -0.6)  # negative weights are not remembered
    # recent [a, b]: b weighs 1, a 0.5 -> u1 shares both (1.5), u2 shares b (1.0), u3 nothing
    scores = nn.scores(["c", "a", "b"])  # only the last 2 items look for neighbours
    assert scores == {
        "a": pytest.approx(1.5 / 2.5),
        "b": 1.0,  # 1.5 + 1.0, the best
        "x": pytest.approx(1.5 / 2.5),
        "y": pytest.approx(1.0 / 2.5),
    }
    assert "skip-me" not in nn.sequences["u3"]
    assert nn.scores(["b"], exclude_user="u1") == {"b": 1.0, "y": 1.0}


def test_memory_is_bounded() -> None:
    nn = SequenceNeighbours(NeighbourParams(sequence=3, users_per_item=2, max_users=2))
    for n in range(5):
        nn.learn_one("u", f"i{n}")
    assert list(nn.sequences["u"]) == ["i2", "i3", "i4"]
    for user in ("v", "w", "x"):
        nn.learn_one(user, "hot")
    assert list(nn.users_of["hot"]) == ["w", "x"] and list(nn.sequences) == ["w", "x"]
