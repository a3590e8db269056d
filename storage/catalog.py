"""The local search tier's polls against Milvus (``ranking.local_tier.Catalog``): what other workers wrote.

``ranking.local_tier.LocalSearchTier`` keeps an in-process exact copy of the index; this catalog tells it,
on a connection of its own, which items changed since a stamp, which streams are live, and reads items
by primary key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ranking.index import IndexedItem
from storage.milvus import (
    CREATOR_FIELD,
    WRITE_STAMP,
    collection_fields,
    open_milvus,
    row_to_item,
    with_loaded_collection,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
ITEM_FIELDS = ["item_id", "feed", "is_live", "created_at", "title", "vector", CREATOR_FIELD]


def refuses_unbounded(message: str) -> bool:
    """Whether a Milvus error says a query's result was too large (a server's result window or output
    limit), not that the call failed: a timeout must not switch Milvus Lite to quadratic paging for good."""
    text = message.lower()
    if "deadline" in text or "timeout" in text or "timed out" in text:
        return False
    return any(word in text for word in ("limit", "window", "too large", "exceed"))


class MilvusCatalog:
    """The tier's polls against the Milvus collection, on a connection of their own (no shared lock).

    Scans return ids and stamps only, in one query where the server allows it: Milvus Lite evaluates
    every query over every row, so a paged iterator costs a full scan per page (all ids at 200k items:
    28 s paged against 2.6 s in one query; paging 1M items did not finish in 800 s). Vectors are then
    read by primary key (``fetch``), which is an index lookup. A server that refuses an unbounded result
    gets the paged iterator instead.
    """

    def __init__(
        self, uri: str, collection: str, token: str | None = None, page: int = 16_384, timeout: float | None = None
    ) -> None:
        # A timeout per call: a hung server must fail the poll (and show in /health), not stall it forever.
        self.timeout = timeout
        self._client = open_milvus(uri, token, timeout)
        self.collection = collection
        self.page = page
        self._unbounded = True
        self._stamp_field = WRITE_STAMP if WRITE_STAMP in collection_fields(self._client, collection) else "created_at"
        self.tracks_writes = self._stamp_field == WRITE_STAMP

    def _call(self, call: Callable[[], T]) -> T:
        """Reload the collection once if a Milvus restart released it (``storage.milvus``)."""
        return with_loaded_collection(self._client, self.collection, self.timeout, call)

    def _rows(self, filter_expr: str, fields: list[str]) -> list[dict[str, Any]]:
        from pymilvus.exceptions import MilvusException

        if self._unbounded:
            try:
                return self._call(
                    lambda: self._client.query(
                        self.collection, filter=filter_expr, output_fields=fields, timeout=self.timeout
                    )
                )
            except MilvusException as exc:
                if not refuses_unbounded(str(exc)):
                    raise
                self._unbounded = False
                log.info("Milvus refused an unbounded query (%s); paging instead", exc)
        it = self._call(
            lambda: self._client.query_iterator(
                self.collection, batch_size=self.page, filter=filter_expr, output_fields=fields, timeout=self.timeout
            )
        )
        rows: list[dict[str, Any]] = []
        try:
            while page := it.next():
                rows.extend(page)
        finally:
            it.close()
        return rows

    def changed_since(self, stamp: float | None) -> dict[str, float]:
        """Ids written (or, without write stamps, created) strictly after ``stamp``; every id for ``None``."""
        field = self._stamp_field
        expr = 'item_id != ""' if stamp is None else f"{field} > {stamp!r}"
        return {str(r["item_id"]): float(r.get(field) or 0.0) for r in self._rows(expr, ["item_id", field])}

    def live_ids(self) -> set[str]:
        return {str(r["item_id"]) for r in self._rows('feed == "live" and is_live == true', ["item_id"])}

    def count(self) -> int:
        res = self._call(
            lambda: self._client.query(self.collection, filter="", output_fields=["count(*)"], timeout=self.timeout)
        )
        return int(res[0]["count(*)"])

    def fetch(self, item_ids: Sequence[str]) -> list[IndexedItem]:
        if not item_ids:
            return []
        ids = list(item_ids)
        rows = self._call(
            lambda: self._client.get(self.collection, ids=ids, output_fields=ITEM_FIELDS[1:], timeout=self.timeout)
        )
        return [row_to_item(r) for r in rows]

    def close(self) -> None:
        self._client.close()
