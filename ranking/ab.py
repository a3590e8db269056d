"""A/B arms, the online metric and its confidence intervals: pure logic the worker and ``livelens ab report`` share.

Why here (the core): which arm a user is in, whether an interaction hit the list it followed, and how sure
a difference between arms is are plain functions of ids, lists and counts. Keeping them free of Kafka and
Prometheus makes them testable on planted sequences, and the worker only counts what they return.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ranking.domain import Feed

ARMS = ("a", "b")
# two-sided 95 % normal quantile
Z95 = 1.959963984540054


@dataclass(frozen=True)
class ArmSplit:
    """Users -> arms by a stable hash: crc32 of the user id, never Python's salted ``hash``, so every worker,
    restart and replay puts a user in the same arm. ``share`` of the hash space is arm "b"; 0 = no A/B."""

    share: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must be in [0, 1], got {self.share}")

    def arm(self, user_id: str) -> str:
        if self.share <= 0.0:
            return "a"
        return "b" if zlib.crc32(user_id.encode()) < self.share * 2**32 else "a"


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of parameter dataclasses, dicts, enums, paths and numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(_canonical(k)): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_canonical(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, frozenset | set) else items
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def config_id(*parts: Any) -> str:
    """8 hex digits naming a model configuration: the same parameters give the same id in every process."""
    text = json.dumps([_canonical(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def ndcg_at(position: int) -> float:
    """NDCG@K of one relevant item at 0-based ``position`` of the list (ideal DCG is 1)."""
    return 1.0 / math.log2(position + 2)


@dataclass(frozen=True)
class Outcome:
    """One positive interaction scored against the list its user last got for that feed."""

    arm: str
    feed: Feed
    hit: bool
    ndcg: float
    k: int


class LastLists:
    """The last list emitted to each (user, feed), with the arm that ranked it, bounded as an LRU.

    Why in worker memory and not in the user's table value: every interaction rewrites the user's state to
    the changelog, and two lists of ids per user would add a few hundred bytes to each of those writes for a
    metric that is an estimate anyway. What is lost on a restart or a rebalance (and for users evicted past
    ``max_lists``): the next positive interaction of those users is not scored (it is counted as unscored,
    never as a miss), so the metric loses samples, not accuracy.
    """

    def __init__(self, max_lists: int = 100_000) -> None:
        if max_lists < 1:
            raise ValueError("max_lists must be >= 1")
        self.max_lists = max_lists
        self._lists: OrderedDict[tuple[str, Feed], tuple[str, tuple[str, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lists)

    def record(self, user_id: str, feed: Feed, arm: str, items: Sequence[str]) -> None:
        key = (user_id, feed)
        self._lists[key] = (arm, tuple(items))
        self._lists.move_to_end(key)
        if len(self._lists) > self.max_lists:
            self._lists.popitem(last=False)

    def score(self, user_id: str, feed: Feed, item_id: str) -> Outcome | None:
        """Hit and NDCG@K (K = that list's length) of ``item_id`` in the user's last list; None without one."""
        last = self._lists.get((user_id, feed))
        if last is None:
            return None
        arm, items = last
        try:
            position = items.index(item_id)
        except ValueError:
            return Outcome(arm, feed, False, 0.0, len(items))
        return Outcome(arm, feed, True, ndcg_at(position), len(items))


@dataclass
class Tally:
    """Counts behind the online metric for one (arm, feed): scored interactions, hits, NDCG sum and sum of squares."""

    interactions: int = 0
    hits: int = 0
    ndcg: float = 0.0
    ndcg_squares: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.interactions += 1
        self.hits += outcome.hit
        self.ndcg += outcome.ndcg
        self.ndcg_squares += outcome.ndcg * outcome.ndcg

    def __iadd__(self, other: Tally) -> Tally:
        self.interactions += other.interactions
        self.hits += other.hits
        self.ndcg += other.ndcg
        self.ndcg_squares += other.ndcg_squares
        return self


# --- confidence intervals --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def wilson(hits: int, n: int, z: float = Z95) -> Estimate:
    """A proportion with its Wilson score interval: honest near 0 (online hit rates are small) and for small n."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan)
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(total: float, squares: float, n: int, z: float = Z95) -> Estimate:
    """A mean from its sum and sum of squares, with a normal interval (sample variance, n - 1)."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan)
    mean = total / n
    var = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else math.inf
    half = z * math.sqrt(var / n)
    return Estimate(mean, mean - half, mean + half)


def difference(a: Estimate, a_var_n: float, b: Estimate, b_var_n: float, z: float = Z95) -> Estimate:
    """b - a with a normal interval; ``*_var_n`` is each estimate's variance of the mean (var / n)."""
    diff = b.value - a.value
    half = z * math.sqrt(a_var_n + b_var_n)
    return Estimate(diff, diff - half, diff + half)


def proportion_var_n(hits: int, n: int) -> float:
    """Variance of a sample proportion (unpooled), for ``difference``."""
    if n <= 0:
        return math.nan
    p = hits / n
    return p * (1 - p) / n


def mean_var_n(total: float, squares: float, n: int) -> float:
    """Variance of a sample mean from its sum and sum of squares, for ``difference``."""
    if n <= 1:
        return math.nan if n <= 0 else math.inf
    mean = total / n
    return max(0.0, (squares - n * mean * mean) / (n - 1)) / n
