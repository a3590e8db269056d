"""What the agents do with a micro-batch, as plain synchronous code over injected services.

Agents run these in an executor thread (model inference and pymilvus calls block), passing in
copies of the table values they need and writing the returned states back on the event loop. So the
handlers are testable without Faust or a broker: give them an index and an encoder.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from encoders.pipeline import MediaPipeline
from ranking.coengagement import CoEngagement
from ranking.index import Hit, IndexedItem
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import UserModel, UserState
from streams.schemas import (
    ContentEvent,
    DeadLetter,
    Event,
    Feed,
    InteractionEvent,
    LiveState,
    LiveStatusEvent,
    Recommendation,
    RejectedEvent,
    parse_event,
)

MODEL_VERSION = "livelens-0.1"
DLQ_PAYLOAD_MAX_BYTES = 256 * 1024


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, inputs: Sequence[str]) -> np.ndarray: ...


class Index(Protocol):
    def upsert(self, items: Sequence[IndexedItem]) -> None: ...
    def get(self, item_ids: Sequence[str]) -> dict[str, IndexedItem]: ...
    def set_live(self, item_id: str, is_live: bool) -> IndexedItem | None: ...
    def search(
        self, queries: Sequence[np.ndarray], feed: Feed, limit: int, with_vectors: bool = False
    ) -> list[list[Hit]]: ...


def dead_letter(source_topic: str, raw: bytes | None, error: RejectedEvent) -> DeadLetter:
    """Wrap a rejected event with its reason and (bounded) original payload."""
    payload = (raw or b"")[:DLQ_PAYLOAD_MAX_BYTES]
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return DeadLetter(
        source_topic=source_topic, reason=error.reason, error=str(error), payload=text, payload_encoding=encoding
    )


@dataclass
class Parsed:
    """A batch split into valid events (with their position in the batch) and dead letters."""

    events: list[tuple[int, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def parse_batch(model: type[Event], topic: str, raws: Sequence[bytes | None]) -> Parsed:
    out: Parsed = Parsed()
    for pos, raw in enumerate(raws):
        try:
            out.events.append((pos, parse_event(model, raw)))
        except RejectedEvent as exc:
            out.dead.append(dead_letter(topic, raw, exc))
    return out


def content_to_items(events: Sequence[ContentEvent], vectors: np.ndarray) -> list[IndexedItem]:
    return [
        IndexedItem(
            item_id=ev.item_id,
            feed=ev.feed,
            is_live=ev.feed is Feed.live,
            created_at=ev.created_at,
            title=ev.title,
            vector=vectors[i],
        )
        for i, ev in enumerate(events)
    ]


@dataclass
class ContentResult:
    items: list[IndexedItem] = field(default_factory=list)
    dead: list[tuple[ContentEvent, RejectedEvent]] = field(default_factory=list)
    media_errors: list[str] = field(default_factory=list)


@dataclass
class InteractionResult:
    states: dict[str, dict[str, Any]]
    recommendations: list[Recommendation]
    dead: list[tuple[int, DeadLetter]]
    duplicates: int = 0


class Handlers:
    def __init__(
        self,
        index: Index,
        encoder: TextEncoder,
        user_model: UserModel,
        ranking: RankingParams,
        candidates: int,
        topics: Mapping[str, str],
        media: MediaPipeline | None = None,
        models: OnlineModels | None = None,
    ) -> None:
        self.index = index
        self.encoder = encoder
        self.user_model = user_model
        self.ranking = ranking
        self.candidates = candidates
        self.topics = topics
        self.media = media
        # Co-engagement, trending, live velocity and new items are learned from this worker's
        # interactions and content (its partitions). Each worker holds its own copy; a changelog-backed
        # global table is the next step for multi-worker deployments.
        self.models = models or OnlineModels(user_model)

    @property
    def co_engagement(self) -> CoEngagement:
        return self.models.co

    # --- content -----------------------------------------------------------------------------
    def index_content(self, events: Sequence[ContentEvent]) -> ContentResult:
        """Encode a batch of new items (text in one forward pass, then each item's media) and upsert them.

        An item whose media path escapes the configured roots is rejected whole (dead letter); media
        that merely fail to decode cost only their modality and are reported in ``media_errors``.
        """
        result = ContentResult()
        if not events:
            return result
        vectors = self.encoder.encode([ev.text() for ev in events])
        kept: list[ContentEvent] = []
        fused: list[np.ndarray] = []
        for ev, text_vector in zip(events, vectors, strict=True):
            if self.media is None:
                kept.append(ev)
                fused.append(text_vector)
                continue
            out = self.media.item_vector(ev, text_vector)
            if "path_outside_roots" in out.media_errors.values():
                err = RejectedEvent("media_path_outside_roots", f"item {ev.item_id!r} names media outside the roots")
                result.dead.append((ev, err))
                continue
            result.media_errors.extend(out.media_errors.values())
            kept.append(ev)
            fused.append(out.vector)
        if kept:
            result.items = content_to_items(kept, np.stack(fused))
            self.index.upsert(result.items)
            self.models.learn_content(result.items)
        return result

    # --- search ------------------------------------------------------------------------------
    def search(self, query: str, feed: Feed, limit: int) -> list[dict[str, Any]]:
        """Keyword/semantic search: the text tower against the same item vectors recommendations use.

        Item vectors are fused into the text space (``encoders.fusion``), so a text query also finds
        items through what their media added. Per-modality scores are not stored yet.
        """
        query = query.strip()
        if not query:
            raise RejectedEvent("empty_query", "the query is empty")
        vector = self.encoder.encode([query])[0]
        hits = self.index.search([vector], feed, limit=limit)[0]
        return [
            {"item_id": h.item_id, "title": h.title, "score": round(h.similarity, 6), "feed": feed.value} for h in hits
        ]

    # --- live status -------------------------------------------------------------------------
    def apply_live_status(self, event: LiveStatusEvent) -> IndexedItem:
        item = self.index.set_live(event.item_id, event.status is LiveState.live)
        if item is None:
            raise RejectedEvent("unknown_item", f"item {event.item_id!r} is not indexed")
        if item.feed is not Feed.live:
            raise RejectedEvent("not_live_stream", f"item {event.item_id!r} is a short video")
        if event.status is LiveState.ended:
            self.models.end_live(event.item_id)
        return item

    # --- interactions ------------------------------------------------------------------------
    def process_interactions(
        self, events: Sequence[tuple[int, InteractionEvent]], states: Mapping[str, dict[str, Any] | None]
    ) -> InteractionResult:
        """Update each user's state in event order, then refresh one list per (user, feed) touched."""
        items = self.index.get([ev.item_id for _, ev in events])
        dead: list[tuple[int, DeadLetter]] = []
        users: dict[str, UserState] = {u: UserState.from_dict(s) for u, s in states.items()}
        last_trigger: dict[tuple[str, Feed], InteractionEvent] = {}
        duplicates = 0
        for pos, ev in events:
            item = items.get(ev.item_id)
            if item is None:
                err = RejectedEvent("unknown_item", f"item {ev.item_id!r} is not indexed")
                dead.append((pos, dead_letter(self.topics["interactions"], ev.model_dump_json().encode(), err)))
                continue
            state = users.setdefault(ev.user_id, UserState())
            if not self.models.learn_one(state, ev, item):
                duplicates += 1
            last_trigger[(ev.user_id, item.feed)] = ev
        recs = self.recommend(users, last_trigger)
        touched = {user for user, _ in last_trigger}
        return InteractionResult(
            states={u: users[u].to_dict() for u in touched}, recommendations=recs, dead=dead, duplicates=duplicates
        )

    def recommend_now(self, user: str, state: Mapping[str, Any] | None, feed: Feed) -> Recommendation:
        """The user's current list for a feed from the latest state (``GET /recommendations``); an
        unknown user (``state`` None) gets the cold-start list: what is trending in that feed."""
        return self.recommend({user: UserState.from_dict(state)}, {(user, feed): None})[0]

    @property
    def model_version(self) -> str:
        return f"{MODEL_VERSION}+{self.encoder.name}"

    def recommend(
        self, users: Mapping[str, UserState], triggers: Mapping[tuple[str, Feed], InteractionEvent | None]
    ) -> list[Recommendation]:
        """One refreshed list per (user, feed); the trigger (if any) is recorded for freshness.

        Ranking is ``OnlineModels.recommend``, the code the offline evaluation runs; a user without a
        taste yet (e.g. unknown to ``GET /recommendations``) gets the feed's trending items.
        """
        by_feed: dict[Feed, list[tuple[str, InteractionEvent | None]]] = {}
        for (user, feed), ev in triggers.items():
            by_feed.setdefault(feed, []).append((user, ev))
        out: list[Recommendation] = []
        for feed, wanted in by_feed.items():
            lists = self.models.recommend(
                [users[u] for u, _ in wanted], feed, self.index, time.time(), self.ranking, self.candidates
            )
            for (user, ev), ranked in zip(wanted, lists, strict=True):
                out.append(
                    Recommendation(
                        user_id=user,
                        feed=feed,
                        items=ranked,
                        generated_at=time.time(),
                        trigger_event_id=ev.event_id if ev else None,
                        trigger_ts=ev.ts if ev else None,
                        model_version=self.model_version,
                    )
                )
        return out
