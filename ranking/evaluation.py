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
from ranking.feed_matrix import SearchTierParams
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.online import OnlineModels
from ranking.ranker import Ranker
from ranking.recommender import RankingParams
from ranking.user_state import UserModel, UserModelParams, UserState

KS = (10, 20)
# Alternatives to the default ranker (``--compare-rankers``): each is taught the very same steps on the same
# examples as the served one, and ranks the same candidates, so the comparison is paired and takes one pass.
# Reported as ``ranker:<name>`` beside ``livelens:no_mmr`` (the default's own order, no MMR).
RANKER_ALTERNATIVES: dict[str, dict[str, Any]] = {
    "average_0.99": {"average": 0.99},
    "average_0.999": {"average": 0.999},
    "hidden_128": {"hidden": 128},
    "layers_3": {"layers": 3},
    "lr_3e-3": {"learning_rate": 3e-3},
    "lr_3e-4": {"learning_rate": 3e-4},
    "linear_only": {"hidden": 0},
}
RANK_CHUNK = 256  # users ranked per call in the evaluation (their lists do not depend on it)
WARM_START_SEED = 11


@dataclass(frozen=True)
class Protocol:
    keep_last: int = 13
    min_interactions: int = 3
    variant: str = "strict"  # strict | streaming (global stats also absorb every validation event)
    ks: tuple[int, ...] = KS
    target: str = "test"  # test (report) | valid (tune)


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
# Signals the offline protocol cannot exercise (the datasets have no live items and no creation times),
# reported as n/a with the reason instead of a figure.
NOT_EXERCISED = {
    "live": "the datasets have no live streams",
    "freshness": "the datasets have no creation times",
    "new_items": "the datasets have no creation times (no item is newer than another)",
    "exploration": "the exploration slot draws on new items, which the datasets cannot tell apart",
}
# The column that ranks a signal's candidates on its own (``signal:<name>``).
PRIMARY_COLUMN = {
    "taste": "sim",
    "content": "max_recent",
    "co": "score",
    "next_item": "logit",
    "neighbours": "score",
    "trending": "scaled",
}


@dataclass
class LiveLensRun:
    """What one LiveLens pass measured: the served lists' ranks, each signal alone, candidate recall."""

    ranks: list[int | None] = field(default_factory=list)
    signal_ranks: dict[str, list[int | None]] = field(default_factory=dict)
    unshaped_ranks: list[int | None] = field(default_factory=list)  # the ranker's own order: no MMR
    shadow_ranks: dict[str, list[int | None]] = field(default_factory=dict)  # RANKER_ALTERNATIVES, no MMR
    in_candidates: int = 0
    candidate_count: int = 0
    by_source_hits: dict[str, int] = field(default_factory=dict)
    by_source_count: dict[str, int] = field(default_factory=dict)
    labelled: int = 0

    def candidates_report(self) -> dict[str, Any]:
        users = max(1, len(self.ranks))
        return {
            "target_in_candidates": round(self.in_candidates / users, 6),
            "mean_candidates": round(self.candidate_count / users, 2),
            "by_source": {
                s: {
                    "target_in_candidates": round(self.by_source_hits.get(s, 0) / users, 6),
                    "mean_candidates": round(self.by_source_count.get(s, 0) / users, 2),
                }
                for s in self.by_source_count
            },
        }


def stream_order(splits: Mapping[str, UserSplit], part: str = "train") -> list[tuple[str, int, str]]:
    """(user, position, item) of every event of every user's ``part`` (train | history) as one stream:
    users interleaved, every user's first event, then every user's second, and so on. Users are active
    side by side as on a live platform, so a micro-batch holds many users (the datasets have no global
    clock; each user's own order is kept)."""
    seqs = [(u, sp.train if part == "train" else sp.history) for u, sp in splits.items()]
    longest = max((len(seq) for _, seq in seqs), default=0)
    return [(u, n, seq[n]) for n in range(longest) for u, seq in seqs if n < len(seq)]


def evaluate_livelens(
    splits: Mapping[str, UserSplit],
    index: InMemoryIndex,
    params: UserModelParams,
    ks: Sequence[int],
    event_type: InteractionType = InteractionType.comment,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    stream_batch: int,
    ranking: RankingParams | None = None,
    models: OnlineModels | None = None,
    run: LiveLensRun | None = None,
) -> list[int | None]:
    """Replay every training event through ``OnlineModels.learn_batch``, then rank with its ``rank``:
    the agent's code and the agent's training schedule.

    Pass 1 feeds the training parts, as one interleaved stream (``stream_order``) in micro-batches of
    ``stream_batch`` events (the worker's ``LIVELENS_INTERACTION_BATCH_SIZE``: what the ranker is
    taught depends on how the stream is cut), to the shared models exactly as the interaction agent
    would: the ranker learns
    from the labelled events on the schedule the worker runs. Pass 2 rebuilds each user's state from
    the whole history with ``shared=False``, so a validation event reaches only its own user (strict),
    and ranks. ``run`` collects candidate recall and each signal's own ranking of the same candidates.
    """
    models = models or OnlineModels(UserModel(params), params=eval_ranking(ranking, max(ks)))
    run = run if run is not None else LiveLensRun()
    stream = stream_order(splits, "train")
    states: dict[str, UserState] = {}
    for start in range(0, len(stream), stream_batch):
        chunk = stream[start : start + stream_batch]
        known = index.get([i for _, _, i in chunk])
        events = [(interaction(u, n, i, event_type), known[i]) for u, n, i in chunk if i in known]
        for ev, _ in events:
            states.setdefault(ev.user_id, UserState())
        models.learn_batch(states, events, index, shared=True)
        if progress:
            progress("train", len(chunk), len(stream))
    run.labelled = models.ranker.examples if models.ranker is not None else 0
    del states
    users = list(splits.items())
    cols = models.columns
    for start in range(0, len(users), RANK_CHUNK):
        chunk = users[start : start + RANK_CHUNK]
        states = {user: UserState() for user, _ in chunk}
        for n in range(max(len(sp.history) for _, sp in chunk)):
            wanted = [(user, sp.history[n]) for user, sp in chunk if n < len(sp.history)]
            known = index.get([i for _, i in wanted])
            events = [(interaction(u, n, i, event_type), known[i]) for u, i in wanted if i in known]
            models.learn_batch(states, events, index, shared=False)
        ranked = models.rank([u for u, _ in chunk], [states[u] for u, _ in chunk], Feed.short_video, index, 0.0)
        shadows = models.schedule.shadows if models.schedule is not None else {}
        shadow_scores = {name: shadow.score(ranked.features) for name, shadow in shadows.items()}
        for m, ((_, sp), recs) in enumerate(zip(chunk, ranked.lists, strict=True)):
            ids = [r.item_id for r in recs]
            run.ranks.append(ids.index(sp.target) if sp.target in ids else None)
            rows = ranked.cands.rows_of(m)
            items = ranked.cands.items[rows.start : rows.stop]
            run.candidate_count += len(items)
            hit = items.index(sp.target) if sp.target in items else None
            run.in_candidates += hit is not None
            run.unshaped_ranks.append(None if hit is None else rank_in(ranked.scores[rows.start : rows.stop], hit))
            for name, scores in shadow_scores.items():
                shadow_rank = None if hit is None else rank_in(scores[rows.start : rows.stop], hit)
                run.shadow_ranks.setdefault(name, []).append(shadow_rank)
            for s_n, source in enumerate(ranked.sources):
                proposed = ranked.cands.sources[rows.start : rows.stop, s_n]
                run.by_source_count[source] = run.by_source_count.get(source, 0) + int(proposed.sum())
                if hit is not None and proposed[hit]:
                    run.by_source_hits[source] = run.by_source_hits.get(source, 0) + 1
            for source, column in PRIMARY_COLUMN.items():
                name = f"{source}.{column}"
                if name not in cols:
                    continue
                if hit is None:
                    run.signal_ranks.setdefault(source, []).append(None)
                    continue
                col = ranked.features[rows.start : rows.stop, cols.index(name)]
                run.signal_ranks.setdefault(source, []).append(rank_in(col, hit))
        if progress:
            progress("rank", len(chunk), len(users))
    return run.ranks


def rank_in(scores: np.ndarray, hit: int) -> int:
    """0-based rank of row ``hit`` when ``scores`` are sorted descending; ties count against it."""
    col = np.asarray(scores, np.float64)
    return int((col > col[hit]).sum() + ((col == col[hit]).sum() - 1))


def eval_ranking(ranking: RankingParams | None, top: int) -> RankingParams:
    """Ranking as served, except what the dataset cannot support: it has no upload times, so neither the
    freshness bonus nor the new-items exploration slot means anything here."""
    return replace(ranking or RankingParams(), top_k=top, freshness_weight=0.0, explore_slots=0)


def interaction(user: str, n: int, item_id: str, event_type: InteractionType) -> Interaction:
    """The n-th event of a user's sequence, as the evaluation and the replay through Kafka both send it."""
    return Interaction(event_id=f"{user}:{n}", user_id=user, item_id=item_id, type=event_type, ts=float(n))


def build_index(
    dataset: Dataset, vectors: np.ndarray, item_ids: Sequence[str], search: SearchTierParams | None = None
) -> InMemoryIndex:
    """The catalogue as an index; ``search``: rank through the worker tier's search (None: exact)."""
    index = InMemoryIndex(vectors.shape[1], search)
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
    candidates: dict[str, Any] = field(default_factory=dict)
    not_exercised: dict[str, str] = field(default_factory=dict)  # method -> why it has no figure (n/a)

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
    *,
    stream_batch: int,
    compare_rankers: bool = False,
    search: SearchTierParams | None = None,
) -> EvalResult:
    """All methods on one split, in one run; ``stream_batch``: the worker's interaction micro-batch;
    ``compare_rankers``: also teach and report ``RANKER_ALTERNATIVES``; ``search``: rank through the worker
    tier's search with these parameters, which is exact below ``exact_below`` items (None: exact)."""
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
    if search is not None and search.searches_exactly(len(cat.ids)):
        search = None  # as the worker's tier at this size: exact
    index = build_index(dataset, vectors, cat.ids, search)
    t = time.perf_counter()
    used = models or OnlineModels(UserModel(params), params=eval_ranking(ranking, max(protocol.ks)))
    run = LiveLensRun()
    if compare_rankers and used.ranker is not None and used.schedule is not None:
        used.schedule.shadows = {
            name: Ranker(used.columns, replace(used.ranker.params, **changes))
            for name, changes in RANKER_ALTERNATIVES.items()
        }
    evaluate_livelens(
        splits, index, params, protocol.ks, progress=progress, models=used, run=run, stream_batch=stream_batch
    )
    methods["livelens"] = summarize(run.ranks, protocol.ks)
    methods["livelens:no_mmr"] = summarize(run.unshaped_ranks, protocol.ks)
    for name, ranks in run.shadow_ranks.items():
        methods[f"ranker:{name}"] = summarize(ranks, protocol.ks)
    for source, ranks in run.signal_ranks.items():
        methods[f"signal:{source}"] = summarize(ranks, protocol.ks)
    seconds["livelens"] = time.perf_counter() - t
    return EvalResult(
        methods=methods,
        protocol={
            **asdict(protocol),
            "encoder": encoder_name,
            "full_ranking": True,
            "history_masked": True,
            "search": asdict(search) if search is not None else "exact",
            "ranking": asdict(used.params),
            "co_engagement": asdict(CoEngagementParams()),
            "next_item": {"model": type(used.next_item).__name__, **asdict(used.next_item.params)},
            "schedule": asdict(used.schedule_params),
            "ranker": {"columns": list(used.columns), "labelled_examples": run.labelled},
            "signals_alone": "each signal's primary column ranks the same candidate set the ranker sees",
            "stream_batch": stream_batch,
        },
        candidates=run.candidates_report(),
        not_exercised={f"signal:{k}" if k != "exploration" else k: v for k, v in NOT_EXERCISED.items()},
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
