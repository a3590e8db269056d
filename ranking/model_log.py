"""What the trainer learns from and what it publishes, as plain data and compact bytes (no Kafka here).

Why: the shared models (co-engagement, next item, trending, live, the ranker, ...) train once, in the
trainer, instead of in every ranking worker. Workers log one ``TrainingRecord`` per applied event (the
event's ``Observation`` and, when the event was labelled, the ``Example`` each A/B arm ranked for it);
the trainer feeds them to ``OnlineModels.learn_shared`` and publishes versioned snapshots of every
model, cut into ``ModelChunk`` s that fit a Kafka message; workers assemble only complete same-version
sets (``SnapshotAssembler``) and swap them in whole. ``ModelDelta`` carries the observations the
trainer just applied, so workers' count signals follow within a second between snapshots. ``ContentRecord``
carries items with a creator (and their vectors) to the trainer's creator vectors: the trainer reads no
content topic.

Bytes: a 4-byte header length, a JSON header (with each array's dtype, shape and offset) and the raw
array bytes. No pickle: the bytes cross process boundaries.

Version rules: a snapshot's version is the trainer's count of learned events (``OnlineModels.version``'s
last part); a reader takes a complete set only when its version is above what it has, and a delta only
when its ``to_version`` is above the snapshot it serves.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.domain import Feed, InteractionType
from ranking.index import IndexedItem
from ranking.ranker import Example
from ranking.signal import Observation
from ranking.training import TrainingScheduler

RECORD_FORMAT = 2
_LEN = struct.Struct(">I")
# a chunk's payload, well under the 1 MiB message limit once the header and the key are added
CHUNK_BYTES = 900 * 1024


class LogFormatError(ValueError):
    pass


# --- framing ---------------------------------------------------------------------------------------
def pack(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """JSON header + raw arrays (C order), each described in the header: compact and pickle-free."""
    parts: list[bytes] = []
    described: list[list[Any]] = []
    offset = 0
    for name, arr in (arrays or {}).items():
        a = np.ascontiguousarray(arr)
        if a.dtype.hasobject:
            raise LogFormatError(f"array {name!r} holds Python objects")
        raw = a.tobytes()
        described.append([name, a.dtype.str, list(a.shape), offset, len(raw)])
        parts.append(raw)
        offset += len(raw)
    head = json.dumps({**header, "_arrays": described}, separators=(",", ":")).encode()
    return b"".join([_LEN.pack(len(head)), head, *parts])


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(header, arrays) of ``pack``'s bytes; arrays are read-only views of ``data``."""
    try:
        (n,) = _LEN.unpack_from(data, 0)
        header = json.loads(bytes(data[4 : 4 + n]))
        body = memoryview(data)[4 + n :]
        arrays = {}
        for name, dtype, shape, offset, size in header.pop("_arrays"):
            arrays[name] = np.frombuffer(body[offset : offset + size], dtype=np.dtype(dtype)).reshape(shape)
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise LogFormatError(f"not a LiveLens log record: {e}") from e
    return header, arrays


# --- training records ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingRecord:
    """One applied (deduplicated) interaction as a ranking worker learned it: what the trainer needs."""

    observation: Observation
    examples: Mapping[str, Example] = field(default_factory=dict)  # A/B arm -> its labelled example


def observation_row(o: Observation) -> list[Any]:
    """An observation's JSON fields (its vector travels as an array): one shape for records and deltas."""
    return [o.event_id, o.user_id, o.item_id, o.type.value, o.ts, o.weight, o.feed.value, list(o.context)]


def observation_of(row: Sequence[Any], vector: np.ndarray | None) -> Observation:
    e, u, i, t, ts, w, f, ctx = row
    return Observation(e, u, i, InteractionType(t), float(ts), float(w), Feed(f), tuple(ctx), vector)


def encode_record(record: TrainingRecord) -> bytes:
    ob = record.observation
    header = {
        "f": RECORD_FORMAT,
        "ob": observation_row(ob),
        "ex": {arm: e.weight for arm, e in record.examples.items()},
    }
    arrays: dict[str, np.ndarray] = {}
    if ob.vector is not None:
        arrays["v"] = np.asarray(ob.vector, np.float32)
    for arm, e in record.examples.items():
        if e.event_id != ob.event_id:
            raise LogFormatError(f"example of {e.event_id!r} logged with event {ob.event_id!r}")
        arrays[f"x.{arm}"] = np.asarray(e.features, np.float16)
    return pack(header, arrays)


def decode_record(data: bytes) -> TrainingRecord:
    header, arrays = unpack(data)
    if header.get("f") != RECORD_FORMAT:
        raise LogFormatError(f"training record format {header.get('f')!r}, expected {RECORD_FORMAT}")
    try:
        ob = observation_of(header["ob"], arrays["v"].copy() if "v" in arrays else None)
        examples = {arm: Example(ob.event_id, arrays[f"x.{arm}"].copy(), float(w)) for arm, w in header["ex"].items()}
    except (KeyError, ValueError, TypeError) as e:
        raise LogFormatError(f"bad training record: {e}") from e
    return TrainingRecord(ob, examples)


@dataclass(frozen=True)
class ContentRecord:
    """Items just indexed (or live streams just refreshed, ``refresh``) that name a creator: what the
    trainer's creator vectors (``ranking.creators``) learn. They are not events: no version counts them."""

    items: tuple[IndexedItem, ...]
    refresh: bool = False


def encode_content(record: ContentRecord) -> bytes:
    rows = [[it.item_id, it.creator_id, it.feed.value, it.is_live, it.created_at, it.title] for it in record.items]
    vectors = np.stack([np.asarray(it.vector, np.float32) for it in record.items]) if record.items else None
    return pack(
        {"f": RECORD_FORMAT, "ct": rows, "refresh": record.refresh}, {"v": vectors} if vectors is not None else {}
    )


def decode_any(data: bytes) -> TrainingRecord | ContentRecord:
    """A training record, or a content record (``encode_content``): both travel on the training topic."""
    header, arrays = unpack(data)
    if "ct" not in header:
        return decode_record(data)
    if header.get("f") != RECORD_FORMAT:
        raise LogFormatError(f"content record format {header.get('f')!r}, expected {RECORD_FORMAT}")
    try:
        items = tuple(
            IndexedItem(str(i), Feed(f), bool(live), float(ts), str(title), arrays["v"][n].copy(), creator_id=str(c))
            for n, (i, c, f, live, ts, title) in enumerate(header["ct"])
        )
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise LogFormatError(f"bad content record: {e}") from e
    return ContentRecord(items, bool(header.get("refresh", False)))


def records_of(observations: Sequence[Observation], examples: Mapping[str, Sequence[Example]]) -> list[TrainingRecord]:
    """One record per observation, each with the examples (per arm) labelled for its event."""
    by_event: dict[str, dict[str, Example]] = {}
    for arm, labelled in examples.items():
        for e in labelled:
            by_event.setdefault(e.event_id, {})[arm] = e
    return [TrainingRecord(ob, by_event.get(ob.event_id, {})) for ob in observations]


def split_records(
    records: Sequence[TrainingRecord], arms: Iterable[str]
) -> tuple[list[Observation], dict[str, list[Example]]]:
    """The inverse of ``records_of``: the observations in order and each arm's examples in order."""
    out: dict[str, list[Example]] = {arm: [] for arm in arms}
    for r in records:
        for arm, e in r.examples.items():
            if arm in out:
                out[arm].append(e)
    return [r.observation for r in records], out


# --- snapshot chunks -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelChunk:
    """One Kafka message of a published snapshot: chunk ``chunk`` of ``chunks`` of model ``model``.

    ``models`` names every model of this version's set (so a reader knows when the set is complete);
    ``offsets`` are the trainer's input offsets the set reflects ("topic:partition" -> next offset).
    """

    arm: str
    model: str
    version: int
    base_version: int  # the version the trainer started from (restored), for tracing
    chunk: int
    chunks: int
    models: tuple[str, ...]
    config_id: str
    offsets: Mapping[str, int]
    payload: bytes
    created_at: float = 0.0

    @property
    def key(self) -> str:
        """The compaction key: the latest message of each (arm, model, chunk index) survives."""
        return f"{self.arm}/{self.model}/{self.chunk}"


def encode_chunk(c: ModelChunk) -> bytes:
    header = {
        "f": RECORD_FORMAT,
        "arm": c.arm,
        "model": c.model,
        "version": c.version,
        "base_version": c.base_version,
        "chunk": c.chunk,
        "chunks": c.chunks,
        "models": list(c.models),
        "config_id": c.config_id,
        "offsets": dict(c.offsets),
        "created_at": c.created_at,
    }
    return pack(header, {"payload": np.frombuffer(c.payload, np.uint8)})


def decode_chunk(data: bytes) -> ModelChunk:
    h, arrays = unpack(data)
    if h.get("f") != RECORD_FORMAT:
        raise LogFormatError(f"model chunk format {h.get('f')!r}, expected {RECORD_FORMAT}")
    try:
        return ModelChunk(
            arm=h["arm"],
            model=h["model"],
            version=int(h["version"]),
            base_version=int(h["base_version"]),
            chunk=int(h["chunk"]),
            chunks=int(h["chunks"]),
            models=tuple(h["models"]),
            config_id=h["config_id"],
            offsets={k: int(v) for k, v in h["offsets"].items()},
            payload=arrays["payload"].tobytes(),
            created_at=float(h.get("created_at", 0.0)),
        )
    except (KeyError, ValueError) as e:
        raise LogFormatError(f"bad model chunk: {e}") from e


@dataclass(frozen=True)
class ModelSnapshot:
    """A complete set: every model of one arm at one version, as the bytes each ``restore`` takes."""

    arm: str
    version: int
    base_version: int
    config_id: str
    offsets: Mapping[str, int]
    models: Mapping[str, bytes]
    created_at: float = 0.0


def chunk_snapshot(snapshot: ModelSnapshot, chunk_bytes: int = CHUNK_BYTES) -> list[ModelChunk]:
    """The messages of a snapshot: each model's bytes cut into pieces of at most ``chunk_bytes``."""
    names = tuple(snapshot.models)
    out = []
    for name, data in snapshot.models.items():
        pieces = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
        for n, piece in enumerate(pieces):
            out.append(
                ModelChunk(
                    snapshot.arm,
                    name,
                    snapshot.version,
                    snapshot.base_version,
                    n,
                    len(pieces),
                    names,
                    snapshot.config_id,
                    dict(snapshot.offsets),
                    piece,
                    snapshot.created_at,
                )
            )
    return out


class SnapshotAssembler:
    """Chunks in, complete snapshots out: only a set whose every model has every chunk of one version,
    and only when that version is above the last one returned for the arm (older and duplicate versions
    are ignored). Partial sets of older versions are dropped as soon as a newer set completes."""

    def __init__(self, max_pending_versions: int = 4) -> None:
        self.max_pending = max_pending_versions
        self.latest: dict[str, int] = {}  # arm -> newest complete version returned
        self._pending: dict[tuple[str, int], dict[tuple[str, int], ModelChunk]] = {}

    def add(self, chunk: ModelChunk) -> ModelSnapshot | None:
        """The snapshot this chunk completes (None: not complete, or not newer than the latest)."""
        if chunk.version <= self.latest.get(chunk.arm, -1):
            return None
        key = (chunk.arm, chunk.version)
        parts = self._pending.setdefault(key, {})
        parts[(chunk.model, chunk.chunk)] = chunk
        self._trim(chunk.arm)
        got = self._complete(parts)
        if got is None:
            return None
        self.latest[chunk.arm] = chunk.version
        for k in [k for k in self._pending if k[0] == chunk.arm and k[1] <= chunk.version]:
            del self._pending[k]
        return got

    def _trim(self, arm: str) -> None:
        versions = sorted(v for a, v in self._pending if a == arm)
        for v in versions[: max(0, len(versions) - self.max_pending)]:
            del self._pending[(arm, v)]

    @staticmethod
    def _complete(parts: Mapping[tuple[str, int], ModelChunk]) -> ModelSnapshot | None:
        first = next(iter(parts.values()))
        models: dict[str, bytes] = {}
        for name in first.models:
            count = _chunks_of(parts, name)
            pieces = [parts.get((name, k)) for k in range(count)]
            if count == 0 or any(p is None for p in pieces):
                return None
            models[name] = b"".join(p.payload for p in pieces if p is not None)
        return ModelSnapshot(
            first.arm, first.version, first.base_version, first.config_id, first.offsets, models, first.created_at
        )


def _chunks_of(parts: Mapping[tuple[str, int], ModelChunk], name: str) -> int:
    return next((c.chunks for (m, _), c in parts.items() if m == name), 0)


# --- deltas ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelDelta:
    """The observations the trainer applied to take its models from ``from_version`` to ``to_version``."""

    from_version: int
    to_version: int
    observations: tuple[Observation, ...]
    config_id: str = ""


def encode_delta(delta: ModelDelta) -> bytes:
    obs = delta.observations
    header = {
        "f": RECORD_FORMAT,
        "from": delta.from_version,
        "to": delta.to_version,
        "config_id": delta.config_id,
        "obs": [observation_row(o) for o in obs],
        "has_vec": [o.vector is not None for o in obs],
    }
    vecs = [np.asarray(o.vector, np.float32) for o in obs if o.vector is not None]
    arrays = {"v": np.stack(vecs)} if vecs else {}
    return pack(header, arrays)


def encode_deltas(
    from_version: int, observations: Sequence[Observation], config_id: str, limit: int = CHUNK_BYTES
) -> list[bytes]:
    """The observations that took the models from ``from_version`` on, as deltas of at most ``limit``
    bytes each (a backlog learned in one interval would exceed the broker's message limit), with
    contiguous version ranges: one observation is one version."""
    data = encode_delta(ModelDelta(from_version, from_version + len(observations), tuple(observations), config_id))
    if len(data) <= limit or len(observations) <= 1:
        return [data]
    half = len(observations) // 2
    return [
        *encode_deltas(from_version, observations[:half], config_id, limit),
        *encode_deltas(from_version + half, observations[half:], config_id, limit),
    ]


def decode_delta(data: bytes, header_only: bool = False) -> ModelDelta:
    """The delta (``header_only``: versions and config id only, observations left empty: a cheap skip)."""
    h, arrays = unpack(data)
    if h.get("f") != RECORD_FORMAT:
        raise LogFormatError(f"model delta format {h.get('f')!r}, expected {RECORD_FORMAT}")
    if header_only:
        return ModelDelta(int(h["from"]), int(h["to"]), (), h.get("config_id", ""))
    vecs = iter(arrays["v"]) if "v" in arrays else iter(())
    obs = tuple(
        observation_of(row, next(vecs).copy() if has else None) for row, has in zip(h["obs"], h["has_vec"], strict=True)
    )
    return ModelDelta(int(h["from"]), int(h["to"]), obs, h.get("config_id", ""))


# --- the trainer's schedule state (its own file, not published) -------------------------------------
def encode_examples(examples: Sequence[Example]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    rows = [len(e.features) for e in examples]
    width = examples[0].features.shape[1] if examples else 0
    feats = np.concatenate([e.features for e in examples]) if examples else np.zeros((0, width), np.float16)
    return {"ids": [e.event_id for e in examples], "weights": [e.weight for e in examples]}, {
        "rows": np.asarray(rows, np.int64),
        "features": feats.astype(np.float16),
    }


def decode_examples(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[Example]:
    bounds = np.concatenate(([0], np.cumsum(arrays["rows"])))
    feats = arrays["features"]
    return [
        Example(i, feats[bounds[n] : bounds[n + 1]].copy(), float(w))
        for n, (i, w) in enumerate(zip(meta["ids"], meta["weights"], strict=True))
    ]


def encode_schedule(schedule: TrainingScheduler) -> bytes:
    """The schedule's own state (event count, bursts, pending and buffered examples): the trainer's file."""
    pending_meta, pending = encode_examples(schedule.pending)
    buffer_meta, buffer = encode_examples(list(schedule.buffer))
    header = {"f": RECORD_FORMAT, "events": schedule.events, "bursts": schedule.bursts, "pending": pending_meta}
    header["buffer"] = buffer_meta
    arrays = {f"pending.{k}": v for k, v in pending.items()} | {f"buffer.{k}": v for k, v in buffer.items()}
    return pack(header, arrays)


def load_schedule(schedule: TrainingScheduler, data: bytes) -> None:
    h, arrays = unpack(data)
    schedule.events, schedule.bursts = int(h["events"]), int(h["bursts"])
    schedule.pending = decode_examples(h["pending"], {k[8:]: v for k, v in arrays.items() if k.startswith("pending.")})
    schedule.buffer.clear()
    schedule.buffer.extend(
        decode_examples(h["buffer"], {k[7:]: v for k, v in arrays.items() if k.startswith("buffer.")})
    )
