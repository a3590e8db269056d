"""Per-modality item vectors beside the fused one, so search can say which modality matched.

The item index holds one fused vector per item (what recommendations rank by). This store keeps the
parts that built it, each already in the common dim (``encoders.fusion.to_common``): ``text``,
``image``, ``audio`` for items with media, ``origin`` (the fused vector at creation) for live streams,
whose indexed vector drifts as they are refreshed, and ``live_text``/``live_image``/``live_audio`` from
a stream's latest window. Text-only items need no rows: their fused vector is their text vector.

One row per (item, modality) in a second Milvus collection, looked up by item id, never searched:
search finds candidates by the fused vector and explains them with these parts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from storage.milvus import ensure_collection, open_milvus, with_loaded_collection

MODALITY_MAX_CHARS = 16


class ModalityStore(Protocol):
    def put(self, item_id: str, parts: Mapping[str, np.ndarray]) -> None: ...
    def get(self, item_ids: Iterable[str]) -> dict[str, dict[str, np.ndarray]]: ...


class InMemoryModalityStore:
    """The same interface in a dict (unit tests, offline evaluation)."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, np.ndarray]] = {}

    def put(self, item_id: str, parts: Mapping[str, np.ndarray]) -> None:
        if parts:
            self._rows.setdefault(item_id, {}).update({m: np.asarray(v, np.float32) for m, v in parts.items()})

    def get(self, item_ids: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        return {i: dict(self._rows[i]) for i in item_ids if i in self._rows}


class MilvusModalityStore:
    """Rows ``item_id/modality`` in the collection ``<items collection>_modalities``."""

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
            schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=128 + 1 + MODALITY_MAX_CHARS)
            schema.add_field("item_id", DataType.VARCHAR, max_length=128)
            schema.add_field("modality", DataType.VARCHAR, max_length=MODALITY_MAX_CHARS)

        ensure_collection(self._client, collection, dim, add_fields)

    def put(self, item_id: str, parts: Mapping[str, np.ndarray]) -> None:
        rows = [
            {
                "key": f"{item_id}/{modality}",
                "item_id": item_id,
                "modality": modality,
                "vector": np.asarray(v, dtype=np.float32).reshape(-1).tolist(),
            }
            for modality, v in parts.items()
            if len(modality) <= MODALITY_MAX_CHARS
        ]
        if rows:
            with self._lock:
                with_loaded_collection(
                    self._client,
                    self.collection,
                    self.timeout,
                    lambda: self._client.upsert(self.collection, rows, timeout=self.timeout),
                )

    def get(self, item_ids: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        quoted = ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in ids)
        with self._lock:
            rows = with_loaded_collection(
                self._client,
                self.collection,
                self.timeout,
                lambda: self._client.query(
                    self.collection,
                    filter=f"item_id in [{quoted}]",
                    output_fields=["item_id", "modality", "vector"],
                    timeout=self.timeout,
                ),
            )
        out: dict[str, dict[str, np.ndarray]] = {}
        for r in rows:
            out.setdefault(str(r["item_id"]), {})[str(r["modality"])] = np.asarray(r["vector"], dtype=np.float32)
        return out

    def close(self) -> None:
        self._client.close()
