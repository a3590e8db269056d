"""A/B arms, model versions and the online metric: the split, planted lists, versions, intervals, the report."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Info, generate_latest
from typer.testing import CliRunner

from ranking.ab import ArmSplit, LastLists, Outcome, Tally, mean_ci, ndcg_at, wilson
from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModel, UserModelParams, UserState
from streams.ab_report import differences, parse_arms
from streams.cli import cli
from streams.handlers import Handlers, InteractionResult
from streams.params import arm_split_from_settings, online_arms_from_settings
from streams.schemas import ContentEvent, InteractionEvent
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
USERS = [f"user-{n}" for n in range(20_000)]


# --- the split -----------------------------------------------------------------------------------------


def test_the_split_respects_the_share_and_nests() -> None:
    for share in (0.1, 0.5, 0.8):
        in_b = sum(ArmSplit(share).arm(u) == "b" for u in USERS) / len(USERS)
        assert abs(in_b - share) < 0.015, (share, in_b)
    assert {ArmSplit(0.0).arm(u) for u in USERS} == {"a"}
    assert {ArmSplit(1.0).arm(u) for u in USERS} == {"b"}
    # growing the share only moves users from a to b: nobody flips back
    small = {u for u in USERS if ArmSplit(0.2).arm(u) == "b"}
    large = {u for u in USERS if ArmSplit(0.5).arm(u) == "b"}
    assert small < large
    with pytest.raises(ValueError):
        ArmSplit(1.5)


def test_the_split_is_the_same_in_every_process() -> None:
    """Python's str hash is salted per process; the split must not be."""
    code = "from ranking.ab import ArmSplit; print(''.join(ArmSplit(0.5).arm(f'user-{n}') for n in range(300)))"
    here = "".join(ArmSplit(0.5).arm(f"user-{n}") for n in range(300))
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here
    assert set(here) == {"a", "b"}


# --- the online metric on planted lists --------------------------------------------------------------------


def test_last_lists_score_hits_misses_and_ndcg() -> None:
    lists = LastLists(max_lists=2)
    assert lists.score("u1", Feed.short_video, "x") is None  # nothing emitted yet: unscored, not a miss
    lists.record("u1", Feed.short_video, "a", ["x", "y", "z"])
    assert lists.score("u1", Feed.short_video, "x") == Outcome("a", Feed.short_video, True, 1.0, 3)
    third = lists.score("u1", Feed.short_video, "z")
    assert third is not None and third.hit and third.ndcg == pytest.approx(0.5)  # 1 / log2(4)
    assert lists.score("u1", Feed.short_video, "w") == Outcome("a", Feed.short_video, False, 0.0, 3)
    assert lists.score("u1", Feed.live, "x") is None  # per feed
    lists.record("u1", Feed.short_video, "b", ["w"])  # the newest list replaces the last one
    assert lists.score("u1", Feed.short_video, "x") == Outcome("b", Feed.short_video, False, 0.0, 1)
    lists.record("u2", Feed.short_video, "a", ["x"])
    lists.record("u3", Feed.short_video, "a", ["x"])  # bound 2: u1 (least recently emitted) goes
    assert len(lists) == 2 and lists.score("u1", Feed.short_video, "w") is None


def test_tally_of_a_planted_sequence() -> None:
    lists = LastLists()
    tally = Tally()
    lists.record("u", Feed.short_video, "a", ["i1", "i2", "i3", "i4"])
    for item in ("i2", "i9", "i4", "i1"):
        outcome = lists.score("u", Feed.short_video, item)
        assert outcome is not None
        tally.add(outcome)
    values = [ndcg_at(1), 0.0, ndcg_at(3), 1.0]
    assert (tally.interactions, tally.hits) == (4, 3)
    assert tally.ndcg == pytest.approx(sum(values))
    assert tally.ndcg_squares == pytest.approx(sum(v * v for v in values))
    assert ndcg_at(1) == pytest.approx(1 / math.log2(3))


# --- intervals ----------------------------------------------------------------------------------------------


def test_wilson_interval_matches_known_values() -> None:
    half = wilson(5, 10)
    assert (half.value, round(half.low, 4), round(half.high, 4)) == (0.5, 0.2366, 0.7634)
    none = wilson(0, 10)
    assert none.low == 0.0 and round(none.high, 4) == 0.2775
    assert math.isnan(wilson(0, 0).value)
    # narrower with more data
    assert wilson(500, 1000).high - wilson(500, 1000).low < half.high - half.low


def test_mean_interval_from_sums() -> None:
    xs = [0.0, 1.0, 0.5, 0.0, 0.63, 0.0, 0.0, 1.0]
    e = mean_ci(sum(xs), sum(x * x for x in xs), len(xs))
    sd = statistics.stdev(xs)
    assert e.value == pytest.approx(statistics.mean(xs))
    assert e.high - e.value == pytest.approx(1.959963984540054 * sd / math.sqrt(len(xs)))


def test_difference_between_arms_has_the_right_sign_and_width() -> None:
    text = planted_exposition(a=(1000, 100), b=(1000, 150))
    arms = parse_arms(text)
    hr, ndcg = differences(arms["a"], arms["b"])
    assert hr.value == pytest.approx(0.05)
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.15 * 0.85 / 1000)
    assert hr.low == pytest.approx(0.05 - 1.959963984540054 * se)
    assert hr.low > 0  # 10 % vs 15 % on 1,000 each is a real difference
    assert ndcg.value > 0


# --- versions ------------------------------------------------------------------------------------------------

VECS = {f"v{n}": np.eye(6, dtype=np.float32)[n % 6] + 0.1 * n for n in range(12)}


def catalogue() -> InMemoryIndex:
    idx = InMemoryIndex(6)
    idx.upsert([IndexedItem(i, Feed.short_video, False, 0.0, i, v / np.linalg.norm(v)) for i, v in VECS.items()])
    return idx


def models(params: RankingParams | None = None, arm: str = "a") -> OnlineModels:
    weights = {InteractionType(k): v for k, v in DEFAULT_EVENT_WEIGHTS.items()}
    return OnlineModels(UserModel(UserModelParams(event_weights=weights)), params=params or RankingParams(), arm=arm)


def events(n: int) -> list[Interaction]:
    rng = np.random.default_rng(3)
    return [
        Interaction(f"e{k}", f"u{k % 4}", f"v{int(rng.integers(12))}", InteractionType.like, float(k), 1.0)
        for k in range(n)
    ]


def run(
    m: OnlineModels, evs: list[Interaction], batch: int, idx: InMemoryIndex, peers: Sequence[OnlineModels] = ()
) -> list[str]:
    users: dict[str, UserState] = {}
    versions = [m.version]
    for start in range(0, len(evs), batch):
        part = evs[start : start + batch]
        for ev in part:
            users.setdefault(ev.user_id, UserState())
        m.learn_batch(users, [(ev, idx.get([ev.item_id])[ev.item_id]) for ev in part], idx, peers=peers)
        versions.append(m.version)
    return versions


def test_the_version_advances_with_training_and_names_the_configuration() -> None:
    idx = catalogue()
    m = models()
    versions = run(m, events(40), 8, idx)
    arm, config, counter = versions[0].split(":")
    assert (arm, counter) == ("a", "0") and len(config) == 8
    counters = [int(v.split(":")[2]) for v in versions]
    assert counters == [0, 8, 16, 24, 32, 40]  # every applied event trains the shared models
    # a replayed batch applies nothing and trains nothing: the version stays
    users = {f"u{k}": UserState() for k in range(4)}
    again = models()
    evs = events(8)
    pairs = [(ev, idx.get([ev.item_id])[ev.item_id]) for ev in evs]
    again.learn_batch(users, pairs, idx)
    before = again.version
    assert again.learn_batch(users, pairs, idx) == [False] * 8 and again.version == before
    # other parameters, other config id; same parameters, same id
    assert models(RankingParams(mmr_lambda=1.0)).config_id != m.config_id
    assert models().config_id == m.config_id


def test_identical_event_sequences_give_identical_versions_however_batched() -> None:
    idx = catalogue()
    evs = events(64)
    one = models()
    two = models()
    run(one, evs, 8, idx)
    run(two, evs, 5, idx)  # another cut into micro-batches
    assert one.version == two.version == f"a:{one.config_id}:64"
    assert one.ranker.steps == two.ranker.steps


def test_peer_arms_learn_every_event_and_users_are_updated_once() -> None:
    idx = catalogue()
    a = models()
    b = models(RankingParams(mmr_lambda=1.0), arm="b")
    users: dict[str, UserState] = {}
    evs = events(24)
    for ev in evs:
        users.setdefault(ev.user_id, UserState())
    applied = a.learn_batch(users, [(ev, idx.get([ev.item_id])[ev.item_id]) for ev in evs], idx, peers=[b])
    assert all(applied)
    assert a.trained_events == b.trained_events == 24
    assert b.version == f"b:{b.config_id}:24" and b.config_id != a.config_id
    # each user's events applied once (a second application would be refused as a replay)
    assert sum(len(s.recent) for s in users.values()) <= 24
    assert all(s.has_applied(ev.event_id) for ev in evs for s in [users[ev.user_id]])
    # b's co-engagement learned the same pairs as a's
    assert a.signal("co").snapshot() == b.signal("co").snapshot()
    assert a.signal("co").snapshot() != models().signal("co").snapshot()  # and learned something


# --- settings -> arms ----------------------------------------------------------------------------------------


def test_settings_build_one_arm_or_two(tmp_path: Path) -> None:
    off = Settings(data_dir=tmp_path, next_item_model="embedding")
    arms = online_arms_from_settings(off)
    assert list(arms) == ["a"] and arm_split_from_settings(off).share == 0.0
    on = Settings(data_dir=tmp_path, next_item_model="embedding", ab_variant={"mmr_lambda": "1.0"}, ab_share=0.3)
    arms = online_arms_from_settings(on)
    assert list(arms) == ["a", "b"]
    assert arms["b"].params.mmr_lambda == 1.0 and arms["a"].params.mmr_lambda == on.mmr_lambda
    assert arms["a"].config_id != arms["b"].config_id
    assert arm_split_from_settings(on).share == 0.3
    with pytest.raises(ValueError, match="cannot differ between arms"):
        Settings(data_dir=tmp_path, ab_variant={"taste_half_life_s": 10})
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, ab_variant={"mmr_lambda": 2})


# --- the handler path: versions on lists, per-arm online metric ---------------------------------------------


class AxisEncoder:
    """Each title's first word picks an axis: items sharing it are similar, so lists are predictable."""

    name = "axes"
    dim = 4

    def encode(self, inputs: list[str]) -> np.ndarray:
        words = ["cook", "ball", "song", "game"]
        out = np.full((len(inputs), self.dim), 0.01, np.float32)
        for n, text in enumerate(inputs):
            out[n, words.index(text.split()[0])] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def ab_handlers(tmp_path: Path) -> Handlers:
    s = Settings(data_dir=tmp_path, next_item_model="embedding", ab_variant={"mmr_lambda": 1.0}, ab_share=0.5)
    arms = online_arms_from_settings(s)
    return Handlers(
        index=InMemoryIndex(4),
        encoder=AxisEncoder(),
        user_model=arms["a"].user_model,
        ranking=arms["a"].params,
        candidates=10,
        topics={"interactions": "i", "content": "c"},
        models=arms["a"],
        variant=arms["b"],
        split=arm_split_from_settings(s),
    )


def test_lists_carry_their_arms_advancing_version_and_the_metric_is_per_arm(tmp_path: Path) -> None:
    h = ab_handlers(tmp_path)
    words = ["cook", "ball", "song", "game"]
    h.index_content([ContentEvent(item_id=f"i{n}", kind="short_video", title=f"{words[n % 4]} {n}") for n in range(24)])
    user_a = next(u for u in USERS if ArmSplit(0.5).arm(u) == "a")
    user_b = next(u for u in USERS if ArmSplit(0.5).arm(u) == "b")
    seen: dict[str, list[str]] = {user_a: [], user_b: []}

    def batch(tag: str, picks: dict[str, str], kind: str = "like") -> InteractionResult:
        evs = [
            (n, InteractionEvent(event_id=f"{tag}-{u}", user_id=u, item_id=i, type=kind, value=1))
            for n, (u, i) in enumerate(picks.items())
        ]
        out = h.process_interactions(evs, {u: states.get(u) for u in picks})
        states.update(out.states)
        for rec in out.recommendations:
            seen[rec.user_id].append(rec.model_version)
            last[rec.user_id] = [i.item_id for i in rec.items]
        return out

    states: dict[str, dict[str, Any] | None] = {}
    last: dict[str, list[str]] = {}
    first = batch("b1", {user_a: "i0", user_b: "i1"})
    assert first.online == {}  # nobody had a list yet
    assert first.unscored == {("a", Feed.short_video): 1, ("b", Feed.short_video): 1}
    # each picks the item their list shows third (a hit at rank 3) ... or a miss for b: an item not in it
    pick_a = last[user_a][2]
    miss_b = next(f"i{n}" for n in range(24) if f"i{n}" not in last[user_b] and f"i{n}" != "i1")
    second = batch("b2", {user_a: pick_a, user_b: miss_b})
    ta, tb = second.online[("a", Feed.short_video)], second.online[("b", Feed.short_video)]
    assert (ta.interactions, ta.hits, ta.ndcg) == (1, 1, pytest.approx(0.5))
    assert (tb.interactions, tb.hits, tb.ndcg) == (1, 0, 0.0)
    # a skip of a listed item is not scored
    third = batch("b3", {user_a: last[user_a][0]}, kind="skip")
    assert third.online == {} and third.unscored == {}
    # versions: own arm, own config, advancing with the events both arms learned
    for user, arm in ((user_a, "a"), (user_b, "b")):
        parts = [v.split(":") for v in seen[user]]
        assert {p[0] for p in parts} == {arm}
        assert {p[1] for p in parts} == {h.arms[arm].config_id}
        assert [int(p[2]) for p in parts] == sorted(int(p[2]) for p in parts)
    assert [int(v.split(":")[2]) for v in seen[user_a]] == [2, 4, 5]
    assert h.arms["a"].config_id != h.arms["b"].config_id


# --- the report --------------------------------------------------------------------------------------------------


def planted_exposition(a: tuple[int, int], b: tuple[int, int] | None) -> str:
    """A worker's online series: (interactions, hits) per arm, every hit at rank 1, split across two feeds."""
    reg = CollectorRegistry()
    names = ("interactions", "hits", "ndcg", "ndcg_squares", "unscored")
    counters = {n: Counter(f"livelens_online_{n}_total", n, ["arm", "feed"], registry=reg) for n in names}
    version = Gauge("livelens_model_version", "v", ["arm"], registry=reg)
    info = Info("livelens_arm", "i", ["arm"], registry=reg)
    for arm, counts in (("a", a), ("b", b)):
        if counts is None:
            continue
        n, hits = counts
        for feed, (n_feed, hits_feed) in (
            ("short_video", (n * 3 // 4, hits * 3 // 4)),
            ("live", (n - n * 3 // 4, hits - hits * 3 // 4)),
        ):
            counters["interactions"].labels(arm, feed).inc(n_feed)
            counters["hits"].labels(arm, feed).inc(hits_feed)
            counters["ndcg"].labels(arm, feed).inc(hits_feed)
            counters["ndcg_squares"].labels(arm, feed).inc(hits_feed)
            counters["unscored"].labels(arm, feed).inc(1)
        version.labels(arm).set(1234)
        info.labels(arm).info({"config": f"cfg{arm}0000"})
    return generate_latest(reg).decode()


@pytest.fixture()
def metrics_server() -> Iterator[tuple[str, list[str]]]:
    body: list[str] = [""]

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", body
    finally:
        server.shutdown()
        server.server_close()


def test_report_prints_each_arm_and_the_difference(metrics_server: tuple[str, list[str]]) -> None:
    url, body = metrics_server
    body[0] = planted_exposition(a=(400, 40), b=(400, 80))
    arms = parse_arms(body[0])
    assert (arms["a"].tally.interactions, arms["a"].tally.hits, arms["a"].unscored) == (400, 40, 2)
    assert parse_arms(body[0], feed="live")["b"].tally.interactions == 100
    result = CliRunner().invoke(cli, ["ab", "report", "--url", url], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    assert set(lines) == {"a", "b", "b - a"}
    assert "0.1000 [" in lines["a"] and "0.2000 [" in lines["b"] and "cfga0000" in lines["a"]
    assert "+0.1000 [+0.0" in lines["b - a"]  # 10 % vs 20 % of 400: the interval excludes 0


def test_report_with_one_arm_and_without_a_worker(metrics_server: tuple[str, list[str]]) -> None:
    url, body = metrics_server
    body[0] = planted_exposition(a=(10, 1), b=None)
    result = CliRunner().invoke(cli, ["ab", "report", "--url", url], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "A/B is off" in result.output and "b - a" not in result.output
    body[0] = "# nothing here\n"
    result = CliRunner().invoke(cli, ["ab", "report", "--url", url])
    assert result.exit_code == 2 and "no online metric" in result.output
    result = CliRunner().invoke(cli, ["ab", "report", "--url", "http://127.0.0.1:1/metrics"])
    assert result.exit_code == 2 and "no worker at http://127.0.0.1:1/metrics" in result.output
