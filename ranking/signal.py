"""The one contract every online ranking signal implements, and what it reads and writes.

Why one contract: the worker, the offline evaluation, the trainer and the tests drive every signal
the same way (learn from a batch of applied interactions, propose candidates for a batch of users,
fill feature columns for a users x candidates matrix, snapshot, restore, forget an item, stay within
a memory bound), so a new signal is one class, checked by ``tests/unit/test_signal_contract.py``
without writing a test of its own, and the learned ranker (``ranking.ranker``) sees its columns.

Snapshots are versioned, self-describing bytes (``encode_snapshot``): a JSON header and numpy arrays
in one ``.npz``, loaded without pickle, because the trainer publishes them to other processes.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, is_, is_not
from typing import Any, Protocol

import numpy as np

from ranking.domain import Feed, InteractionType
from ranking.index import Index, IndexedItem

SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class Observation:
    """One applied (deduplicated) interaction, as the shared signals learn it."""

    event_id: str
    user_id: str
    item_id: str
    type: InteractionType
    ts: float
    weight: float  # the user model's weight of this event (negative for a skip)
    feed: Feed
    context: tuple[str, ...]  # the user's positive items before this event, oldest first
    vector: np.ndarray | None = None  # the item's content vector


@dataclass
class UserContext:
    """What ranking reads of one user: their taste vector and recent items."""

    user_id: str
    positives: tuple[str, ...]  # recent positive items, oldest first
    seen: set[str]  # never recommended again
    query: np.ndarray | None  # unit taste vector (None: no taste yet)
    recent: tuple[tuple[str, InteractionType, float], ...] = ()  # (item, type, weight), oldest first
    follows: Mapping[str, float] = field(default_factory=dict)  # followed creator -> when, oldest first
    # creator -> [gifts, comments, long watches, weight, last ts] of the user's strong engagement
    creators: Mapping[str, Sequence[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Nowhere:
    """Stands in for an unknown item in ``servable_mask``: in no feed, never live."""

    feed: None = None
    is_live: bool = False


_NOWHERE = _Nowhere()


@dataclass
class RankRequest:
    """One feed's ranking for a batch of users at one moment."""

    feed: Feed
    users: list[UserContext]
    now: float
    catalogue: Index
    _items: dict[str, IndexedItem] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)  # what signals derive once per request (e.g. reasons)

    def items(self, ids: Iterable[str]) -> dict[str, IndexedItem]:
        """Catalogue look-ups, cached for the request (each item is fetched once per batch)."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._items]
        if missing:
            self._items.update(self.catalogue.get(missing))
        return self._items

    def item(self, item_id: str) -> IndexedItem | None:
        """One catalogue look-up, cached as ``items`` caches (a batch explains ~640 items one by one)."""
        found = self._items.get(item_id)
        return found if found is not None else self.items((item_id,)).get(item_id)

    def servable(self, item_id: str) -> bool:
        """In this feed, and for the live feed still live: an ended stream is never returned."""
        it = self._items.get(item_id)
        return it is not None and it.feed is self.feed and (self.feed is not Feed.live or it.is_live)

    def servable_mask(self, item_ids: Sequence[str]) -> np.ndarray:
        """``servable`` of each id, as a bool array (the look-ups and tests in C, no Python per id)."""
        found = list(map(self._items.get, item_ids))
        n = len(found)
        known = np.fromiter(map(is_not, found, repeat(None)), bool, count=n)
        if not known.all():  # an id the catalogue does not have: never servable
            found = [it if it is not None else _NOWHERE for it in found]
        mask = known & np.fromiter(map(is_, map(attrgetter("feed"), found), repeat(self.feed)), bool, count=n)
        if self.feed is Feed.live:
            mask &= np.fromiter(map(attrgetter("is_live"), found), bool, count=n)
        return mask


@dataclass
class Candidates:
    """The users x candidates matrix, flattened: row r is candidate ``items[r]`` of user ``user[r]``."""

    user: np.ndarray  # int64 per row
    items: list[str]
    offsets: np.ndarray  # user n's rows are offsets[n]:offsets[n+1]
    # float32 (rows, dim): each candidate's content vector; None when given as ``item_vectors`` and
    # ``vector_rows`` (a batch's rows x dim copy is ~100 MB: read it by block or by rows instead)
    vectors: np.ndarray | None
    created_at: np.ndarray  # float64 per row
    sources: np.ndarray  # bool (rows, n_sources): which signals proposed the row
    item_vectors: np.ndarray | None = None  # float32 (distinct items, dim)
    vector_rows: np.ndarray | None = None  # int64 per row: its item's row in ``item_vectors``
    distinct: list[str] | None = None  # the item of each row of ``item_vectors``
    _codes: tuple[list[str], np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        vectors = self.vectors if self.vectors is not None else self.item_vectors
        return int(vectors.shape[1]) if vectors is not None else 0

    def block(self, start: int, stop: int) -> np.ndarray:
        """Content vectors of rows ``start:stop`` (one user's rows: a small, contiguous copy)."""
        if self.vectors is not None:
            return self.vectors[start:stop]
        assert self.item_vectors is not None and self.vector_rows is not None
        return self.item_vectors[self.vector_rows[start:stop]]

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """Content vectors of the given rows."""
        if self.vectors is not None:
            return self.vectors[rows]
        assert self.item_vectors is not None and self.vector_rows is not None
        return self.item_vectors[self.vector_rows[rows]]

    def rows_of(self, n: int) -> range:
        return range(int(self.offsets[n]), int(self.offsets[n + 1]))

    def item_codes(self) -> tuple[list[str], np.ndarray]:
        """(the distinct items, each row's position among them): a per-item column is then worked out
        once per distinct item and gathered (``column[codes]``), not looked up per row (a batch has
        ~20,000 rows of ~5,000 items)."""
        if self._codes is None:
            if self.distinct is not None and self.vector_rows is not None:
                self._codes = self.distinct, self.vector_rows
            else:
                distinct = list(dict.fromkeys(self.items))
                at = dict(zip(distinct, range(len(distinct)), strict=True))
                self._codes = distinct, looked_up(at, self.items, np.int64)
        return self._codes


class SignalView(Protocol):
    """One signal read once for one request: a consistent view for candidates, features and reasons."""

    def candidates(self, limit: int) -> list[list[str]]:
        """Up to ``limit`` proposals per user, best first (possibly seen items; the caller drops them)."""
        ...

    def features(self, cands: Candidates) -> np.ndarray:
        """float32 (rows, len(columns)): this signal's columns for every candidate row."""
        ...

    def reason(self, n: int, item_id: str) -> str | None:
        """Why user ``n`` gets ``item_id`` when this signal contributed most (None: no text of its own)."""
        ...


class Signal(Protocol):
    name: str
    columns: tuple[str, ...]  # feature column names, without the signal's prefix
    max_bytes: int

    def learn(self, events: Sequence[Observation]) -> None: ...
    def read(self, request: RankRequest) -> SignalView: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...
    def forget(self, item_id: str) -> None: ...
    def memory_bytes(self) -> int: ...


# --- snapshots -------------------------------------------------------------------------------------
class SnapshotError(ValueError):
    pass


def encode_snapshot(name: str, version: int, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """Bytes of a snapshot: the header (signal name, its state version, the format) and its arrays."""
    header = {"format": SNAPSHOT_FORMAT, "signal": name, "version": version, "meta": meta}
    buf = io.BytesIO()
    np.savez_compressed(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return buf.getvalue()


def decode_snapshot(data: bytes, name: str, version: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a snapshot written by ``encode_snapshot`` for this signal and version."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        header = json.loads(arrays.pop("__header__").tobytes())
    except (ValueError, KeyError, OSError) as e:
        raise SnapshotError(f"not a LiveLens snapshot: {e}") from e
    if header.get("format") != SNAPSHOT_FORMAT or header.get("signal") != name or header.get("version") != version:
        raise SnapshotError(
            f"snapshot of {header.get('signal')!r} v{header.get('version')} cannot restore {name!r} v{version}"
        )
    return header["meta"], arrays


def str_array(values: Iterable[str]) -> np.ndarray:
    """Strings as a numpy unicode array (``allow_pickle=False`` safe)."""
    out = np.array(list(values), dtype=np.str_)
    return out if out.size else np.zeros(0, dtype="<U1")


# --- deduplication ---------------------------------------------------------------------------------
class EventWindow:
    """The ids of the last ``size`` applied events: a redelivered event is learned once (at-least-once
    delivery), in bounded memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._id_chars = 0  # total length of the ids held: ``memory_bytes`` without a pass over them

    def admit(self, events: Sequence[Observation]) -> list[Observation]:
        fresh = []
        for ev in events:
            if ev.event_id in self._ids:
                continue
            self._ids[ev.event_id] = None
            self._id_chars += len(ev.event_id)
            fresh.append(ev)
            if len(self._ids) > self.size:
                self._id_chars -= len(self._ids.popitem(last=False)[0])
        return fresh

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def load(self, ids: Iterable[str]) -> None:
        self._ids = OrderedDict.fromkeys(ids)
        self._id_chars = sum(map(len, self._ids))

    def memory_bytes(self) -> int:
        """64 bytes per id plus its length (read after every learned batch: kept, not summed)."""
        return 64 * len(self._ids) + self._id_chars


def looked_up(table: Mapping[str, Any], keys: Sequence[str], dtype: Any, default: Any = None) -> np.ndarray:
    """``table[key]`` for every key as one array (``default`` for a missing key, when given): the
    look-ups run in C through ``map``, not as a Python loop per key (a batch has ~15,000 candidates)."""
    values = map(table.__getitem__, keys) if default is None else map(table.get, keys, repeat(default))
    return np.fromiter(values, dtype, count=len(keys))


def rank_feature(order: Sequence[str], items: Sequence[str]) -> np.ndarray:
    """1 / (1 + position) of each item in ``order`` (0 when absent): a scale-free rank column."""
    pos = dict(zip(order, range(len(order)), strict=True))
    at = looked_up(pos, items, np.float64, default=-1)
    out = np.zeros(len(items), np.float32)
    found = at >= 0
    out[found] = 1.0 / (1.0 + at[found])
    return out
