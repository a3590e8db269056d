"""Two model configurations served side by side by a real worker (embedded broker, Milvus Lite, MiniLM).

Users are split by crc32 of their id; every list must carry its own arm's configuration and a version that
advances as both arms learn the whole stream; following a list must show up as hits of that arm in /metrics,
and ``livelens ab report`` must read them back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from ranking.ab import ArmSplit
from streams.ab_report import parse_arms
from streams.cli import cli
from streams.replay import publish_raw
from streams.schemas import ContentEvent, InteractionEvent
from tests.conftest import base_settings
from tests.integration.test_pipeline import Inbox

pytestmark = pytest.mark.integration

TITLES = {
    "ab_cook1": "Grandma's homemade dumplings recipe, pork and cabbage filling",
    "ab_cook2": "Spicy Sichuan noodles cooked at home in ten minutes",
    "ab_cook3": "How to bake fluffy bread rolls in your kitchen",
    "ab_ball1": "Football highlights: last minute goal wins the derby",
    "ab_ball2": "Top ten soccer goals of the season, amazing strikes",
    "ab_ball3": "Goalkeeper saves a penalty in the football cup final",
    "ab_song1": "Acoustic guitar cover of a classic love song",
    "ab_song2": "Piano ballad performed live in the rain",
}
SPLIT = ArmSplit(0.5)
USERS = {arm: [u for u in (f"ab-user-{n}" for n in range(100)) if SPLIT.arm(u) == arm][:2] for arm in ("a", "b")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Arm b ranks by relevance only (no MMR) with a linear ranker: another configuration, same stream."""
    from streams.local import LocalStack

    root = tmp_path_factory.mktemp("stack-ab")
    # TRAINER=false: this checks that a list carries the version that learned its own trigger, which
    # only a worker training itself does (with a trainer the version is the snapshot's: test_trainer)
    settings = base_settings(root, ab_variant={"mmr_lambda": 1.0, "ranker_hidden": 0}, ab_share=0.5, trainer=False)
    with LocalStack(settings, root) as local:
        yield local


def interact(stack: Any, tag: str, user: str, item: str) -> str:
    s = stack.settings
    event_id = f"{tag}-{user}"
    ev = InteractionEvent(event_id=event_id, user_id=user, item_id=item, type="like", value=10)
    publish_raw(s, s.topic_interactions, user, ev.model_dump_json())
    return event_id


def test_each_arm_serves_its_own_advancing_version_and_is_scored_apart(stack: Any) -> None:
    s = stack.settings
    for item_id, title in TITLES.items():
        publish_raw(
            s,
            s.topic_content,
            item_id,
            ContentEvent(item_id=item_id, kind="short_video", title=title).model_dump_json(),
        )
    stack.worker.wait_for("livelens_items_indexed", len(TITLES), timeout=120)
    inbox = Inbox(stack)
    try:
        check_arms(stack, inbox)
    finally:
        inbox.reader.close()


def check_arms(stack: Any, inbox: Inbox) -> None:
    users = [u for arm in ("a", "b") for u in USERS[arm]]
    first_items = ["ab_cook1", "ab_ball1", "ab_song1", "ab_cook2"]

    # round 1: each user's first interaction (nothing to score yet); each gets a list from their arm
    triggers = {u: interact(stack, "r1", u, item) for u, item in zip(users, first_items, strict=True)}
    round1 = {u: inbox.recommendation(t)[1] for u, t in triggers.items()}
    versions1 = {u: rec.model_version.split(":") for u, rec in round1.items()}
    for u, (arm, _config, counter) in versions1.items():
        assert arm == SPLIT.arm(u), (u, round1[u].model_version)
        assert int(counter) >= 1  # the trigger itself was learned before ranking
        assert round1[u].items, f"{u} got an empty list"
    configs = {arm: {c for u, (a, c, _) in versions1.items() if a == arm} for arm in ("a", "b")}
    assert all(len(c) == 1 for c in configs.values()) and configs["a"] != configs["b"], configs

    # round 2: each user likes the top item of the list they got: a hit at rank 1 for their arm
    triggers = {u: interact(stack, "r2", u, round1[u].items[0].item_id) for u in users}
    round2 = {u: inbox.recommendation(t)[1] for u, t in triggers.items()}
    for u, rec in round2.items():
        arm, config, counter = rec.model_version.split(":")
        assert (arm, config) == tuple(versions1[u][:2])
        # both arms learned every event: the version moved past all round-1 events
        assert int(counter) > max(int(v[2]) for v in versions1.values()), (u, rec.model_version)
        assert int(counter) <= 2 * len(users)

    arms = parse_arms(stack.worker.get_text("/metrics"))
    for arm in ("a", "b"):
        t = arms[arm].tally
        assert (t.interactions, t.hits, t.ndcg) == (2, 2, pytest.approx(2.0)), (arm, t)
        assert arms[arm].unscored == 2  # round 1: no list before it
        assert arms[arm].events_learned == 2 * len(users)
        assert arms[arm].config == next(iter(configs[arm]))

    # GET /recommendations ranks by the user's arm too
    user_b = USERS["b"][0]
    assert stack.worker.get(f"/recommendations/{user_b}")["model_version"].startswith(f"b:{next(iter(configs['b']))}:")

    # and the report reads the same figures back
    result = CliRunner().invoke(cli, ["ab", "report", "--url", f"{stack.worker.url}/metrics"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.count("│") > 3]
    assert any(r.split("│")[1].strip() == "b - a" for r in rows), result.output
    assert sum("1.0000 [" in r for r in rows) >= 2, result.output  # HR@K of each arm
