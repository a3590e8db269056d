import numpy as np
import pytest

from ranking.domain import Interaction, InteractionType
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModel, UserModelParams, UserState, event_weight

WEIGHTS = {InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
A = np.array([1.0, 0.0, 0.0])
B = np.array([0.0, 1.0, 0.0])
C = np.array([0.0, 0.0, 1.0])


def ev(i: int, item: str = "a", kind: str = "like", ts: float = 1000.0, value: float = 0.0) -> Interaction:
    return Interaction(event_id=f"e{i}", user_id="u", item_id=item, type=InteractionType(kind), ts=ts, value=value)


@pytest.fixture
def model() -> UserModel:
    return UserModel(UserModelParams(event_weights=WEIGHTS, half_life_s=100.0, recent_items=3, dedupe_window=4))


def test_weights_order_gift_over_comment_over_like_over_view() -> None:
    p = UserModelParams(event_weights=WEIGHTS)
    w = {k: event_weight(ev(0, kind=k), p) for k in ("gift", "comment", "share", "like", "view", "skip")}
    assert w["gift"] > w["comment"] > w["share"] > w["like"] > w["view"] > 0 > w["skip"]
    assert event_weight(ev(0, kind="view", value=3), p) < event_weight(ev(0, kind="view", value=60), p)
    assert event_weight(ev(0, kind="gift", value=100), p) > event_weight(ev(0, kind="gift", value=1), p)


def test_replayed_event_changes_nothing(model: UserModel) -> None:
    state = UserState()
    assert model.learn_one(state, ev(1), A)
    before = state.to_dict()
    assert not model.learn_one(state, ev(1), B)
    assert state.to_dict() == before


def test_state_round_trips_through_json_shape(model: UserModel) -> None:
    state = UserState()
    model.learn_one(state, ev(1, kind="gift", value=3), A)
    model.learn_one(state, ev(2, item="b", kind="skip"), B)
    again = UserState.from_dict(state.to_dict())
    assert again.to_dict() == state.to_dict()
    assert again.counts == {"gift": 1, "skip": 1}


def test_skip_pushes_taste_away_from_the_item(model: UserModel) -> None:
    state = UserState()
    model.learn_one(state, ev(1, item="a"), (A + B) / np.sqrt(2))
    q_before = model.query_vector(state)
    model.learn_one(state, ev(2, item="b", kind="skip"), B)
    q_after = model.query_vector(state)
    assert q_before is not None and q_after is not None
    assert float(q_after @ B) < float(q_before @ B)
    assert float(q_after @ A) > float(q_before @ A)


def test_gift_pulls_harder_than_view(model: UserModel) -> None:
    gifted, viewed = UserState(), UserState()
    for s in (gifted, viewed):
        model.learn_one(s, ev(1, item="a"), A)
    model.learn_one(gifted, ev(2, item="b", kind="gift", value=10), B)
    model.learn_one(viewed, ev(2, item="b", kind="view", value=10), B)
    assert float(model.query_vector(gifted) @ B) > float(model.query_vector(viewed) @ B)


def test_old_taste_decays(model: UserModel) -> None:
    recent, stale = UserState(), UserState()
    model.learn_one(recent, ev(1, item="a", ts=1000.0), A)
    model.learn_one(recent, ev(2, item="c", ts=1001.0), C)
    model.learn_one(stale, ev(1, item="a", ts=1000.0), A)
    model.learn_one(stale, ev(2, item="c", ts=1000.0 + 1000), C)  # ten half-lives later
    assert float(np.asarray(stale.long_term) @ A) < 0.01 * float(np.asarray(recent.long_term) @ A)


def test_recent_items_and_dedupe_window_are_bounded(model: UserModel) -> None:
    state = UserState()
    for i in range(10):
        model.learn_one(state, ev(i, item=f"i{i}"), A)
    assert [r.item_id for r in state.recent] == ["i7", "i8", "i9"]
    assert state.applied_event_ids == ["e6", "e7", "e8", "e9"]
    assert state.n_events == 10 and state.counts == {"like": 10}
