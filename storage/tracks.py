"""Music tracks in their own Milvus collection (``<items collection>_tracks``): artist, descriptors, text vector.

Beside the item index rather than in it: search by descriptors is a scan with conditions on scalar fields,
playlists need each track's artist and tempo, and the item index's schema stays the one every feed shares.
Live music streams have rows too (``is_live``, no descriptors), so playlists can find them; whether one
is live *now* is read from the item index.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from encoders.music import TrackDescriptors
from ranking.music import MusicTrack
from storage.milvus import TITLE_MAX_CHARS, ensure_collection, open_milvus, with_loaded_collection

DESCRIPTOR_FIELDS = tuple(f.name for f in fields(TrackDescriptors))
_SCALARS = ["item_id", "creator_id", "title", "created_at", "is_live", "has_audio", *DESCRIPTOR_FIELDS]


def _quoted(ids: Sequence[str]) -> str:
    return ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in ids)


class MilvusTrackStore:
    """``ranking.music.TrackStore`` on Milvus (Lite or a server)."""

    def __init__(
        self, uri: str, collection: str, dim: int, token: str | None = None, timeout: float | None = None
    ) -> None:
        from pymilvus import DataType

        self.collection = collection
        self.dim = dim
        self.timeout = timeout
        self._client = open_milvus(uri, token, timeout)
        self._lock = threading.Lock()

        def add_fields(schema: Any) -> None:
            schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)
            schema.add_field("creator_id", DataType.VARCHAR, max_length=128)
            schema.add_field("title", DataType.VARCHAR, max_length=4 * TITLE_MAX_CHARS)
            schema.add_field("created_at", DataType.DOUBLE)
            schema.add_field("is_live", DataType.BOOL)
            schema.add_field("has_audio", DataType.BOOL)
            for name in DESCRIPTOR_FIELDS:
                schema.add_field(name, DataType.DOUBLE)

        ensure_collection(self._client, collection, dim, add_fields)

    def _call(self, fn: Any) -> Any:
        with self._lock:
            return with_loaded_collection(self._client, self.collection, self.timeout, fn)

    def upsert(self, tracks: Sequence[MusicTrack]) -> None:
        rows = []
        for t in tracks:
            d = t.descriptors.to_dict() if t.descriptors is not None else dict.fromkeys(DESCRIPTOR_FIELDS, 0.0)
            vector = t.vector if t.vector is not None else np.zeros(self.dim, np.float32)
            rows.append(
                {
                    "item_id": t.item_id,
                    "creator_id": t.creator_id,
                    "title": t.title[:TITLE_MAX_CHARS],
                    "created_at": float(t.created_at),
                    "is_live": t.is_live,
                    "has_audio": t.descriptors is not None,
                    **{k: float(d[k]) for k in DESCRIPTOR_FIELDS},
                    "vector": np.asarray(vector, dtype=np.float32).reshape(-1).tolist(),
                }
            )
        if rows:
            self._call(lambda: self._client.upsert(self.collection, rows, timeout=self.timeout))

    def get(self, item_ids: Iterable[str]) -> dict[str, MusicTrack]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        rows = self._call(
            lambda: self._client.query(
                self.collection, filter=f"item_id in [{_quoted(ids)}]", output_fields=_SCALARS, timeout=self.timeout
            )
        )
        return {str(r["item_id"]): _track(r) for r in rows}

    def scan(self, limit: int, with_vectors: bool = False) -> list[MusicTrack]:
        out = [*_SCALARS, "vector"] if with_vectors else _SCALARS
        rows = self._call(
            lambda: self._client.query(
                self.collection, filter='item_id != ""', output_fields=out, limit=limit, timeout=self.timeout
            )
        )
        return [_track(r) for r in rows]

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[MusicTrack, float]]:
        res = self._call(
            lambda: self._client.search(
                self.collection,
                data=[np.asarray(vector, dtype=np.float32).tolist()],
                filter="is_live == false",
                limit=limit,
                output_fields=[*_SCALARS, "vector"],
                search_params={"metric_type": "IP"},
                timeout=self.timeout,
            )
        )
        return [(_track(h["entity"]), float(h["distance"])) for h in res[0]] if res else []

    def close(self) -> None:
        self._client.close()


def _track(r: dict[str, Any]) -> MusicTrack:
    descriptors = TrackDescriptors(**{k: float(r[k]) for k in DESCRIPTOR_FIELDS}) if r.get("has_audio") else None
    vector = np.asarray(r["vector"], dtype=np.float32) if r.get("vector") is not None else None
    return MusicTrack(
        item_id=str(r["item_id"]),
        creator_id=str(r["creator_id"]),
        title=str(r["title"]),
        created_at=float(r["created_at"]),
        vector=vector,
        descriptors=descriptors,
        is_live=bool(r["is_live"]),
    )
