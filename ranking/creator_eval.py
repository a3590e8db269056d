"""The creators feed's offline replay: pseudo-creators and derived follows on a dataset without creator ids.

Why derived: no public dataset here names creators, so (documented in docs/creators.md):

- Pseudo-creators (:func:`pseudo_creators`): an item's creator is its title's first hashtag, lower-cased
  with spaces removed ("king glory" and "kingglory" are one), its items cut in item-id order into
  creators of at most ``per_creator`` items (a big tag is many creators on one theme); an item with no
  hashtag belongs to ``untagged~<id mod untagged_buckets>``.
- Follows (:func:`derive_follows`): a user follows a creator right after their ``follow_after``-th
  engagement with that creator's items (repeated engagement).
- Leave-one-out on follows: each user's last derived follow is held out. The user's state is built from
  their events strictly before the engagement that triggered it (``cutoff="trigger"``: the target has had
  ``follow_after - 1`` engagements, which the most-engaged baseline exploits), or before their first
  engagement with the target creator (``cutoff="discovery"``: a creator they have not met yet), their
  earlier follows (before that point) included. Co-follow learns every user's follows before their held-out one; the
  creator vectors learn every item (content, not events). Rankings exclude followed creators.

Methods on the same users and exclusions: LiveLens (``ranking.creators.rank_creators`` with the
worker's signals), popularity (most followed), co-follow alone, and "the creator the user engaged with
most" (ties: the most recent engagement).
"""

from __future__ import annotations

import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ranking.creators import CoFollowSignal, CreatorParams, default_creator_signals, rank_creators
from ranking.datasets import Dataset, Item
from ranking.domain import Feed, Interaction, InteractionType
from ranking.evaluation import summarize
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import user_context
from ranking.signal import Observation, RankRequest
from ranking.user_state import UserModel, UserModelParams, UserState


@dataclass(frozen=True)
class CreatorProtocol:
    per_creator: int = 40
    untagged_buckets: int = 500
    follow_after: int = 2
    batch: int = 256
    # "trigger": the user's events before the engagement that triggered the held-out follow (the target was
    # engaged with follow_after - 1 times); "discovery": before their first engagement with the target
    # creator (a creator they have not met yet: what "creators to follow" is for)
    cutoff: str = "trigger"


@dataclass(frozen=True)
class DerivedFollow:
    creator: str
    position: int  # index in the user's sequence of the engagement that triggered it


def pseudo_creators(items: Mapping[str, Item], protocol: CreatorProtocol) -> dict[str, str]:
    """item -> pseudo-creator, by the rule of the module docstring (deterministic)."""
    by_tag: dict[str, list[str]] = {}
    out: dict[str, str] = {}
    for item_id, it in items.items():
        tag = re.sub(r"\s+", "", it.tags[0].lower()) if it.tags else ""
        if tag:
            by_tag.setdefault(tag, []).append(item_id)
        else:
            out[item_id] = f"untagged~{zlib.crc32(item_id.encode()) % protocol.untagged_buckets}"
    for tag, ids in by_tag.items():
        ids.sort(key=lambda i: (len(i), i))
        name = re.sub(r"[^A-Za-z0-9_.:@-]", "_", tag)[:100] or "tag"
        for n, item_id in enumerate(ids):
            out[item_id] = f"{name}~{n // protocol.per_creator}"
    return out


def derive_follows(sequence: Sequence[str], creator_of: Mapping[str, str], follow_after: int) -> list[DerivedFollow]:
    counts: Counter[str] = Counter()
    out = []
    for pos, item in enumerate(sequence):
        creator = creator_of.get(item)
        if creator is None:
            continue
        counts[creator] += 1
        if counts[creator] == follow_after:
            out.append(DerivedFollow(creator, pos))
    return out


@dataclass
class CreatorEvalResult:
    methods: dict[str, dict[str, float]]
    dataset: dict[str, Any]
    seconds: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "dataset": self.dataset,
            "seconds": self.seconds,
        }


def _rank(order: Sequence[str], target: str) -> int | None:
    try:
        return list(order).index(target)
    except ValueError:
        return None


def evaluate_creators(
    dataset: Dataset,
    vectors: np.ndarray,
    user_params: UserModelParams,
    users: int | None = None,
    protocol: CreatorProtocol | None = None,
    params: CreatorParams | None = None,
    ks: Sequence[int] = (10, 20),
    tick: Callable[[int, int], None] | None = None,
) -> CreatorEvalResult:
    """Leave-one-out on derived follows for the first ``users`` users that have one (all: None)."""
    p = protocol or CreatorProtocol()
    top = max(ks)
    cp = replace(params or CreatorParams(), top_k=top)
    started = time.perf_counter()
    ids = sorted(dataset.items)  # ``vectors`` row order, as ``ranking.evaluation`` encodes the titles
    row_of = {i: n for n, i in enumerate(ids)}
    creator_of = pseudo_creators(dataset.items, p)
    follows = {
        u: derive_follows([x.item_id for x in seq], creator_of, p.follow_after) for u, seq in dataset.sequences.items()
    }
    # shared models: co-follow from every user's follows before their held-out one; creator vectors from content
    signals = default_creator_signals(cp)
    items = [
        IndexedItem(
            i, Feed.short_video, False, 0.0, dataset.items[i].title, vectors[row_of[i]], creator_id=creator_of[i]
        )
        for i in ids
    ]
    signals[0].learn_content(items)  # type: ignore[attr-defined]
    cofollow = next(s for s in signals if isinstance(s, CoFollowSignal))
    observations = []
    for u, fs in follows.items():
        before: list[str] = []
        for n, f in enumerate(fs[:-1]):
            observations.append(
                Observation(
                    f"{u}:f{n}", u, f.creator, InteractionType.follow, float(n), 0.0, Feed.creators, tuple(before)
                )
            )
            before.append(f.creator)
    cofollow.learn(observations)
    followers = Counter({c: len(us) for c, us in cofollow.followers.items()})
    popular = [c for c, _ in sorted(followers.items(), key=lambda x: (-x[1], x[0]))]
    seconds = {"shared_models": time.perf_counter() - started}

    eligible = [u for u, fs in follows.items() if fs][: users if users is not None else None]
    model = UserModel(user_params)
    catalogue = InMemoryIndex(vectors.shape[1])
    ranks: dict[str, list[int | None]] = {m: [] for m in ("livelens", "popularity", "co-follow", "engaged-most")}
    t = time.perf_counter()
    for start in range(0, len(eligible), p.batch):
        batch = eligible[start : start + p.batch]
        states: list[UserState] = []
        targets: list[str] = []
        last_engaged: list[dict[str, int]] = []
        for u in batch:
            held = follows[u][-1]
            end = held.position
            if p.cutoff == "discovery":
                end = next(n for n, x in enumerate(dataset.sequences[u]) if creator_of.get(x.item_id) == held.creator)
            seq = dataset.sequences[u][:end]
            state = UserState()
            recent: dict[str, int] = {}
            earlier = {f.position: f.creator for f in follows[u][:-1] if f.position < end}
            for pos, x in enumerate(seq):
                creator = creator_of.get(x.item_id, "")
                event = Interaction(f"{u}:{pos}", u, x.item_id, x.type, float(pos), x.value)
                model.learn_one(state, event, vectors[row_of[x.item_id]], creator)
                recent[creator] = pos
                if pos in earlier:
                    state.follows[earlier[pos]] = float(pos)
            states.append(state)
            targets.append(held.creator)
            last_engaged.append(recent)
        contexts = [user_context(u, s, model) for u, s in zip(batch, states, strict=True)]
        lists = rank_creators(signals, RankRequest(Feed.creators, contexts, 0.0, catalogue), cp)
        view = cofollow.read(RankRequest(Feed.creators, contexts, 0.0, catalogue))
        for n, (u, state, target) in enumerate(zip(batch, states, targets, strict=True)):
            ranks["livelens"].append(_rank([r.item_id for r in lists[n]], target))
            exclude = set(state.follows) | {u}
            ranks["popularity"].append(_rank([c for c in popular if c not in exclude][:top], target))
            co = view.scores[n]
            co_order = sorted((c for c in co if c not in exclude), key=lambda c: (-co[c], c))
            co_order += [c for c in popular if c not in exclude and c not in co]
            ranks["co-follow"].append(_rank(co_order[:top], target))
            engaged = {c: row for c, row in state.creators.items() if c not in exclude}
            counts = {c: row[0] + row[1] + row[2] for c, row in engaged.items()}
            e_order = sorted(engaged, key=lambda c: (-counts[c], -last_engaged[n].get(c, -1), c))
            e_order += [c for c in popular if c not in exclude and c not in engaged]
            ranks["engaged-most"].append(_rank(e_order[:top], target))
        if tick is not None:
            tick(len(batch), len(eligible))
    seconds["rank"] = time.perf_counter() - t
    creators = set(creator_of.values())
    return CreatorEvalResult(
        methods={m: summarize(r, ks) for m, r in ranks.items()},
        dataset={
            "name": dataset.name,
            "users_evaluated": len(eligible),
            "users_with_a_follow": sum(1 for fs in follows.values() if fs),
            "users": len(dataset.sequences),
            "items": len(ids),
            "pseudo_creators": len(creators),
            "derived_follows": sum(len(fs) for fs in follows.values()),
            "protocol": p.__dict__,
        },
        seconds=seconds,
    )
