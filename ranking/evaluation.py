"""Offline evaluation with the MicroLens paper's protocol, on the same user-model and ranking code.

Protocol (paper): keep each user's last 13 interactions; leave-one-out with valid = 2nd last and
test = last; rank every item in the catalogue with the user's history masked; HR@K and NDCG@K.
"Strict": global statistics (popularity, co-occurrence) and model state learn only from the
training part (each sequence minus its last two items); when the test item is ranked, the user's
validation item is part of that user's own history, as in the paper.

LiveLens is scored by replaying each user's history through ``OnlineModels.learn_one`` and ranking
with ``OnlineModels.recommend``, the code the interaction agent runs (an exact in-memory index with
Milvus's interface stands in for Milvus). ``streams.kafka_eval`` checks that claim end to end.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ranking.coengagement import CoEngagementParams
from ranking.datasets import Dataset
from ranking.domain import Feed, Interaction, InteractionType
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import UserModel, UserModelParams, UserState

KS = (10, 20)
WARM_START_SEED = 11


@dataclass(frozen=True)
class Protocol:
    keep_last: int = 13
    min_interactions: int = 3
    variant: str = "strict"  # strict | streaming (global stats also absorb every validation event)
    ks: tuple[int, ...] = KS
    target: str = "test"  # test (report) | valid (tune)
    # passes of the next-item model over the training part: 1 = purely online (each training event
    # learned once, in stream order, as the live agent does); more = a warm start before the stream
    warm_epochs: int = 1


@dataclass(frozen=True)
class UserSplit:
    history: tuple[str, ...]  # what the user did before the target (train, plus valid when target=test)
    train: tuple[str, ...]  # the part global statistics may learn from (strict)
    target: str


def split_users(sequences: Mapping[str, Sequence[str]], protocol: Protocol) -> dict[str, UserSplit]:
    out: dict[str, UserSplit] = {}
    for user, seq in sequences.items():
        seq = list(seq)[-protocol.keep_last :]
        if len(seq) < protocol.min_interactions:
            continue
        train, valid, test = tuple(seq[:-2]), seq[-2], seq[-1]
        if protocol.target == "valid":
            out[user] = UserSplit(history=train, train=train, target=valid)
        else:
            stats_part = (*train, valid) if protocol.variant == "streaming" else train
            out[user] = UserSplit(history=(*train, valid), train=stats_part, target=test)
    return out


# --- metrics ---------------------------------------------------------------------------------------
def hit_rate(ranks: Sequence[int | None], k: int) -> float:
    """Share of users whose target is in the top k (rank is 0-based; None = not retrieved)."""
    return sum(1 for r in ranks if r is not None and r < k) / len(ranks) if ranks else 0.0


def ndcg(ranks: Sequence[int | None], k: int) -> float:
    """One relevant item per user: 1/log2(rank+2) when it is in the top k."""
    return sum(1.0 / math.log2(r + 2) for r in ranks if r is not None and r < k) / len(ranks) if ranks else 0.0


def summarize(ranks: Sequence[int | None], ks: Iterable[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = round(hit_rate(ranks, k), 6)
        out[f"NDCG@{k}"] = round(ndcg(ranks, k), 6)
    return out


def rank_of_target(scores: np.ndarray, target: int, masked: Iterable[int]) -> int:
    """0-based position of the target among all unmasked items (ties count against it)."""
    scores = scores.astype(np.float64, copy=True)
    for m in masked:
        scores[m] = -np.inf
    return int((scores > scores[target]).sum() + ((scores == scores[target]).sum() - 1))


# --- baselines -------------------------------------------------------------------------------------
class Catalogue:
    def __init__(self, item_ids: Sequence[str]) -> None:
        self.ids = list(item_ids)
        self.pos = {i: n for n, i in enumerate(self.ids)}


def popularity_scores(splits: Mapping[str, UserSplit], cat: Catalogue) -> np.ndarray:
    counts = np.zeros(len(cat.ids), dtype=np.float64)
    for sp in splits.values():
        for i in sp.train:
            counts[cat.pos[i]] += 1
    return counts


def evaluate_popularity(splits: Mapping[str, UserSplit], cat: Catalogue, ks: Iterable[int]) -> list[int | None]:
    pop = popularity_scores(splits, cat)
    return [rank_of_target(pop, cat.pos[sp.target], (cat.pos[i] for i in sp.history)) for sp in splits.values()]


def evaluate_cooccurrence(splits: Mapping[str, UserSplit], cat: Catalogue, ks: Iterable[int]) -> list[int | None]:
    """Items seen next to the user's last item in training sequences; popularity breaks ties."""
    pop = popularity_scores(splits, cat)
    tiebreak = pop / (pop.max() + 1.0)
    co: dict[int, Counter[int]] = defaultdict(Counter)
    for sp in splits.values():
        seq = [cat.pos[i] for i in sp.train]
        for a, b in itertools.pairwise(seq):
            if a != b:
                co[a][b] += 1
                co[b][a] += 1
    ranks: list[int | None] = []
    for sp in splits.values():
        scores = tiebreak.copy()
        for j, c in co.get(cat.pos[sp.history[-1]], Counter()).items():
            scores[j] += c
        ranks.append(rank_of_target(scores, cat.pos[sp.target], (cat.pos[i] for i in sp.history)))
    return ranks


# --- LiveLens ---------------------------------------------------------------------------------------
def evaluate_livelens(
    splits: Mapping[str, UserSplit],
    index: InMemoryIndex,
    params: UserModelParams,
    ks: Sequence[int],
    event_type: InteractionType = InteractionType.comment,
    progress: Callable[[int], None] | None = None,
    batch: int = 256,
    ranking: RankingParams | None = None,
    models: OnlineModels | None = None,
    warm_epochs: int = 1,
) -> list[int | None]:
    """Replay every history through ``OnlineModels``, then rank with its ``recommend``: the agent's code.

    Pass 1 feeds each user's training part (users in order, each user's events in order) to the shared
    models (co-engagement, trending) exactly as the interaction agent would; pass 2 rebuilds each
    user's state from the whole history with ``shared=False``, so a validation event reaches only its
    own user (strict). Building states twice keeps memory to one chunk of users. ``warm_epochs`` > 1
    gives the next-item model that many passes over the training parts in all (a warm start).
    """
    models = models or OnlineModels(UserModel(params))
    ranking = eval_ranking(ranking, max(ks))
    for user, sp in splits.items():
        replay_user(models, user, sp.train, index, event_type, shared=True)
    warm_start_next_item(models, splits, warm_epochs - 1, params.event_weights.get(event_type, 1.0))
    ranks: list[int | None] = []
    users = list(splits.items())
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        states = [replay_user(models, user, sp.history, index, event_type, shared=False) for user, sp in chunk]
        lists = models.recommend(states, Feed.short_video, index, 0.0, ranking, candidates=ranking.top_k)
        for (_, sp), recs in zip(chunk, lists, strict=True):
            ranked = [r.item_id for r in recs]
            ranks.append(ranked.index(sp.target) if sp.target in ranked else None)
        if progress:
            progress(len(chunk))
    return ranks


def warm_start_next_item(models: OnlineModels, splits: Mapping[str, UserSplit], epochs: int, weight: float) -> None:
    """More passes of the next-item model over every training sequence (context = the preceding items),
    each in a new (seeded) order so that one mini-batch is not one user's sequence; then apply what the
    model buffered, so the ranking sees everything it was given."""
    window = models.next_item.window
    examples = [(sp.train[max(0, n - window) : n], sp.train[n]) for sp in splits.values() for n in range(len(sp.train))]
    rng = random.Random(WARM_START_SEED)
    for _ in range(max(0, epochs)):
        rng.shuffle(examples)
        models.next_item.learn_many(examples, [weight] * len(examples))
    if epochs > 0:  # with none, the model stays exactly as the live agent leaves it (a part-filled buffer)
        models.next_item.flush()


def eval_ranking(ranking: RankingParams | None, top: int) -> RankingParams:
    """Ranking as served, except what the dataset cannot support: it has no upload times, so neither the
    freshness bonus nor the new-items exploration slot means anything here."""
    return replace(ranking or RankingParams(), top_k=top, freshness_weight=0.0, explore_slots=0)


def interaction(user: str, n: int, item_id: str, event_type: InteractionType) -> Interaction:
    """The n-th event of a user's sequence, as the evaluation and the replay through Kafka both send it."""
    return Interaction(event_id=f"{user}:{n}", user_id=user, item_id=item_id, type=event_type, ts=float(n))


def replay_user(
    models: OnlineModels,
    user: str,
    items: Sequence[str],
    index: InMemoryIndex,
    event_type: InteractionType,
    shared: bool,
) -> UserState:
    state = UserState()
    known = index.get(items)
    for n, item_id in enumerate(items):
        item = known.get(item_id)
        if item is not None:
            models.learn_one(state, interaction(user, n, item_id, event_type), item, shared=shared)
    return state


def build_index(dataset: Dataset, vectors: np.ndarray, item_ids: Sequence[str]) -> InMemoryIndex:
    index = InMemoryIndex(vectors.shape[1])
    index.upsert(
        [
            IndexedItem(i, Feed.short_video, False, 0.0, dataset.items[i].title, vectors[n])
            for n, i in enumerate(item_ids)
        ]
    )
    return index


@dataclass
class EvalResult:
    methods: dict[str, dict[str, float]]
    protocol: dict[str, Any]
    dataset: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dataset_splits(dataset: Dataset, protocol: Protocol) -> dict[str, UserSplit]:
    """The protocol's splits of every user whose items are all in the catalogue."""
    sequences = {u: [i.item_id for i in seq] for u, seq in dataset.sequences.items()}
    known = set(dataset.items)
    splits = split_users(sequences, protocol)
    return {u: sp for u, sp in splits.items() if sp.target in known and all(i in known for i in sp.history)}


def run_evaluation(
    dataset: Dataset,
    encode: Callable[[list[str]], np.ndarray],
    params: UserModelParams,
    protocol: Protocol,
    encoder_name: str,
    progress: Callable[[str, int, int], None] | None = None,
    ranking: RankingParams | None = None,
    models: OnlineModels | None = None,
) -> EvalResult:
    """All methods on one split, in one run."""
    splits = dataset_splits(dataset, protocol)
    cat = Catalogue(sorted(dataset.items))
    seconds: dict[str, float] = {}
    methods: dict[str, dict[str, float]] = {}

    t = time.perf_counter()
    methods["popularity"] = summarize(evaluate_popularity(splits, cat, protocol.ks), protocol.ks)
    seconds["popularity"] = time.perf_counter() - t
    t = time.perf_counter()
    methods["cooccurrence"] = summarize(evaluate_cooccurrence(splits, cat, protocol.ks), protocol.ks)
    seconds["cooccurrence"] = time.perf_counter() - t

    t = time.perf_counter()
    titles = [dataset.items[i].title for i in cat.ids]
    vectors = encode(titles)
    seconds["encode_items"] = time.perf_counter() - t
    index = build_index(dataset, vectors, cat.ids)
    t = time.perf_counter()
    tick = (lambda n: progress("livelens", n, len(splits))) if progress else None
    used = models or OnlineModels(UserModel(params))
    methods["livelens"] = summarize(
        evaluate_livelens(
            splits,
            index,
            params,
            protocol.ks,
            progress=tick,
            ranking=ranking,
            models=used,
            warm_epochs=protocol.warm_epochs,
        ),
        protocol.ks,
    )
    seconds["livelens"] = time.perf_counter() - t
    return EvalResult(
        methods=methods,
        protocol={
            **asdict(protocol),
            "encoder": encoder_name,
            "full_ranking": True,
            "history_masked": True,
            "ranking": asdict(eval_ranking(ranking, max(protocol.ks))),
            "co_engagement": asdict(CoEngagementParams()),
            "next_item": {"model": type(used.next_item).__name__, **asdict(used.next_item.params)},
        },
        dataset={"name": dataset.name, "users": len(splits), "items": len(cat.ids)},
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


def write_outputs(result: EvalResult, out_dir: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    ks = list(result.protocol["ks"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("HR", "NDCG"), strict=True):
        for name, values in result.methods.items():
            ax.plot(ks, [values[f"{metric}@{k}"] for k in ks], marker="o", label=name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{result.dataset['name']} ({result.protocol['variant']}, {result.dataset['users']} users)")
    fig.tight_layout()
    plot_path = out_dir / "metrics.png"
    fig.savefig(plot_path, dpi=100)
    plt.close(fig)
    return results_path, plot_path
