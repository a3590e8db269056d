"""The item index in Milvus (a Milvus Lite file or a Milvus server) behind the core's ``ranking.index.Index``.

The Faust agents call it through ``asyncio.to_thread``-style executors (pymilvus is blocking gRPC).
One collection holds both item feeds; ``feed`` and ``is_live`` are scalar fields so the live feed is a
filter, and an ended stream leaves it with one upsert. Consistency is Strong so a search right after
an upsert sees it (an ended stream must disappear at once). Every row names its item's ``creator_id``
(issue 16; a collection from before is refused at start, see ``require_creator_field``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ranking.domain import Feed
from ranking.index import Hit, IndexedItem

TITLE_MAX_CHARS = 300
WRITE_STAMP = "indexed_at"  # the writer's clock at upsert: lets readers poll "what changed since t"
CREATOR_FIELD = "creator_id"  # every indexed item names its creator ("" when the producer did not say)
COLLECTION_NOT_LOADED = 101  # Milvus error code: "collection ... is in state 'released'"
T = TypeVar("T")


def with_loaded_collection(client: Any, collection: str, timeout: float | None, call: Callable[[], T]) -> T:
    """Run a client call; if the server lost the loaded state (a Milvus restart releases every
    collection), load the collection again and retry once. Other errors go to the caller's retry."""
    from pymilvus.exceptions import MilvusException

    try:
        return call()
    except MilvusException as exc:
        if exc.code != COLLECTION_NOT_LOADED and "released" not in str(exc):
            raise
    client.load_collection(collection, timeout=timeout)
    return call()


class AllocTimestampUnimplemented(logging.Filter):
    """Drops the one traceback Milvus Lite's gRPC server logs, as expected, for every new collection.

    pymilvus 3 asks the server for a timestamp (``AllocTimestamp``) while it waits for an index; Milvus
    Lite's servicer does not implement that call, so grpc logs "Exception calling application" with a
    NotImplementedError raised in ``AllocTimestamp``, and the client, by design, carries on without it.
    Any other record (another method, another error) passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != GRPC_SERVER_LOGGER or not record.exc_info:
            return True
        _, exc, tb = record.exc_info
        if not isinstance(exc, NotImplementedError) or tb is None:
            return True
        while tb.tb_next is not None:  # the frame that raised
            tb = tb.tb_next
        return tb.tb_frame.f_code.co_name != "AllocTimestamp"


GRPC_SERVER_LOGGER = "grpc._server"
_ALLOC_TIMESTAMP_FILTER = AllocTimestampUnimplemented()


def quiet_alloc_timestamp_unimplemented() -> None:
    """Install the filter on grpc's server logger, in a process that hosts Milvus Lite (idempotent)."""
    logging.getLogger(GRPC_SERVER_LOGGER).addFilter(_ALLOC_TIMESTAMP_FILTER)


def open_milvus(uri: str, token: str | None, timeout: float | None) -> Any:
    """A client for a server URL or a Milvus Lite file (whose folder is created; opening it starts Milvus
    Lite's server in this process, hence the log filter here)."""
    from pymilvus import MilvusClient

    quiet_alloc_timestamp_unimplemented()
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    return MilvusClient(uri, token=token or "", timeout=timeout)


def ensure_collection(
    client: Any,
    collection: str,
    dim: int,
    add_fields: Callable[[Any], None],
    index_type: str = "FLAT",
    index_params: dict[str, int] | None = None,
) -> None:
    """Create the collection (``add_fields`` adds the scalar fields; a ``vector`` field of ``dim`` and its
    inner-product index are added here), or check an existing one has that ``dim``; then load it."""
    from pymilvus import DataType

    if not client.has_collection(collection):
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        add_fields(schema)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=index_params or {})
        client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
    else:
        described = client.describe_collection(collection)
        dims = [f.get("params", {}).get("dim") for f in described["fields"] if f["name"] == "vector"]
        if dims and int(dims[0]) != dim:
            raise RuntimeError(
                f"Milvus collection {collection!r} has dim {dims[0]} but the encoder gives {dim}: "
                "use another collection name (LIVELENS_MILVUS_COLLECTION) or drop the old one"
            )
    client.load_collection(collection)


def collection_fields(client: Any, collection: str) -> set[str]:
    return {f["name"] for f in client.describe_collection(collection)["fields"]}


def require_creator_field(client: Any, collection: str) -> None:
    """Refuse a collection created before items named their creator: Milvus Lite cannot add a field, and
    serving it would silently lose every creator (the creators feed, creator vectors, fan-out)."""
    if CREATOR_FIELD not in collection_fields(client, collection):
        raise RuntimeError(
            f"Milvus collection {collection!r} has no {CREATOR_FIELD!r} field (created before issue 16): "
            "use a new collection name (LIVELENS_MILVUS_COLLECTION) and replay the content, or drop the old one"
        )


def row_to_item(r: dict[str, Any]) -> IndexedItem:
    """A Milvus row (``item_id`` plus the item fields) as an ``IndexedItem``."""
    return IndexedItem(
        item_id=str(r["item_id"]),
        feed=Feed(r["feed"]),
        is_live=bool(r["is_live"]),
        created_at=float(r["created_at"]),
        title=str(r["title"]),
        vector=np.asarray(r["vector"], dtype=np.float32),
        creator_id=str(r.get("creator_id") or ""),
    )


def hit_id(hit: Any) -> str:
    """A search hit's primary key: under its field name (Milvus Lite, Milvus >= 2.4) or, from a Milvus 2.3
    server, which does not name the primary field in results, under ``id``."""
    found = hit.get("item_id")
    return str(found if found is not None else hit["id"])


def feed_filter(feed: Feed) -> str:
    if feed is Feed.live:
        return 'feed == "live" and is_live == true'
    return f'feed == "{feed.value}"'


class MilvusIndex:
    """Milvus-backed vector index of items plus a bounded in-process cache of their rows (``ranking.index.Index``)."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        token: str | None = None,
        cache_size: int = 100_000,
        timeout: float | None = None,
        index_type: str = "FLAT",
        index_params: dict[str, int] | None = None,
        search_params: dict[str, int] | None = None,
    ) -> None:
        """``index_type``/``index_params`` apply when the collection is created; ``search_params`` to every search."""
        self.uri = uri
        self.collection = collection
        self.dim = dim
        # Per call: without one a hung server stalls the agent silently; with one the call raises, the
        # worker's retry loop backs off and /health shows the error.
        self.timeout = timeout
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self.search_params = dict(search_params or {})
        self._client = open_milvus(uri, token, timeout)
        self._cache: OrderedDict[str, IndexedItem] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._ensure_collection()

    def _ensure_collection(self) -> None:
        from pymilvus import DataType

        def add_fields(schema: Any) -> None:
            schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)
            schema.add_field("feed", DataType.VARCHAR, max_length=32)
            schema.add_field("is_live", DataType.BOOL)
            schema.add_field("created_at", DataType.DOUBLE)
            schema.add_field("title", DataType.VARCHAR, max_length=4 * TITLE_MAX_CHARS)
            schema.add_field(WRITE_STAMP, DataType.DOUBLE)
            schema.add_field(CREATOR_FIELD, DataType.VARCHAR, max_length=128)

        ensure_collection(self._client, self.collection, self.dim, add_fields, self.index_type, self.index_params)
        require_creator_field(self._client, self.collection)
        # collections created before the stamp existed lack it (Milvus Lite cannot add a field): readers
        # then fall back to created_at plus a full id scan (storage.catalog.MilvusCatalog)
        self.stamps_writes = WRITE_STAMP in collection_fields(self._client, self.collection)

    def _loaded(self, call: Callable[[], T]) -> T:
        return with_loaded_collection(self._client, self.collection, self.timeout, call)

    def close(self) -> None:
        self._client.close()

    def upsert(self, items: Sequence[IndexedItem]) -> None:
        if not items:
            return
        stamp = {WRITE_STAMP: time.time()} if self.stamps_writes else {}
        rows = [
            {
                "item_id": it.item_id,
                "feed": it.feed.value,
                "is_live": it.is_live,
                "created_at": float(it.created_at),
                "title": it.title[:TITLE_MAX_CHARS],
                CREATOR_FIELD: it.creator_id,
                "vector": np.asarray(it.vector, dtype=np.float32).tolist(),
                **stamp,
            }
            for it in items
        ]
        with self._lock:
            self._loaded(lambda: self._client.upsert(self.collection, rows, timeout=self.timeout))
        self._remember(items)

    def set_live(self, item_id: str, is_live: bool) -> IndexedItem | None:
        """Flip a live stream's status; returns None when the item is unknown."""
        item = self.get([item_id], use_cache=False).get(item_id)
        if item is None:
            return None
        updated = item.with_live(is_live)
        self.upsert([updated])
        return updated

    def get(self, item_ids: Iterable[str], use_cache: bool = True) -> dict[str, IndexedItem]:
        found: dict[str, IndexedItem] = {}
        missing: list[str] = []
        for item_id in dict.fromkeys(item_ids):
            cached = self._cache.get(item_id) if use_cache else None
            if cached is not None:
                found[item_id] = cached
            else:
                missing.append(item_id)
        if missing:
            fields = ["feed", "is_live", "created_at", "title", "vector", CREATOR_FIELD]
            with self._lock:
                rows = self._loaded(
                    lambda: self._client.get(self.collection, ids=missing, output_fields=fields, timeout=self.timeout)
                )
            fetched = [row_to_item(r) for r in rows]
            self._remember(fetched)
            found.update({it.item_id: it for it in fetched})
        return found

    def search(
        self, queries: Sequence[np.ndarray], feed: Feed, limit: int, with_vectors: bool = False
    ) -> list[list[Hit]]:
        if not queries:
            return []
        fields = ["feed", "created_at", "title"] + (["vector"] if with_vectors else [])
        data = [np.asarray(q, dtype=np.float32).tolist() for q in queries]
        with self._lock:
            results = self._loaded(
                lambda: self._client.search(
                    self.collection,
                    data=data,
                    limit=limit,
                    filter=feed_filter(feed),
                    output_fields=fields,
                    search_params={"metric_type": "IP", "params": self.search_params},
                    timeout=self.timeout,
                )
            )
        out: list[list[Hit]] = []
        for hits in results:
            row: list[Hit] = []
            for h in hits:
                e = h["entity"]
                vec = np.asarray(e["vector"], dtype=np.float32) if with_vectors else None
                row.append(Hit(hit_id(h), float(h["distance"]), Feed(e["feed"]), e["created_at"], e["title"], vec))
            out.append(row)
        return out

    def count(self) -> int:
        with self._lock:
            res = self._loaded(
                lambda: self._client.query(self.collection, filter="", output_fields=["count(*)"], timeout=self.timeout)
            )
        return int(res[0]["count(*)"])

    def _remember(self, items: Iterable[IndexedItem]) -> None:
        for it in items:
            self._cache[it.item_id] = it
            self._cache.move_to_end(it.item_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
