"""``livelens ab report``: the online metric per A/B arm, read from a worker's ``/metrics``, with 95 % intervals.

Why from ``/metrics`` and not from Prometheus: the counters are cumulative since the worker started, so one
scrape is the whole experiment on that worker, and the command works wherever a worker runs (no Prometheus
needed). The statistics are ``ranking.ab``'s (Wilson for HR@K, normal for the NDCG@K mean and the
differences).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ranking.ab import (
    Estimate,
    Tally,
    difference,
    mean_ci,
    mean_var_n,
    proportion_var_n,
    wilson,
)

SERIES = {
    "livelens_online_interactions": "interactions",
    "livelens_online_hits": "hits",
    "livelens_online_ndcg": "ndcg",
    "livelens_online_ndcg_squares": "ndcg_squares",
}


class WorkerUnreachable(Exception):
    """The worker's /metrics could not be read (nothing listening, HTTP error, not a metrics page)."""


@dataclass
class ArmReport:
    arm: str
    tally: Tally = field(default_factory=Tally)
    unscored: int = 0
    config: str = "?"
    events_learned: int | None = None

    @property
    def hit_rate(self) -> Estimate:
        return wilson(self.tally.hits, self.tally.interactions)

    @property
    def ndcg(self) -> Estimate:
        return mean_ci(self.tally.ndcg, self.tally.ndcg_squares, self.tally.interactions)


def fetch_metrics(url: str, timeout: float = 10.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        raise WorkerUnreachable(f"{url} answered HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkerUnreachable(f"no worker at {url} ({reason})") from exc


def parse_arms(text: str, feed: str | None = None) -> dict[str, ArmReport]:
    """Per arm, the online counters summed over feeds (or of one ``feed``), its config id and version."""
    arms: dict[str, ArmReport] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise WorkerUnreachable(f"not a Prometheus metrics page: {exc}") from exc
    for family in families:
        for sample in family.samples:
            arm = sample.labels.get("arm")
            if arm is None:
                continue
            report = arms.setdefault(arm, ArmReport(arm))
            if sample.name == "livelens_arm_info":
                report.config = sample.labels.get("config", "?")
            elif sample.name == "livelens_model_version":
                report.events_learned = round(sample.value)
            elif feed is not None and sample.labels.get("feed") != feed:
                continue
            elif sample.name == "livelens_online_unscored_total":
                report.unscored += round(sample.value)
            elif sample.name.endswith("_total") and sample.name[: -len("_total")] in SERIES:
                attr = SERIES[sample.name[: -len("_total")]]
                value = getattr(report.tally, attr) + (
                    round(sample.value) if attr in ("interactions", "hits") else sample.value
                )
                setattr(report.tally, attr, value)
    return dict(sorted(arms.items()))


def differences(a: ArmReport, b: ArmReport) -> tuple[Estimate, Estimate]:
    """b - a for HR@K and for the NDCG@K mean, each with a 95 % normal interval (unpooled variances)."""
    ta, tb = a.tally, b.tally
    hr = difference(
        Estimate(ta.hits / ta.interactions if ta.interactions else math.nan, 0, 0),
        proportion_var_n(ta.hits, ta.interactions),
        Estimate(tb.hits / tb.interactions if tb.interactions else math.nan, 0, 0),
        proportion_var_n(tb.hits, tb.interactions),
    )
    ndcg = difference(
        a.ndcg,
        mean_var_n(ta.ndcg, ta.ndcg_squares, ta.interactions),
        b.ndcg,
        mean_var_n(tb.ndcg, tb.ndcg_squares, tb.interactions),
    )
    return hr, ndcg


def fmt(e: Estimate, signed: bool = False) -> str:
    if math.isnan(e.value):
        return "n/a"
    value = f"{e.value:+.4f}" if signed else f"{e.value:.4f}"
    if math.isnan(e.low) or math.isinf(e.low):
        return f"{value} [n/a]"
    return f"{value} [{e.low:+.4f}, {e.high:+.4f}]" if signed else f"{value} [{e.low:.4f}, {e.high:.4f}]"
