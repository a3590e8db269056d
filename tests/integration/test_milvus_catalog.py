"""The search tier's polls against a real Milvus Lite file: write stamps, bulk loads, old collections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranking.index import IndexedItem
from ranking.local_tier import LocalSearchTier
from storage.catalog import MilvusCatalog
from storage.milvus import MilvusIndex, ensure_collection, open_milvus
from streams.schemas import Feed

DIM = 4


def items(prefix: str, n: int, feed: Feed = Feed.short_video, created: float = 0.0) -> list[IndexedItem]:
    rng = np.random.default_rng(len(prefix) + n)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    live = feed is Feed.live
    return [IndexedItem(f"{prefix}{i}", feed, live, created, f"{prefix} {i}", v) for i, v in enumerate(vecs)]


def test_bulk_writes_with_one_timestamp_and_flips_reach_the_tier_without_a_scan(tmp_path: Path) -> None:
    milvus_file = str(tmp_path / "milvus.db")
    writer = MilvusIndex(milvus_file, "items", DIM)
    writer.upsert(items("seed", 3) + items("live", 2, Feed.live, created=50.0))
    catalog = MilvusCatalog(milvus_file, "items")
    assert writer.stamps_writes and catalog.tracks_writes
    tier = LocalSearchTier(writer, catalog, DIM, start=False)
    assert tier.count() == 5
    other = MilvusIndex(milvus_file, "items", DIM)  # another worker
    other.upsert(items("bulk", 300, created=0.0))  # older than anything seen: only the stamp finds them
    other.set_live("live0", False)
    stats = tier.refresh()
    assert stats["new"] == 300 and stats["missing_fetched"] == 0
    assert tier.count() == 305 and tier.get(["live0"])["live0"].is_live is False
    assert [h.item_id for h in tier.search([np.ones(DIM, np.float32)], Feed.live, 5)[0]] == ["live1"]
    stamps = catalog.changed_since(None)
    assert len(stamps) == 305 and all(s > 0 for s in stamps.values())
    assert catalog.changed_since(max(stamps.values())) == {}


def test_a_collection_without_write_stamps_still_syncs(tmp_path: Path) -> None:
    from pymilvus import DataType

    milvus_file = str(tmp_path / "milvus.db")

    def old_fields(schema: object) -> None:  # the schema before the write stamp
        schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)  # type: ignore[attr-defined]
        schema.add_field("feed", DataType.VARCHAR, max_length=32)  # type: ignore[attr-defined]
        schema.add_field("is_live", DataType.BOOL)  # type: ignore[attr-defined]
        schema.add_field("created_at", DataType.DOUBLE)  # type: ignore[attr-defined]
        schema.add_field("title", DataType.VARCHAR, max_length=1200)  # type: ignore[attr-defined]
        schema.add_field("creator_id", DataType.VARCHAR, max_length=128)  # type: ignore[attr-defined]

    client = open_milvus(milvus_file, None, None)
    ensure_collection(client, "old", DIM, old_fields)
    writer = MilvusIndex(milvus_file, "old", DIM)
    assert not writer.stamps_writes
    writer.upsert(items("a", 2, created=100.0) + items("live", 1, Feed.live, created=100.0))
    catalog = MilvusCatalog(milvus_file, "old")
    assert not catalog.tracks_writes
    tier = LocalSearchTier(writer, catalog, DIM, start=False)
    MilvusIndex(milvus_file, "old", DIM).upsert(items("late", 10, created=0.0))
    MilvusIndex(milvus_file, "old", DIM).set_live("live0", False)
    assert tier.refresh()["live_flips"] == 1
    assert tier.count() == 13  # the late items by the quiet poll's count check
    assert set(catalog.changed_since(99.0)) == {"a0", "a1", "live0"}  # by created_at


def test_a_collection_from_before_creator_ids_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from pymilvus import DataType

    milvus_file = str(tmp_path / "milvus.db")

    def before_issue_16(schema: object) -> None:  # the schema every run before issue 16 created
        schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)  # type: ignore[attr-defined]
        schema.add_field("feed", DataType.VARCHAR, max_length=32)  # type: ignore[attr-defined]
        schema.add_field("is_live", DataType.BOOL)  # type: ignore[attr-defined]
        schema.add_field("created_at", DataType.DOUBLE)  # type: ignore[attr-defined]
        schema.add_field("title", DataType.VARCHAR, max_length=1200)  # type: ignore[attr-defined]
        schema.add_field("indexed_at", DataType.DOUBLE)  # type: ignore[attr-defined]

    ensure_collection(open_milvus(milvus_file, None, None), "before", DIM, before_issue_16)
    with pytest.raises(RuntimeError, match=r"no 'creator_id' field.*LIVELENS_MILVUS_COLLECTION"):
        MilvusIndex(milvus_file, "before", DIM)
    fresh = MilvusIndex(milvus_file, "after", DIM)  # a new collection has the field, and keeps it
    fresh.upsert([IndexedItem("x", Feed.short_video, False, 0.0, "x", np.ones(DIM, np.float32), creator_id="c1")])
    assert MilvusIndex(milvus_file, "after", DIM).get(["x"], use_cache=False)["x"].creator_id == "c1"
    assert MilvusCatalog(milvus_file, "after").fetch(["x"])[0].creator_id == "c1"
