"""Loaders for the real datasets in ../shared/datasets, as plain items and per-user sequences.

Replay (events to Kafka) and offline evaluation read the same structures, so both see the same data.
Files are read in place and never modified or copied.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ranking.domain import ContentKind, InteractionType

DATASETS = ("microlens-50k", "movielens-latest-small")


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    tags: tuple[str, ...] = ()
    kind: ContentKind = ContentKind.short_video


@dataclass(frozen=True)
class Interaction:
    item_id: str
    type: InteractionType
    value: float = 0.0
    ts: float | None = None


@dataclass
class Dataset:
    name: str
    items: dict[str, Item]
    sequences: dict[str, list[Interaction]] = field(default_factory=dict)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def head(self, users: int | None) -> Dataset:
        """The first ``users`` users in file order; the catalogue stays whole."""
        if users is None or users >= len(self.sequences):
            return self
        keep = dict(list(self.sequences.items())[:users])
        return Dataset(self.name, self.items, keep)

    def touched_items(self) -> dict[str, Item]:
        ids = {i.item_id for seq in self.sequences.values() for i in seq}
        return {k: v for k, v in self.items.items() if k in ids}


class DatasetNotFound(FileNotFoundError):
    pass


def dataset_dir(root: Path, name: str) -> Path:
    path = root / name
    if not path.is_dir():
        raise DatasetNotFound(
            f"dataset {name!r} not found under {root} (set LIVELENS_DATASETS_DIR; expected ../shared/datasets)"
        )
    return path


def _hashtags(title: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in title.split("#")[1:] if t.strip())


def load_microlens(root: Path) -> Dataset:
    """MicroLens-50K: users commented on videos, in chronological order per user (no timestamps)."""
    path = dataset_dir(root, "microlens-50k")
    items: dict[str, Item] = {}
    with open(path / "MicroLens-50k_titles.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            title = row["title"].strip() or f"video {row['item']}"
            items[row["item"]] = Item(row["item"], title, _hashtags(title))
    sequences: dict[str, list[Interaction]] = {}
    with open(path / "MicroLens-50k_pairs.tsv", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            user, _, seq = line.partition("\t")
            sequences[user] = [Interaction(i, InteractionType.comment) for i in seq.split()]
    return Dataset("microlens-50k", items, sequences)


def load_movielens(root: Path) -> Dataset:
    """MovieLens latest-small: 4+ stars is a like, under 2.5 a skip, otherwise a full view."""
    path = dataset_dir(root, "movielens-latest-small")
    items: dict[str, Item] = {}
    with open(path / "movies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)")
            items[row["movieId"]] = Item(row["movieId"], row["title"], genres)
    rows: dict[str, list[tuple[float, Interaction]]] = defaultdict(list)
    with open(path / "ratings.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rating, ts = float(row["rating"]), float(row["timestamp"])
            if rating >= 4.0:
                kind, value = InteractionType.like, 0.0
            elif rating < 2.5:
                kind, value = InteractionType.skip, 0.0
            else:
                kind, value = InteractionType.view, 30.0
            rows[row["userId"]].append((ts, Interaction(row["movieId"], kind, value, ts)))
    sequences = {u: [i for _, i in sorted(r, key=lambda x: x[0])] for u, r in rows.items()}
    return Dataset("movielens-latest-small", items, sequences)


def load_dataset(name: str, root: Path) -> Dataset:
    if name == "microlens-50k":
        return load_microlens(root)
    if name == "movielens-latest-small":
        return load_movielens(root)
    raise DatasetNotFound(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_csv_dataset(interactions: Path, items: Path, name: str | None = None) -> Dataset:
    """Any dataset without code: interactions CSV ``user_id,item_id[,timestamp][,event_type][,value]``
    and items CSV ``item_id,title[,description][,tags][,kind]`` (tags separated by ``|``)."""
    catalogue: dict[str, Item] = {}
    with open(items, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            title = " ".join(p for p in (row["title"], row.get("description") or "") if p).strip()
            tags = tuple(t for t in (row.get("tags") or "").split("|") if t)
            kind = ContentKind(row["kind"]) if row.get("kind") else ContentKind.short_video
            catalogue[row["item_id"]] = Item(row["item_id"], title or row["item_id"], tags, kind)
    rows: dict[str, list[tuple[float, int, Interaction]]] = defaultdict(list)
    with open(interactions, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f)):
            ts = float(row["timestamp"]) if row.get("timestamp") else None
            kind = InteractionType(row["event_type"]) if row.get("event_type") else InteractionType.view
            value = float(row["value"]) if row.get("value") else 0.0
            rows[row["user_id"]].append(
                (ts if ts is not None else float(n), n, Interaction(row["item_id"], kind, value, ts))
            )
    sequences = {u: [i for _, _, i in sorted(r, key=lambda x: (x[0], x[1]))] for u, r in rows.items()}
    return Dataset(name or interactions.stem, catalogue, sequences)
