"""`livelens eval --through-kafka`: the paper-protocol evaluation, but through the broker and a real worker.

Why: the offline figures are only worth something if the live pipeline computes the same lists. This
replays a subset of users through a LocalStack (embedded broker, Milvus Lite, a worker process): the
catalogue as content events, then each user's history as interaction events in order (event ids and
timestamps exactly as ``ranking.evaluation`` builds them). It reads the lists the worker emits on the
short-video topic and scores them with the same metric functions, beside the in-process evaluation
of the same users on the same item vectors (read back from Milvus, i.e. what the worker indexed).

Training: as everywhere by default, the ranking workers train nothing shared; they log training
records, the trainer (``livelens trainer``) learns them and every worker serves its snapshots. With
``ranking_workers`` N the topics have N partitions (one per worker), so the records reach the trainer
from N partitions in no fixed order. The in-process run learns the stream in its order, labelling
each micro-batch with the models as they stood before it. So the replay is paced: ``pace`` events of
the stream at a time, and before the next step the trainer has learned every record of this one and
every worker serves its snapshot. The trainer thus learns the steps in the stream's order (within a
step, in the order the partitions deliver), and a worker labels with models at most one step stale.

Ordering of the final lists: the worker ranks a user right after learning that user's last event,
while users later in the stream have not been learned yet; the offline run ranks after *all* training
events. So each user's last event is sent a second time once every history is learned and every
worker serves the trainer's final snapshot: a replay (same event id) changes no state (idempotent
``learn_one``) but makes the worker emit a fresh list, computed with the complete shared state. That
second list is what is scored.

Only protocols where the stream and the offline run learn from the same events are supported: the
strict valid target (histories = training parts) and the streaming test target (histories include
the validation item, which the shared models learn too). The strict test target keeps validation
events out of the shared models, which a worker learning from every event cannot reproduce.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranking.datasets import Dataset
from ranking.evaluation import (
    Protocol,
    build_index,
    dataset_splits,
    eval_ranking,
    evaluate_livelens,
    interaction,
    stream_order,
    summarize,
)
from streams.consumer import TopicReader, as_recommendation
from streams.local import LocalStack, training_ends
from streams.params import online_models_from_settings, ranking_params_from_settings, user_model_params_from_settings
from streams.replay import _produce, make_producer
from streams.schemas import ContentEvent, InteractionEvent, InteractionType
from streams.settings import Settings


class UnsupportedProtocol(ValueError):
    pass


@dataclass
class KafkaEvalResult:
    users: int
    items: int
    in_process: dict[str, float]
    through_kafka: dict[str, float]
    ranks_in_process: list[int | None]
    ranks_kafka: list[int | None]
    # Ranks in the list emitted when each user's last event was first processed (before later users
    # were learned): how far the stream's ordering alone moves the figures.
    ranks_kafka_first: list[int | None] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    ranking_workers: int = 1
    pace: int = 0  # stream events per paced step
    trainer_version: int = 0  # events the trainer had learned when the scored lists were ranked

    @property
    def same_rank_users(self) -> int:
        return sum(a == b for a, b in zip(self.ranks_in_process, self.ranks_kafka, strict=True))

    def agreement(self) -> dict[str, Any]:
        """Per metric: both figures, their difference and one standard error of the in-process figure
        (binomial for HR, from the per-user values for NDCG), and whether they agree within it."""
        n = self.users
        out: dict[str, Any] = {"same_rank_users": self.same_rank_users, "same_rank_share": self.same_rank_users / n}
        for metric, value in self.in_process.items():
            k = int(metric.split("@")[1])
            per_user = [
                (1.0 if metric.startswith("HR") else 1.0 / math.log2(r + 2)) if r is not None and r < k else 0.0
                for r in self.ranks_in_process
            ]
            if metric.startswith("HR"):
                p = max(value, 1 / n)  # a figure of 0 still has an uncertainty of about one hit
                se = math.sqrt(p * (1 - p) / n)
            else:
                mean = sum(per_user) / n
                se = math.sqrt(sum((x - mean) ** 2 for x in per_user) / max(n - 1, 1) / n)
            diff = self.through_kafka[metric] - value
            out[metric] = {
                "in_process": value,
                "through_kafka": self.through_kafka[metric],
                "difference": diff,
                "standard_error": se,
                "within_one_se": abs(diff) <= se + 1e-9,
            }
        return out


def check_protocol(protocol: Protocol) -> None:
    if (protocol.target, protocol.variant) not in (("valid", "strict"), ("test", "streaming")):
        raise UnsupportedProtocol(
            "through Kafka the worker learns from every event it receives: use --target valid (strict) or "
            "--target test --variant streaming"
        )


def worker_settings(settings: Settings, protocol: Protocol, ranking_workers: int = 1) -> Settings:
    """The workers rank exactly as ``evaluate_livelens`` does: top max(K), and neither freshness nor the
    exploration slot (the dataset has no upload times); in-memory tables. One partition per worker; the
    trainer on, snapshotting as soon as it has learned something (the paced replay waits for each)."""
    top = max(protocol.ks)
    return settings.model_copy(
        update={
            "top_k": top,
            "freshness_weight": 0.0,
            "explore_slots": 0,
            "table_store": "memory://",
            "partitions": ranking_workers,
            "trainer": True,
            "snapshot_interval_s": 0.2,
            "delta_interval_s": 0.2,
            "kafka_broker": None,
            "milvus_uri": None,
        }
    )


def evaluate_through_kafka(
    settings: Settings,
    dataset: Dataset,
    protocol: Protocol,
    work_dir: Path,
    whole_catalogue: bool = False,
    timeout_s: float = 600.0,
    say: Callable[[str], None] = lambda _: None,
    ranking_workers: int = 1,
    pace: int | None = None,
) -> KafkaEvalResult:
    """Replay ``dataset`` (already cut to the wanted users) through a local stack with the trainer and
    ``ranking_workers`` workers, ``pace`` events per step (module docstring); score both ways."""
    check_protocol(protocol)
    splits = dataset_splits(dataset, protocol)
    if not splits:
        raise ValueError("no user has enough interactions for the protocol")
    if whole_catalogue:
        item_ids = sorted(dataset.items)
    else:
        item_ids = sorted({i for sp in splits.values() for i in (*sp.history, sp.target)})
    s = worker_settings(settings, protocol, ranking_workers)
    pace = pace or s.interaction_batch_size  # lockstep: the trainer learns the stream micro-batch by micro-batch
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    say(f"starting the broker, Milvus Lite, the trainer and {ranking_workers} ranking worker(s)…")
    with LocalStack(s, work_dir, workers=ranking_workers) as stack:
        s = stack.settings
        seconds["start"] = time.perf_counter() - started
        reader = TopicReader(s, [s.topic_recs_short_video], from_beginning=True)
        try:
            reader.wait_assigned()
            t = time.perf_counter()
            say(f"publishing {len(item_ids)} items as content…")
            producer = make_producer(s)
            for item_id in item_ids:
                ev = ContentEvent(item_id=item_id, kind="short_video", title=dataset.items[item_id].title[:1_000])
                _produce(producer, s.topic_content, item_id, ev.model_dump_json())
            producer.flush(60)
            wait_indexed(stack, len(item_ids), timeout_s)
            seconds["index"] = time.perf_counter() - t

            t = time.perf_counter()
            last_event = {u: f"{u}:{len(sp.history) - 1}" for u, sp in splits.items()}
            stream = stream_order(splits, "history")
            say(f"publishing {len(stream)} interactions of {len(splits)} users, {pace} per paced step…")
            base = sum(training_ends(s).values())
            lists: dict[str, list[list[dict[str, Any]]]] = {u: [] for u in last_event}
            for start in range(0, len(stream), pace):
                for user, n, item_id in stream[start : start + pace]:
                    ev = InteractionEvent.from_core(interaction(user, n, item_id, InteractionType.comment))
                    _produce(producer, s.topic_interactions, user, ev.model_dump_json())
                producer.flush(60)
                wait_logged(s, base + min(start + pace, len(stream)), timeout_s)
                stack.wait_models_current(timeout_s, snapshot=True)
                collect(reader, last_event, lists)  # keeps the reader polling (else it leaves its group)
            lists = wait_lists(reader, last_event, 1, timeout_s, lists)
            version = stack.wait_models_current(timeout_s, snapshot=True)
            say(f"every history learned (trainer v{version}); replaying each user's last event for the final lists…")
            for user, sp in splits.items():
                n = len(sp.history) - 1
                ev = InteractionEvent.from_core(interaction(user, n, sp.history[n], InteractionType.comment))
                _produce(producer, s.topic_interactions, user, ev.model_dump_json())
            producer.flush(60)
            lists = wait_lists(reader, last_event, 2, timeout_s, lists)
            seconds["replay"] = time.perf_counter() - t
        finally:
            reader.close()

        t = time.perf_counter()
        vectors = indexed_vectors(s, item_ids)

    def target_rank(items: list[dict[str, Any]], target: str) -> int | None:
        ids = [i["item_id"] for i in items]
        return ids.index(target) if target in ids else None

    ranks_kafka = [target_rank(lists[u][-1], sp.target) for u, sp in splits.items()]
    ranks_first = [target_rank(lists[u][0], sp.target) for u, sp in splits.items()]

    index = build_index(dataset, vectors, item_ids)
    ranks_in = evaluate_livelens(
        splits,
        index,
        user_model_params_from_settings(s),
        protocol.ks,
        models=online_models_from_settings(s, ranking=eval_ranking(ranking_params_from_settings(s), max(protocol.ks))),
        stream_batch=s.interaction_batch_size,
    )
    seconds["in_process"] = time.perf_counter() - t
    return KafkaEvalResult(
        users=len(splits),
        items=len(item_ids),
        in_process=summarize(ranks_in, protocol.ks),
        through_kafka=summarize(ranks_kafka, protocol.ks),
        ranks_in_process=ranks_in,
        ranks_kafka=ranks_kafka,
        ranks_kafka_first=ranks_first,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        ranking_workers=ranking_workers,
        pace=pace,
        trainer_version=version,
    )


def wait_indexed(stack: LocalStack, n: int, timeout_s: float) -> None:
    """Until the workers together indexed ``n`` items and each one's search tier holds them all."""
    deadline = time.monotonic() + timeout_s
    key = "local_index_items" if stack.settings.local_search else None
    while True:
        stats = [w.get("/stats") for w in stack.workers]
        indexed = sum(st.get("livelens_items_indexed", 0) for st in stats)
        if indexed >= n and (key is None or all(st.get(key, n) >= n for st in stats)):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{indexed}/{n} items indexed after {timeout_s}s: {stats}")
        time.sleep(0.2)


def wait_logged(settings: Settings, records: int, timeout_s: float) -> None:
    """Until the workers logged ``records`` training records in all (one per applied event)."""
    deadline = time.monotonic() + timeout_s
    while (logged := sum(training_ends(settings).values())) < records:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{logged}/{records} training records logged after {timeout_s}s")
        time.sleep(0.1)


def indexed_vectors(settings: Settings, item_ids: list[str], batch: int = 1_000) -> np.ndarray:
    """The vectors the worker stored in Milvus, in ``item_ids`` order."""
    from storage.milvus import open_milvus

    client = open_milvus(settings.resolved_milvus_uri(), settings.milvus_token, settings.milvus_timeout_s)
    try:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(item_ids), batch):
            rows = client.get(settings.milvus_collection, ids=item_ids[start : start + batch], output_fields=["vector"])
            found.update({str(r["item_id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows})
    finally:
        client.close()
    return np.stack([found[i] for i in item_ids])


def collect(reader: TopicReader, last_event: dict[str, str], lists: dict[str, list[list[dict[str, Any]]]]) -> None:
    """Take every list already arrived (no wait) into ``lists``: those triggered by a user's last event."""
    while (got := reader.poll(0.0)) is not None:
        rec = as_recommendation(got)
        if rec.user_id in last_event and rec.trigger_event_id == last_event[rec.user_id]:
            lists[rec.user_id].append([i.model_dump() for i in rec.items])


def wait_lists(
    reader: TopicReader,
    last_event: dict[str, str],
    times: int,
    timeout_s: float,
    lists: dict[str, list[list[dict[str, Any]]]] | None = None,
) -> dict[str, list[list[dict[str, Any]]]]:
    """Read until every user has ``times`` lists triggered by their last event (per-user order is kept:
    lists are keyed by user, so one user's lists share a partition)."""
    lists = lists if lists is not None else {u: [] for u in last_event}
    deadline = time.monotonic() + timeout_s
    waiting = {u for u in last_event if len(lists[u]) < times}
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} users still without list #{times} after {timeout_s}s")
        got = reader.poll(0.2)
        if got is None:
            continue
        rec = as_recommendation(got)
        if rec.user_id in last_event and rec.trigger_event_id == last_event[rec.user_id]:
            lists[rec.user_id].append([i.model_dump() for i in rec.items])
            if len(lists[rec.user_id]) >= times:
                waiting.discard(rec.user_id)
    return lists
