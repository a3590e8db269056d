"""Every model the interaction stream updates, and the one path from users' states to ranked lists.

Why one module: the live agent (``streams.handlers``), the offline evaluation and the replay through
Kafka must learn and rank with the same code, or their figures would not be comparable. Pure logic:
the catalogue is injected (Milvus behind the search tier in the worker, an exact in-memory index
offline).

Ranking a feed for a batch of users is array work: each signal is read once for the batch
(``ranking.signal``), proposes candidates, and fills its columns of one feature matrix; the learned
ranker scores every row in one call; each user's best rows are found by partial sort, re-ranked for
diversity (MMR) and the exploration slot; only the kept items become objects, with reasons.
Learning a batch labels the candidates each labelled event's user was ranked just before it (the
event's item is the positive) and hands them to the training schedule (``ranking.training``).

Versions: each ``OnlineModels`` names what ranked a list as ``"<arm>:<config-id>:<events>"``: the A/B arm,
8 hex digits hashing every parameter of the configuration (``ranking.ab.config_id``), and the number of
applied events its shared models have learned. The shared models change with every learned event, so that
count is the version; it depends only on the event sequence (not on how it is cut into micro-batches), so
the same stream gives the same versions in every run. Models live in worker memory: a restart starts
again from 0, as the models themselves do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any

import numpy as np

from ranking.ab import config_id
from ranking.coengagement import CoEngagementParams
from ranking.creators import (
    CreatorParams,
    CreatorVectorsSignal,
    default_creator_signals,
    followed_items,
    followed_reason,
    rank_creators,
)
from ranking.domain import Feed, Follow, Interaction, InteractionType, RecommendedItem
from ranking.index import Index, IndexedItem
from ranking.next_item import NextItemLearner
from ranking.ranker import Example, Ranker, RankerParams, sample_negatives
from ranking.recommender import RankingParams, cold_start, mmr_batch
from ranking.signal import Candidates, Observation, RankRequest, Signal, SignalView, UserContext, looked_up
from ranking.signals import (
    CoEngagementSignal,
    ContentSignal,
    FreshnessSignal,
    LiveSignal,
    NeighboursSignal,
    NewItemsSignal,
    NextItemSignal,
    TasteSignal,
    TrendingSignal,
    explain_similar,
)
from ranking.training import ScheduleParams, TrainingScheduler
from ranking.trending import LiveVelocityParams, TrendingParams
from ranking.user_state import UserModel, UserState

# the signal whose candidates fill the exploration slot
EXPLORE_SOURCE = "new_items"


def positives(state: UserState) -> list[str]:
    """The user's recent items with positive weight, oldest first: the next-item model's context."""
    return [r.item_id for r in state.recent if r.weight > 0]


def user_context(user_id: str, state: UserState, user_model: UserModel) -> UserContext:
    return UserContext(
        user_id=user_id,
        positives=tuple(positives(state)),
        seen=state.seen_items,
        query=user_model.query_vector(state),
        recent=tuple((r.item_id, r.type, r.weight) for r in state.recent),
        follows=state.follows,
        creators=state.creators,
    )


def merge_proposals(request: RankRequest, proposals: Sequence[Sequence[Sequence[str]]], n_src: int) -> Candidates:
    """Each user's proposals of every signal, unseen and servable, merged into candidate rows on arrays.

    Why arrays: a batch holds ~100k proposals; a Python merge per proposal was the largest single cost
    of a micro-batch. Semantics as before: a user's rows keep the order of first proposal (signal order,
    then each signal's order) and each row marks every signal that proposed it.
    """
    n_users = len(request.users)
    flat: list[str] = []
    flat_src: list[int] = []
    counts = np.zeros(n_users, np.int64)
    for n in range(n_users):
        for s, per_signal in enumerate(proposals):
            ids = per_signal[n]
            if not ids:
                continue
            flat.extend(ids)
            flat_src.extend([s] * len(ids))
            counts[n] += len(ids)
    vocab = list(dict.fromkeys(flat))  # distinct ids, in order of first proposal; codes are positions here
    code = dict(zip(vocab, range(len(vocab)), strict=True))
    known = request.items(vocab)
    servable = request.servable_mask(vocab)
    codes = looked_up(code, flat, np.int64)
    srcs = np.asarray(flat_src, np.int64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    width = max(len(vocab), 1)
    keys = users * width + codes
    seen = [n * width + c for n, u in enumerate(request.users) for c in map(code.get, u.seen) if c is not None]
    keep = servable[codes] if len(codes) else np.zeros(0, bool)
    if seen:
        keep &= ~np.isin(keys, np.asarray(seen, np.int64))
    keys, srcs = keys[keep], srcs[keep]
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first proposal order; user-major, as the flat list is
    row_of = np.empty(len(uniq), np.int64)
    row_of[order] = np.arange(len(uniq))
    row_keys = uniq[order]
    user = row_keys // width
    item_codes = row_keys % width
    sources = np.zeros((len(uniq), n_src), bool)
    sources[row_of[inverse.reshape(-1)], srcs] = True
    offsets = np.zeros(n_users + 1, np.int64)
    offsets[1:] = np.cumsum(np.bincount(user, minlength=n_users))
    by_code = np.array(vocab, dtype=object)
    items = by_code[item_codes].tolist()
    dim = next((len(it.vector) for it in known.values()), 1)
    used, idx = np.unique(item_codes, return_inverse=True)
    distinct = by_code[used].tolist()
    rows = list(map(known.__getitem__, distinct))
    unique = np.zeros((0, dim), np.float32)
    if rows:  # one copy from the list (a row assignment per item was a tenth of the merge)
        unique = np.array(list(map(attrgetter("vector"), rows)), dtype=np.float32)
    created = np.fromiter(map(attrgetter("created_at"), rows), np.float64, count=len(rows))
    idx = idx.reshape(-1)
    return Candidates(
        user=user,
        items=items,
        offsets=offsets,
        vectors=None,
        created_at=created[idx] if len(items) else np.zeros(0),
        sources=sources,
        item_vectors=unique,
        vector_rows=idx,
        distinct=distinct,
    )


def is_in(values: np.ndarray, few: np.ndarray) -> np.ndarray:
    """``np.isin(values, few)`` for a handful of ``few`` (a user's top rows): one broadcast comparison,
    without ``np.isin``'s sort (which cost more than the rest of a user's selection)."""
    return (values[:, None] == few[None, :]).any(axis=1)


def default_signals(
    params: RankingParams,
    next_item: NextItemLearner | None = None,
    trending: TrendingParams | None = None,
    live: LiveVelocityParams | None = None,
) -> list[Signal]:
    out: list[Signal] = [
        TasteSignal(),
        ContentSignal(),
        CoEngagementSignal(CoEngagementParams(), recency_decay=params.co_recency_decay, max_bytes=1 << 30),
        NextItemSignal(next_item, warmup=params.seq_warmup_events, max_bytes=256 << 20),
        TrendingSignal(trending),
        LiveSignal(live),
        FreshnessSignal(params.freshness_half_life_s),
        NewItemsSignal(),
    ]
    if params.knn_weight > 0:
        out.insert(4, NeighboursSignal(max_bytes=512 << 20))
    return out


@dataclass
class Ranked:
    """One feed's ranking of a batch of users, kept whole for the evaluation (recall, single signals)."""

    request: RankRequest
    cands: Candidates
    features: np.ndarray
    scores: np.ndarray
    lists: list[list[RecommendedItem]]
    sources: tuple[str, ...]


@dataclass
class ObservedBatch:
    """What a micro-batch changed: per event whether it was applied, the applied events as the shared
    models learn them, and each arm's labelled examples (stream order)."""

    applied: list[bool]
    observations: list[Observation]
    examples: dict[str, list[Example]]


@dataclass
class OnlineModels:
    user_model: UserModel
    params: RankingParams = field(default_factory=RankingParams)
    signals: list[Signal] = field(default_factory=list)
    ranker: Ranker | None = None
    schedule: TrainingScheduler | None = None
    schedule_params: ScheduleParams = field(default_factory=ScheduleParams)
    ranker_params: RankerParams | None = None
    arm: str = "a"
    # what else the configuration depends on (encoder names, ...): part of the config id, never read
    describes: Mapping[str, Any] = field(default_factory=dict)
    # the creators feed's signals (``ranking.creators``): shared like ``signals``, but they rank creators
    creator_params: CreatorParams = field(default_factory=CreatorParams)
    creator_signals: list[Signal] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.signals:
            self.signals = default_signals(self.params)
        if not self.creator_signals:
            self.creator_signals = default_creator_signals(self.creator_params)
        if self.ranker is None:
            # the linear part starts at the hand blend whose weights live in RankingParams, unless the
            # ranker's parameters name a prior of their own
            prior = dict(self.ranker_params.prior) if self.ranker_params else {}
            p = self.params
            prior = prior or {
                "taste.sim": 1.0,
                "co.score": p.co_weight,
                "neighbours.score": p.knn_weight,
                "next_item.z": p.seq_weight,
                "trending.scaled": p.trending_weight,
                "live.velocity": p.live_boost_weight,
                "freshness.fresh": p.freshness_weight,
            }
            self.ranker = Ranker(self.columns, replace(self.ranker_params or RankerParams(), prior=prior))
        if self.schedule is None:
            rehearsed = [s for s in self.signals if hasattr(s, "rehearse")]
            self.schedule = TrainingScheduler(self.ranker, rehearsed, self.schedule_params)  # type: ignore[arg-type]
        self.config_id = config_id(
            self.params,
            self.ranker.params,
            self.schedule.params,
            self.user_model.params,
            [type(s).__name__ for s in self.signals],
            type(getattr(self.signal("next_item"), "model", None)).__name__ if "next_item" in self.sources else "",
            dict(self.describes),
            self.creator_params,
            [type(s).__name__ for s in self.creator_signals],
        )

    # --- version ---------------------------------------------------------------------------------
    @property
    def trained_events(self) -> int:
        """Applied events the shared models have learned: the counter in ``version``."""
        assert self.schedule is not None
        return self.schedule.events

    @property
    def version(self) -> str:
        """``<arm>:<config-id>:<events learned>`` (module docstring): what a list ranked now was ranked with."""
        return f"{self.arm}:{self.config_id}:{self.trained_events}"

    # --- the signals' columns --------------------------------------------------------------------
    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)

    @property
    def columns(self) -> tuple[str, ...]:
        return (
            *(f"{s.name}.{c}" for s in self.signals for c in s.columns),
            *(f"source.{s.name}" for s in self.signals),
        )

    def column_groups(self) -> dict[str, list[int]]:
        """Signal -> the indices of its columns (its feature columns and its source indicator)."""
        cols = self.columns
        return {
            s.name: [n for n, c in enumerate(cols) if c.startswith(f"{s.name}.") or c == f"source.{s.name}"]
            for s in self.signals
        }

    def signal(self, name: str) -> Signal:
        return next(s for s in self.signals if s.name == name)

    @property
    def next_item(self) -> NextItemLearner:
        return self.signal("next_item").model  # type: ignore[attr-defined,no-any-return]

    # --- learning --------------------------------------------------------------------------------
    @property
    def all_signals(self) -> list[Signal]:
        """Every shared model: the item feeds' signals, then the creators feed's."""
        return [*self.signals, *self.creator_signals]

    def creator_signal(self, name: str) -> Signal:
        return next(s for s in self.creator_signals if s.name == name)

    def learn_content(self, items: Sequence[IndexedItem]) -> None:
        for s in self.all_signals:
            s.learn_content(items)  # type: ignore[attr-defined]

    def learn_refresh(self, items: Sequence[IndexedItem]) -> None:
        """Refreshed live streams move their creators' vectors (the item signals learn nothing from it)."""
        self.learn_creator_content(items, refresh=True)

    def learn_creator_content(self, items: Sequence[IndexedItem], refresh: bool = False) -> None:
        """Only the creator signals learn these items: the trainer's path (its item signals never saw
        content before issue 16, and must not start to)."""
        for s in self.creator_signals:
            if isinstance(s, CreatorVectorsSignal):
                if refresh:
                    s.learn_refresh(items)
                else:
                    s.learn_content(items)

    def end_live(self, item_id: str) -> None:
        """An ended stream leaves every signal at once."""
        for s in self.signals:
            s.forget(item_id)

    def learn_batch(
        self,
        users: Mapping[str, UserState],
        events: Sequence[tuple[Interaction, IndexedItem]],
        catalogue: Index | None,
        shared: bool = True,
        peers: Sequence[OnlineModels] = (),
    ) -> list[bool]:
        """Apply a micro-batch of interactions in order; returns, per event, whether it was applied
        (False: a replay of an applied event id, which changes nothing).

        ``shared``: the models every user shares learn too (signals, ranker). Before anything is
        applied, the first labelled event of each user is labelled: the candidates that user was
        ranked from their state before the batch, the event's item as the positive. ``shared=False``
        updates only the users (the strict evaluation keeps validation events out of the models).
        ``peers``: other configurations (A/B arms) whose shared models learn the same events. Each labels
        with its own ranking from the same states before the batch; the user states are updated once, by
        this object's user model (one state per user, whichever arm ranks them).
        """
        learners = [self, *peers] if shared else []
        batch = self.observe_batch(users, events, catalogue, shared=shared, peers=peers)
        for m in learners:
            m.learn_shared(batch.observations, batch.examples[m.arm])
        return batch.applied

    def observe_batch(
        self,
        users: Mapping[str, UserState],
        events: Sequence[tuple[Interaction, IndexedItem]],
        catalogue: Index | None,
        shared: bool = True,
        peers: Sequence[OnlineModels] = (),
    ) -> ObservedBatch:
        """``learn_batch`` without training the shared models: users' states are updated, and what the
        shared models would learn (observations, each arm's labelled examples) is returned. A worker
        whose shared models come from the trainer logs these for it (``ranking.model_log``)."""
        learners = [self, *peers] if shared else []
        if len({m.arm for m in learners}) < len(learners):
            raise ValueError(f"peers need arms of their own, got {[m.arm for m in learners]}")
        examples = {m.arm: m._label(users, events, catalogue) if catalogue is not None else [] for m in learners}
        observations: list[Observation] = []
        applied: list[bool] = []
        for ev, item in events:
            state = users[ev.user_id]
            before = tuple(positives(state))
            ok = self.user_model.learn_one(state, ev, item.vector, item.creator_id)
            applied.append(ok)
            if ok and shared:
                weight = state.recent[-1].weight
                observations.append(
                    Observation(
                        ev.event_id, ev.user_id, ev.item_id, ev.type, ev.ts, weight, item.feed, before, item.vector
                    )
                )
        return ObservedBatch(applied, observations, examples)

    def learn_shared(self, observations: Sequence[Observation], examples: Sequence[Example]) -> None:
        """The shared models learn a batch's applied events and labelled examples (on schedule): in the
        worker without a trainer, or in the trainer from the workers' logged records."""
        self._learn_signals(observations, None)
        assert self.schedule is not None
        self.schedule.add(examples, len(observations))

    def _learn_signals(self, observations: Sequence[Observation], names: Collection[str] | None) -> None:
        """Follow observations (feed ``creators``) go to the creator signals only: an item signal must
        never take a creator id for an item."""
        if not observations:
            return
        items = [o for o in observations if o.feed is not Feed.creators]
        follows = [o for o in observations if o.feed is Feed.creators]
        for s in self.signals:
            if items and (names is None or s.name in names):
                s.learn(items)
        for s in self.creator_signals:  # they learn content apart (``learn_content``), events only as follows
            if follows and (names is None or s.name in names):
                s.learn(follows)

    def observe_follows(
        self, users: Mapping[str, UserState], follows: Sequence[Follow]
    ) -> tuple[list[bool], list[Observation]]:
        """Apply follows and unfollows to the users' states in order; per event whether it was applied,
        and the applied ones as the shared models learn them (context: the user's follows before it)."""
        applied: list[bool] = []
        observations: list[Observation] = []
        for f in follows:
            state = users[f.user_id]
            before = tuple(state.follows)
            ok = self.user_model.learn_follow(state, f)
            applied.append(ok)
            if ok:
                kind = InteractionType.follow if f.on else InteractionType.unfollow
                observations.append(
                    Observation(f.event_id, f.user_id, f.creator_id, kind, f.ts, 0.0, Feed.creators, before)
                )
        return applied, observations

    def learn_follows(
        self, users: Mapping[str, UserState], follows: Sequence[Follow], shared: bool = True
    ) -> list[bool]:
        """``observe_follows``, and (``shared``) the shared models learn them: without a trainer, offline."""
        applied, observations = self.observe_follows(users, follows)
        if shared:
            self.learn_shared(observations, [])
        return applied

    # --- serving the trainer's models --------------------------------------------------------------
    def shared_snapshot(self) -> dict[str, bytes]:
        """Every signal's and the ranker's snapshot by name: what the trainer publishes."""
        assert self.ranker is not None
        return {**{s.name: s.snapshot() for s in self.all_signals}, "ranker": self.ranker.snapshot()}

    def restore_shared(self, models: Mapping[str, bytes], events: int) -> None:
        """Load a snapshot set into this (fresh, unserved) object; its version counter becomes ``events``."""
        assert self.ranker is not None and self.schedule is not None
        missing = {*(s.name for s in self.all_signals), "ranker"} - set(models)
        if missing:
            raise ValueError(f"snapshot set lacks {sorted(missing)}")
        for s in self.all_signals:
            s.restore(models[s.name])
        self.ranker.restore(models["ranker"])
        self.schedule.events = events

    def adopt(self, other: OnlineModels, keep: Collection[str] = ()) -> None:
        """Serve ``other``'s shared models (restored from the trainer) from now on, in one step between
        micro-batches, so a list is always ranked by one version; signals named in ``keep`` stay this
        object's (fed by this process, e.g. ``new_items`` from the content stream)."""
        if other.config_id != self.config_id:
            raise ValueError(f"configuration {other.config_id} cannot replace {self.config_id}")
        signals = [
            mine if mine.name in keep else theirs for mine, theirs in zip(self.signals, other.signals, strict=True)
        ]
        creators = [
            mine if mine.name in keep else theirs
            for mine, theirs in zip(self.creator_signals, other.creator_signals, strict=True)
        ]
        self.signals, self.ranker, self.schedule = signals, other.ranker, other.schedule
        self.creator_signals = creators

    def learn_counts(self, observations: Sequence[Observation], names: Collection[str]) -> None:
        """A trainer's delta: only the named (count) signals learn; the version and the ranker stay."""
        self._learn_signals(observations, names)

    def learn_one(self, state: UserState, event: Interaction, item: IndexedItem, shared: bool = True) -> bool:
        """``learn_batch`` of one event for one user, without a catalogue: nothing is labelled."""
        return self.learn_batch({event.user_id: state}, [(event, item)], None, shared=shared)[0]

    def _label(
        self,
        users: Mapping[str, UserState],
        events: Sequence[tuple[Interaction, IndexedItem]],
        catalogue: Index,
    ) -> list[Example]:
        assert self.schedule is not None
        chosen: dict[Feed, list[tuple[Interaction, str]]] = {}
        taken: set[str] = set()
        for ev, item in events:
            if ev.user_id in taken:
                continue
            taken.add(ev.user_id)
            state = users[ev.user_id]
            if state.has_applied(ev.event_id) or ev.item_id in state.seen_items or state.long_term is None:
                continue
            if self.user_model.params.event_weights.get(ev.type, 0.0) <= 0 or not self.schedule.wants_label(
                ev.event_id
            ):
                continue
            chosen.setdefault(item.feed, []).append((ev, ev.item_id))
        examples: list[Example] = []
        keep = self.schedule.params.negatives
        for feed, wanted in chosen.items():
            ranked = self.rank(
                [ev.user_id for ev, _ in wanted],
                [users[ev.user_id] for ev, _ in wanted],
                feed,
                catalogue,
                wanted[0][0].ts,
            )
            for n, (ev, target) in enumerate(wanted):
                rows = ranked.cands.rows_of(n)
                items = ranked.cands.items[rows.start : rows.stop]
                if target not in items:
                    continue
                pick = sample_negatives(ev.event_id, len(items), items.index(target), keep)
                examples.append(Example(ev.event_id, ranked.features[rows.start + pick].astype(np.float16)))
        order = {ev.event_id: n for n, (ev, _) in enumerate(events)}
        examples.sort(key=lambda e: order[e.event_id])
        return examples

    # --- ranking ---------------------------------------------------------------------------------
    def candidates(self, request: RankRequest, views: Sequence[SignalView]) -> Candidates:
        """Every signal's proposals per user, unseen and servable, merged (first proposer's order kept)."""
        p = self.params
        limits = {
            "taste": p.content_candidates,
            "content": p.content_candidates // 2,
            "co": p.co_candidates,
            "neighbours": p.co_candidates,
            "next_item": p.seq_candidates,
            "trending": p.trending_candidates,
            "live": p.trending_candidates,
            EXPLORE_SOURCE: p.explore_slots + p.top_k if p.explore_slots else 0,
        }
        proposals = [v.candidates(limits.get(s.name, 0)) for s, v in zip(self.signals, views, strict=True)]
        return merge_proposals(request, proposals, len(self.signals))

    def rank(
        self,
        user_ids: Sequence[str],
        states: Sequence[UserState],
        feed: Feed,
        catalogue: Index,
        now: float,
        explain: bool = True,
    ) -> Ranked:
        """Candidates, features, scores and (``explain``) the explained lists of a batch of users for one feed."""
        contexts = [user_context(u, s, self.user_model) for u, s in zip(user_ids, states, strict=True)]
        return self.rank_contexts(contexts, feed, catalogue, now, explain)

    def rank_contexts(
        self, contexts: list[UserContext], feed: Feed, catalogue: Index, now: float, explain: bool = True
    ) -> Ranked:
        """``rank`` for users already read into contexts."""
        assert self.ranker is not None
        request = RankRequest(feed, contexts, now, catalogue)
        views = [s.read(request) for s in self.signals]
        cands = self.candidates(request, views)
        parts = [
            np.asarray(v.features(cands), np.float32).reshape(len(cands), len(s.columns))
            for s, v in zip(self.signals, views, strict=True)
        ]
        features = np.concatenate([*parts, cands.sources.astype(np.float32)], axis=1)
        scores = self.ranker.score(features)
        lists: list[list[RecommendedItem]] = []
        if explain:
            kept = self._keep_all(cands, features, scores, len(request.users))
            lists = self._explained(request, views, cands, features, scores, kept)
        return Ranked(request, cands, features, scores, lists, self.sources)

    def _keep_all(
        self, cands: Candidates, features: np.ndarray, scores: np.ndarray, n_users: int
    ) -> list[tuple[list[int], list[int]]]:
        """Every user's kept rows (by merit, exploration): best rows by partial sort, the exploration
        slot, then MMR over all users' pools at once (``mmr_batch``)."""
        p = self.params
        slots = min(p.explore_slots, p.top_k)
        explore_on = bool(slots) and EXPLORE_SOURCE in self.sources
        col = self.columns.index(f"{EXPLORE_SOURCE}.rank") if explore_on else 0
        src = self.sources.index(EXPLORE_SOURCE) if explore_on else 0
        pools: list[np.ndarray] = []
        explores: list[list[int]] = []
        for n in range(n_users):
            start, stop = int(cands.offsets[n]), int(cands.offsets[n + 1])
            user_scores = scores[start:stop]
            if not len(user_scores):
                pools.append(np.zeros(0, np.int64))
                explores.append([])
                continue
            pool_n = min(len(user_scores), max(p.mmr_pool, p.top_k))
            top = np.argpartition(-user_scores, pool_n - 1)[:pool_n]
            top = top[np.lexsort((top, -user_scores[top]))]
            explore: list[int] = []
            if explore_on:
                # rows of the exploration source not already earned on merit, by its rank column (stable)
                fresh = np.flatnonzero(cands.sources[start:stop, src])
                fresh = fresh[~is_in(fresh, top[: p.top_k - slots])]
                fresh = fresh[np.argsort(-features[start + fresh, col], kind="stable")]
                explore = (start + fresh[:slots]).tolist()
            rows = start + top
            if explore:
                rows = rows[~is_in(rows, np.asarray(explore, np.int64))]
            pools.append(rows)
            explores.append(explore)
        ks = [p.top_k - len(e) for e in explores]
        if p.mmr_lambda < 1.0:
            k = max(ks, default=0)
            picked = mmr_batch([scores[r] for r in pools], [cands.vectors_of(r) for r in pools], p.mmr_lambda, k)
            chosen = [pool[pick[:kn]].tolist() for pool, pick, kn in zip(pools, picked, ks, strict=True)]
        else:
            chosen = [pool[:kn].tolist() for pool, kn in zip(pools, ks, strict=True)]
        return list(zip(chosen, explores, strict=True))

    def _explained(
        self,
        request: RankRequest,
        views: Sequence[SignalView],
        cands: Candidates,
        features: np.ndarray,
        scores: np.ndarray,
        kept: Sequence[tuple[list[int], list[int]]],
    ) -> list[list[RecommendedItem]]:
        """The kept rows as items, each with the reason of the signal that contributed most to its score
        (one contributions call for every kept row of the batch)."""
        assert self.ranker is not None
        flat = [r for chosen, explore in kept for r in (*chosen, *explore)]
        contrib = self.ranker.contributions(features[flat], self.column_groups()) if flat else {}
        names = list(contrib)
        table = np.stack([contrib[g] for g in names], axis=1) if names else np.zeros((len(flat), 0))
        # per kept row, the groups that raised its score, most first (one sort for the whole batch)
        order = np.argsort(-table, axis=1, kind="stable")
        raised = np.take_along_axis(table, order, axis=1) > 0
        group_views = [views[self.sources.index(g)] for g in names]
        out: list[list[RecommendedItem]] = []
        m = 0
        for n, (chosen, explore) in enumerate(kept):
            items = []
            for r in chosen:
                item = cands.items[r]
                reason = None
                for g, up in zip(order[m].tolist(), raised[m].tolist(), strict=True):
                    if not up:
                        break
                    reason = group_views[g].reason(n, item)
                    if reason:
                        break
                m += 1
                reason = reason or explain_similar(request, n, item)
                items.append(RecommendedItem(item_id=item, score=round(float(scores[r]), 6), reason=reason))
            for r in explore:
                m += 1
                items.append(RecommendedItem(item_id=cands.items[r], score=round(float(scores[r]), 6), reason="new"))
            out.append(items)
        return out

    def recommend(
        self,
        users: Sequence[UserState],
        feed: Feed,
        index: Index,
        now: float,
        user_ids: Sequence[str] | None = None,
        pushed: Mapping[int, Sequence[tuple[str, str]]] | None = None,
    ) -> list[list[RecommendedItem]]:
        """One list per user for one feed. A user without a taste vector yet (unknown, or only skips)
        gets the cold-start list: trending in the feed, then the newest items.

        The creators feed ranks creators (``ranking.creators.rank_creators``). In the item feeds, the
        items of followed creators come first (:meth:`with_followed`); ``pushed`` adds, per user index,
        (item, creator) pairs a fan-out names, in case this worker's creator vectors have not seen them yet."""
        ids = list(user_ids) if user_ids is not None else [f"user-{n}" for n in range(len(users))]
        if feed is Feed.creators:
            contexts = [user_context(u, s, self.user_model) for u, s in zip(ids, users, strict=True)]
            request = RankRequest(feed, contexts, now, index)
            return rank_creators(self.creator_signals, request, replace(self.creator_params, top_k=self.params.top_k))
        lists = self._recommend_items(users, feed, index, now, ids)
        return self.with_followed(lists, users, feed, index, now, pushed or {})

    def with_followed(
        self,
        lists: list[list[RecommendedItem]],
        users: Sequence[UserState],
        feed: Feed,
        index: Index,
        now: float,
        pushed: Mapping[int, Sequence[tuple[str, str]]],
    ) -> list[list[RecommendedItem]]:
        """Each list with the user's followed creators' new items (live streams on the live feed) first,
        at most ``followed_slots``, each with the reason "new from X, whom you follow"; unseen and servable."""
        p = self.creator_params
        model = self.creator_signal("creators").model  # type: ignore[attr-defined]
        wanted: dict[int, list[tuple[str, str]]] = {}
        for n, state in enumerate(users):
            found = [(i, c) for i, c in pushed.get(n, ()) if c in state.follows]
            if state.follows:
                found += [(i, c) for i, c, _ in followed_items(model, state.follows, feed, now, p.followed_window_s)]
            seen = state.seen_items
            found = [(i, c) for i, c in dict(found).items() if i not in seen]
            if found:
                wanted[n] = found
        if not wanted:
            return lists
        request = RankRequest(feed, [], now, index)
        request.items([i for pairs in wanted.values() for i, _ in pairs])
        out = list(lists)
        for n, pairs in wanted.items():
            servable = [(i, c) for i, c in pairs if request.servable(i)][: p.followed_slots]
            best = max((r.score for r in lists[n]), default=0.0)  # scores stay in list order
            top = [
                RecommendedItem(item_id=i, score=round(best + len(servable) - k, 6), reason=followed_reason(feed, c))
                for k, (i, c) in enumerate(servable)
            ]
            if top:
                firsts = {r.item_id for r in top}
                out[n] = (top + [r for r in lists[n] if r.item_id not in firsts])[: self.params.top_k]
        return out

    def _recommend_items(
        self, users: Sequence[UserState], feed: Feed, index: Index, now: float, ids: list[str]
    ) -> list[list[RecommendedItem]]:
        contexts = [user_context(u, s, self.user_model) for u, s in zip(ids, users, strict=True)]
        warm = [n for n, c in enumerate(contexts) if c.query is not None]
        out: list[list[RecommendedItem]] = [[] for _ in users]
        if warm:
            ranked = self.rank_contexts([contexts[n] for n in warm], feed, index, now)
            for n, lst in zip(warm, ranked.lists, strict=True):
                out[n] = lst
        warm_set = set(warm)
        cold = [n for n in range(len(users)) if n not in warm_set]
        if cold:
            trending = self.signal("trending").model  # type: ignore[attr-defined]
            newest = self.signal(EXPLORE_SOURCE).model  # type: ignore[attr-defined]
            p = self.params
            request = RankRequest(feed, [], now, index)
            top = trending.top(feed, p.trending_candidates + p.top_k)
            new_ids = newest.newest(feed, p.explore_slots + p.top_k)
            request.items([i for i, _ in top] + new_ids)
            top = [(i, s) for i, s in top if request.servable(i)]
            new_ids = [i for i in new_ids if request.servable(i)]
            for n in cold:
                out[n] = cold_start(feed, top, new_ids, users[n].seen_items, p.top_k)
        return out
