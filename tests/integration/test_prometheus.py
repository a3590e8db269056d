"""The shipped Prometheus config, alert rules and Grafana dashboard against a real Prometheus and a real worker.

Uses Debian's ``prometheus`` package (``/usr/bin/prometheus`` and ``promtool``; ``make prometheus`` installs it).
Prometheus scrapes the test worker every second with a config generated from ``infra/prometheus/prometheus.yml``
and evaluates ``infra/prometheus/alerts.yml``. After events flow through the worker, every PromQL expression of
the dashboard and of the alert rules must return data through ``/api/v1/query``:

- Grafana's ``$__rate_interval`` becomes ``30s`` (at least 4 scrapes of 1 s plus margin);
- the worker serves two A/B arms (this module's ``stack``), so the per-arm online metric, the version gauges and
  the dashboard's A/B panels are exercised with both arms;
- an alert expression is a threshold comparison that returns nothing while the alert does not fire, so the test
  evaluates the operands instead: it splits the expression at top-level ``and``/``or``/``unless`` and comparison
  operators, drops constants (``1000``, ``vector(0)``) and checks that each remaining operand returns data.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.ports import free_port
from streams.replay import make_producer
from streams.schemas import ContentEvent, InteractionEvent, LiveStatusEvent
from tests.conftest import base_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_YML = ROOT / "infra" / "prometheus" / "prometheus.yml"
ALERTS_YML = ROOT / "infra" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "livelens.json"
RATE_INTERVAL = "30s"

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _require_prometheus() -> None:
    missing = [p for p in (PROMETHEUS, PROMTOOL) if not Path(p).is_file()]
    if missing:
        pytest.skip(f"Prometheus not installed ({', '.join(missing)} missing): `make prometheus` installs it")


# --- PromQL expressions -------------------------------------------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows included."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL)))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


_SET_OPS = re.compile(r"\b(and|or|unless)\b")
_MATCHING = re.compile(r"^\s*(on|ignoring)\s*\([^)]*\)\s*((group_left|group_right)\s*(\([^)]*\))?)?")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_CONSTANT = re.compile(r"^\s*(vector\s*\(\s*)?[-+]?[0-9.]+(e[-+]?[0-9]+)?\s*\)?\s*$", re.IGNORECASE)


def _top_level_split(expr: str) -> list[str]:
    """Split at binary set and comparison operators outside (), [], {} and string literals."""
    parts: list[str] = []
    depth, start, i, quote = 0, 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            match = _SET_OPS.match(expr, i)
            if match and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
                parts.append(expr[start:i])
                i = start = match.end()
                continue
            op = next((op for op in _COMPARISONS if expr.startswith(op, i)), None)
            if op is not None:
                parts.append(expr[start:i])
                i = start = i + len(op)
                continue
        i += 1
    parts.append(expr[start:])
    return parts


def _wrapped_in_parens(expr: str) -> bool:
    if not (expr.startswith("(") and expr.endswith(")")):
        return False
    depth = 0
    for pos, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and pos < len(expr) - 1:
            return False
    return True


def data_operands(expr: str) -> list[str]:
    """The sub-expressions of an alert expression that must return data even when the alert is not firing."""
    out: list[str] = []
    for part in _top_level_split(expr):
        part = _MATCHING.sub("", part).strip()
        if not part or _CONSTANT.match(part):
            continue
        if _wrapped_in_parens(part):
            inner = part[1:-1].strip()
            operands = data_operands(inner)
            out.extend(operands if len(_top_level_split(inner)) > 1 else [inner])
        else:
            out.append(part)
    return out


def test_operand_splitting_of_alert_expressions() -> None:
    expr = 'sum(increase(x_total{type=~"a|b"}[10m])) > 0 and on () (sum(increase(y_total[10m])) or vector(0)) == 0'
    assert data_operands(expr) == ['sum(increase(x_total{type=~"a|b"}[10m]))', "sum(increase(y_total[10m]))"]
    assert data_operands('up{job=~"livelens-.*"} == 0') == ['up{job=~"livelens-.*"}']
    assert data_operands("histogram_quantile(0.99, sum by (le) (rate(f_bucket[5m]))) > 0.05") == [
        "histogram_quantile(0.99, sum by (le) (rate(f_bucket[5m])))"
    ]


# --- Prometheus process ---------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, work: Path, worker_target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        self.config = work / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(self.test_config(worker_target), sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "prometheus.log"

    def test_config(self, worker_target: str) -> dict[str, Any]:
        """The repo's config with 1 s scrapes, the repo's rules, and the worker as the livelens job's target."""
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        config["global"].update({"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"})
        config["rule_files"] = [str((PROMETHEUS_YML.parent / f).resolve()) for f in config["rule_files"]]
        jobs = []
        for job in config["scrape_configs"]:
            if job["job_name"] == "livelens-ranking":  # the ranking role: every agent runs in the test worker
                job.pop("dns_sd_configs")
                job["static_configs"] = [{"targets": [worker_target]}]
                jobs.append(job)
            elif job["job_name"] == "prometheus":
                job["static_configs"] = [{"targets": [f"127.0.0.1:{self.port}"]}]
                jobs.append(job)
        assert any(j["job_name"] == "livelens-ranking" for j in jobs), "livelens-ranking job missing from config"
        config["scrape_configs"] = jobs
        return config

    def start(self, timeout: float = 20.0) -> Prometheus:
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This module's worker serves two arms (b: relevance only, no MMR); the Driver's users pu1 (arm a) and
    pu2, pu3 (arm b, crc32 below half) give both arms scored interactions."""
    from streams.local import LocalStack

    root = tmp_path_factory.mktemp("stack")
    # with the trainer (the default) the version a worker serves is the snapshot's: one every 2 s here
    settings = base_settings(root, ab_variant={"mmr_lambda": 1.0}, ab_share=0.5, snapshot_interval_s=2.0)
    with LocalStack(settings, root) as local:
        yield local


@pytest.fixture(scope="module")
def prometheus(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    _require_prometheus()
    s = stack.settings
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), f"{s.web_host}:{s.web_port}")
    try:
        yield prom.start()
    finally:
        prom.stop()


# --- tests ----------------------------------------------------------------------------------------------


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    _require_prometheus()
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS_YML)]):
        done = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_ready_endpoint_reports_each_dependency(stack: Any) -> None:
    # 503 for a moment is right when the trainer's first snapshot is being restored: poll, bounded
    deadline = time.monotonic() + 30
    while True:
        try:
            body = stack.worker.get("/ready")  # urllib raises on a 503
            break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.2)
    assert body["status"] == "ready", body
    assert stack.settings.trainer  # the default: the worker serves the trainer's models (none yet: ready at once)
    ok = {name for name, check in body["checks"].items() if check["ok"]}
    assert ok == {"models", "broker", "milvus", "trainer_models"}, body
    assert stack.worker.get("/health")["status"] == "ok"


TITLES = {
    "pv_cook": ("short_video", "Homemade dumplings recipe with pork and cabbage"),
    "pv_ball": ("short_video", "Football highlights: last minute winning goal"),
    "pv_bake": ("short_video", "Baking fluffy bread rolls at home"),
    "pl_cook": ("live_stream", "Live cooking show: frying noodles with the chef"),
    "pl_ball": ("live_stream", "Live football match commentary"),
    "pv_cake": ("short_video", "Chocolate cake in ten minutes"),
}


class Driver:
    """Publishes events the way producers do, and waits for the worker to have processed them."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.s = stack.settings
        self.producer = make_producer(self.s)
        self.items = self.live_events = self.interactions = self.dead = 0
        self.recommendations = 0.0

    def send(self, topic: str, key: str, value: str | bytes) -> None:
        self.producer.produce(topic, key=key.encode(), value=value)

    def content(self, *item_ids: str) -> None:
        for item_id in item_ids:
            kind, title = TITLES[item_id]
            self.send(
                self.s.topic_content, item_id, ContentEvent(item_id=item_id, kind=kind, title=title).model_dump_json()
            )
        self.producer.flush(30)
        self.items += len(item_ids)
        self.stack.worker.wait_for("livelens_items_indexed", self.items, timeout=60)

    def live(self, item_id: str, status: str) -> None:
        self.send(self.s.topic_live_status, item_id, LiveStatusEvent(item_id=item_id, status=status).model_dump_json())
        self.live_events += 1

    def malformed(self) -> None:
        self.send(self.s.topic_interactions, "mallory", b'{"event_id": "prom-bad", "user_id": ')
        self.dead += 1

    def interact(self, rounds: int, tag: str) -> None:
        for round_ in range(rounds):
            for user, item, kind in (
                ("pu1", "pv_cook", "like"),
                ("pu2", "pl_cook", "gift"),
                ("pu3", "pv_ball", "view"),
            ):
                ev = InteractionEvent(event_id=f"{tag}-{round_}-{user}", user_id=user, item_id=item, type=kind, value=5)
                self.send(self.s.topic_interactions, user, ev.model_dump_json())
                self.interactions += 1
            self.producer.flush(30)
            time.sleep(0.5)

    def wait_processed(self) -> None:
        """Every valid event consumed, every dead letter counted, and new recommendations out.

        A micro-batch refreshes a user's list once however many of their events it holds, so the number of
        recommendations depends on batching: wait for at least one more than before.
        """
        self.producer.flush(30)
        worker = self.stack.worker
        worker.wait_for("livelens_dead_letter", self.dead, timeout=30)
        consumed = self.items + self.live_events + self.interactions  # valid events, all input topics
        worker.wait_for("livelens_events_consumed", consumed, timeout=30)
        self.recommendations = worker.wait_for("livelens_recommendations", self.recommendations + 1, timeout=30)[
            "livelens_recommendations"
        ]


def _has_number(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


def test_every_dashboard_and_alert_expression_returns_data(stack: Any, prometheus: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = [rule for group in yaml.safe_load(ALERTS_YML.read_text())["groups"] for rule in group["rules"]]
    panels = dashboard_exprs(dashboard)
    operands = [(f"alert {r['alert']}", operand) for r in rules for operand in data_operands(r["expr"])]
    assert len(panels) >= 15 and len(operands) >= len(rules), (panels, operands)

    # Round 1 creates every series: content of both kinds (live streams start live), one stream ending,
    # interactions on both feeds, a malformed interaction for the dead-letter counter.
    drive = Driver(stack)
    drive.content("pv_cook", "pv_ball", "pv_bake", "pl_cook", "pl_ball")
    drive.live("pl_ball", "ended")  # indexed as live: ends; pl_cook stays live
    drive.malformed()
    drive.interact(2, "prom1")
    drive.wait_processed()
    # Round 2 once Prometheus has scraped those series, so rate() over them is not only defined but non-zero.
    deadline = time.monotonic() + 20
    while not prometheus.query("livelens_recommendations_total") or not prometheus.query("livelens_candidates_count"):
        assert time.monotonic() < deadline, "Prometheus did not scrape the worker's series"
        time.sleep(0.5)
    time.sleep(1.5)
    drive.content("pv_cake")
    drive.live("pl_ball", "live")  # goes live again and ends
    drive.live("pl_ball", "ended")
    drive.malformed()
    drive.interact(2, "prom2")
    drive.wait_processed()

    # Each panel expression must return a number (NaN only where another series of it has one); each alert
    # operand must return data. Lag and table gauges come from the worker's 5 s timer: poll, bounded.
    deadline = time.monotonic() + 45
    missing = [*panels, *operands]
    while True:
        missing = [
            (where, expr)
            for where, expr in missing
            if not (_has_number if where in dict(panels) else bool)(prometheus.query(expr))
        ]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not missing, "expressions without data:\n" + "\n".join(f"  {w}: {e}" for w, e in missing)

    # Prometheus evaluated every alert rule without error.
    loaded = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded]

    # Spot checks: rates over 1 s scrapes are non-zero, the malformed interactions are counted, a stream is
    # live, freshness is a real duration, and the worker catches up (lag back to 0 at the next timer tick).
    value = lambda expr: float(prometheus.query(expr)[0]["value"][1])  # noqa: E731
    assert value(f"sum(rate(livelens_recommendations_total[{RATE_INTERVAL}]))") > 0
    assert value('sum(livelens_dead_letter_total{reason="invalid_json"})') == drive.dead
    assert value("sum(livelens_live_streams)") == 1  # pl_cook
    assert (
        0
        < value(f"histogram_quantile(0.99, sum by (le) (rate(livelens_freshness_seconds_bucket[{RATE_INTERVAL}])))")
        < 30
    )
    deadline = time.monotonic() + 15
    while value("max(livelens_consumer_lag)") != 0:
        assert time.monotonic() < deadline, prometheus.query("livelens_consumer_lag")
        time.sleep(1.0)

    # A/B: both arms scored interactions (round 2 follows the lists of round 1), and both arms' shared
    # models learned every interaction, so their versions agree with the count of interactions sent.
    per_arm = lambda expr: {r["metric"]["arm"]: float(r["value"][1]) for r in prometheus.query(expr)}  # noqa: E731
    assert set(per_arm("sum by (arm) (livelens_online_interactions_total)")) == {"a", "b"}
    assert all(v > 0 for v in per_arm("sum by (arm) (livelens_online_interactions_total)").values())
    hr_panel = next(e for title, e in panels if title.startswith("A/B: online HR@K") and "hits" in e)
    hr = per_arm(hr_panel)  # a series per arm (NaN where an arm had nothing scored in the last 30 s)
    assert set(hr) == {"a", "b"} and all(math.isnan(v) or 0 <= v <= 1 for v in hr.values()), hr
    deadline = time.monotonic() + 30  # the trainer's next snapshot, then a scrape
    while per_arm("max by (arm) (livelens_model_version)") != {"a": drive.interactions, "b": drive.interactions}:
        assert time.monotonic() < deadline, per_arm("max by (arm) (livelens_model_version)")
        time.sleep(1.0)
    configs = {r["metric"]["arm"]: r["metric"]["config"] for r in prometheus.query("livelens_arm_info")}
    assert set(configs) == {"a", "b"} and configs["a"] != configs["b"]
