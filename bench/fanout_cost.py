"""What one follower costs a fan-out: records written and the ranking of their list, in process.

``python -m bench.fanout_cost [--followers N] [--items N]``: one creator with N followers, each with a
short history, publishes an item; times ``Handlers.fanout_for`` (the records) and ``process_fanout``
(the followers' lists, in micro-batches of ``LIVELENS_INTERACTION_BATCH_SIZE``) over an exact in-memory
index of random 384-d items, and prints the cost per follower. No broker or Milvus: the cost of the
sends themselves is the record size given.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np

from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import UserModel
from streams.handlers import Handlers
from streams.params import ranking_params_from_settings, user_model_params_from_settings
from streams.schemas import Feed, InteractionEvent
from streams.settings import Settings

DIM = 384


class RandomEncoder:
    name = "random"
    dim = DIM

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        rng = np.random.default_rng(len(inputs))
        v = rng.standard_normal((len(inputs), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--followers", type=int, default=1_000)
    ap.add_argument("--items", type=int, default=20_000)
    args = ap.parse_args()
    s = Settings()
    um = UserModel(user_model_params_from_settings(s))
    ranking: RankingParams = ranking_params_from_settings(s)
    h = Handlers(
        InMemoryIndex(DIM),
        RandomEncoder(),
        um,
        ranking,
        s.candidates,
        {"interactions": "i", "content": "c"},
        models=OnlineModels(um, params=ranking),
    )
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((args.items, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    items = [
        IndexedItem(
            f"i{n}", Feed.short_video, False, time.time() - 3600, f"item {n}", vecs[n], creator_id=f"c{n % 500}"
        )
        for n in range(args.items)
    ]
    h.index.upsert(items)
    h.models.learn_content(items)
    states: dict[str, dict | None] = {}
    events = []
    for u in range(args.followers):
        user = f"u{u}"
        events += [
            (
                0,
                InteractionEvent(
                    event_id=f"{user}-{k}", user_id=user, item_id=f"i{rng.integers(args.items)}", type="like"
                ),
            )
            for k in range(5)
        ]
        events.append((0, InteractionEvent(event_id=f"{user}-f", user_id=user, creator_id="star", type="follow")))
    batch = s.interaction_batch_size
    for start in range(0, len(events), batch * 6):
        states.update(h.process_interactions(events[start : start + batch * 6], states).states)
    new = IndexedItem("fresh", Feed.short_video, False, time.time(), "fresh upload", vecs[0], creator_id="star")
    h.index.upsert([new])
    h.models.learn_content([new])
    t = time.perf_counter()
    fanout = h.fanout_for([new], args.followers, time.time())
    records_s = time.perf_counter() - t
    t = time.perf_counter()
    lists = []
    for start in range(0, len(fanout), batch):
        lists += h.process_fanout(fanout[start : start + batch], states)
    rank_s = time.perf_counter() - t
    first = sum(1 for r in lists if r.items and r.items[0].item_id == "fresh")
    print(
        json.dumps(
            {
                "followers": len(fanout),
                "items": args.items,
                "batch": batch,
                "record_bytes": len(fanout[0].model_dump_json()) if fanout else 0,
                "records_ms_per_follower": round(1000 * records_s / max(1, len(fanout)), 4),
                "ranking_ms_per_follower": round(1000 * rank_s / max(1, len(fanout)), 3),
                "lists_with_the_upload_first": first,
            }
        )
    )


if __name__ == "__main__":
    main()
