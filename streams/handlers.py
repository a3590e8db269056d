"""What the agents do with a micro-batch, as plain synchronous code over injected services.

Agents run these in an executor thread (model inference and pymilvus calls block), passing in
copies of the table values they need and writing the returned states back on the event loop. So the
handlers are testable without Faust or a broker: give them an index and an encoder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from encoders.fusion import DEFAULT_WEIGHTS, to_common
from encoders.live import LiveWindow, LiveWindows, refreshed_vector
from encoders.pipeline import MediaPipeline
from encoders.video import MediaError, confine_path
from ranking.ab import ArmSplit, LastLists, Tally
from ranking.domain import Feed, Follow, InteractionType
from ranking.index import Index, IndexedItem
from ranking.model_log import encode_record, records_of
from ranking.online import OnlineModels
from ranking.recommender import RankingParams
from ranking.user_state import UserModel, UserState
from storage.modalities import InMemoryModalityStore, ModalityStore
from streams.music import MusicHandlers, check_music_paths
from streams.schemas import (
    ContentEvent,
    DeadLetter,
    Event,
    FanOutEvent,
    InteractionEvent,
    LiveSegmentEvent,
    LiveState,
    LiveStatusEvent,
    Recommendation,
    RecommendedItem,
    RejectedEvent,
    parse_event,
)

DLQ_PAYLOAD_MAX_BYTES = 256 * 1024
# A letter must stay well under the producer's 1 MiB request limit once JSON-escaped.
DLQ_PAYLOAD_MAX_JSON_BYTES = 512 * 1024


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, inputs: Sequence[str]) -> np.ndarray: ...


def dead_letter(source_topic: str, raw: bytes | None, error: RejectedEvent) -> DeadLetter:
    """Wrap a rejected event with its reason and (bounded) original payload.

    Bounded twice: by raw bytes, and by escaped size, because a control character takes 6 bytes in
    the letter's JSON (256 KiB of them became a 1.5 MB letter that the producer refused, killing
    the agent). Each character escapes to at most 6 bytes, so the cut below always fits.
    """
    raw = raw or b""
    payload = raw[:DLQ_PAYLOAD_MAX_BYTES]
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    cut = len(payload) < len(raw)
    if len(json.dumps(text, ensure_ascii=False).encode()) > DLQ_PAYLOAD_MAX_JSON_BYTES:
        cut = True
        text = text[: DLQ_PAYLOAD_MAX_JSON_BYTES // 6 - 2]
        if encoding == "base64":
            text = text[: len(text) - len(text) % 4]
    detail = str(error)
    if cut:
        detail = f"{detail[:1_900]} [payload cut from {len(raw)} bytes]"
    return DeadLetter(
        source_topic=source_topic, reason=error.reason, error=detail, payload=text, payload_encoding=encoding
    )


@dataclass
class Parsed:
    """A batch split into valid events (with their position in the batch) and dead letters."""

    events: list[tuple[int, Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def modality_scores(queries: Mapping[str, np.ndarray], parts: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Query-to-part similarity for each stored part a query exists for (empty for text-only items)."""
    return {m: float(np.dot(queries[m], v)) for m, v in parts.items() if m in queries}


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
            creator_id=ev.creator_id or "",
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
    # the online metric of this batch: per (arm, feed), positive interactions scored against the list
    # their user last got, and those that had no list to be scored against (first since start, evicted)
    online: dict[tuple[str, Feed], Tally] = field(default_factory=dict)
    unscored: dict[tuple[str, Feed], int] = field(default_factory=dict)
    # comments on streams that are live now, to forward to the live-segments topic (keyed by stream)
    live_comments: list[LiveSegmentEvent] = field(default_factory=list)
    # with a trainer: one encoded ``ranking.model_log.TrainingRecord`` per applied event, keyed by user
    training: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class LiveRefresh:
    items: list[IndexedItem] = field(default_factory=list)
    skipped: int = 0  # ended, unknown or nothing usable in the window
    media_errors: list[str] = field(default_factory=list)


class ContentHandlers:
    """The encoder role's operations: index content, fold live segments, re-encode live streams, search.

    ``arms``: the ranking models that learn each new item's vector (``OnlineModels.learn_content``); a
    worker doing both roles shares them with its :class:`RankingHandlers`.
    """

    def __init__(
        self,
        index: Index,
        encoder: TextEncoder,
        topics: Mapping[str, str],
        media: MediaPipeline | None = None,
        modalities: ModalityStore | None = None,
        live_windows: LiveWindows | None = None,
        fusion_weights: Mapping[str, float] | None = None,
        live_refresh_alpha: float = 0.3,
        arms: dict[str, OnlineModels] | None = None,
        music: MusicHandlers | None = None,
    ) -> None:
        self.index = index
        self.encoder = encoder
        self.music = music  # tracks: descriptors, music search, playlists (None: music items are text only)
        self.topics = topics
        self.media = media
        self.modalities: ModalityStore = modalities if modalities is not None else InMemoryModalityStore()
        self.live_windows = live_windows if live_windows is not None else LiveWindows()
        self.fusion_weights = dict(fusion_weights or DEFAULT_WEIGHTS)
        self.live_refresh_alpha = live_refresh_alpha
        self.arms: dict[str, OnlineModels] = arms if arms is not None else {}

    # --- content -----------------------------------------------------------------------------
    def index_content(self, events: Sequence[ContentEvent]) -> ContentResult:
        """Encode a batch of new items (text in one forward pass, media batched across items) and upsert them.

        An item whose media path escapes the configured roots is rejected whole (dead letter); media
        that merely fail to decode cost only their modality and are reported in ``media_errors``.
        """
        result = ContentResult()
        if self.music is not None:
            result.dead.extend(check_music_paths(events, self.music.media_roots))
            rejected = {id(ev) for ev, _ in result.dead}
            events = [ev for ev in events if id(ev) not in rejected]
        if not events:
            return result
        vectors = self.encoder.encode([ev.text() for ev in events])
        kept: list[ContentEvent] = []
        fused: list[np.ndarray] = []
        parts: list[dict[str, np.ndarray]] = []
        if self.media is None:
            kept, fused, parts = list(events), list(vectors), [{} for _ in events]
        else:
            # Media of the whole batch: frames of all items in one image forward, clips in one audio call.
            for ev, out in zip(events, self.media.item_vectors(events, vectors), strict=True):
                if "path_outside_roots" in out.media_errors.values():
                    reason = f"item {ev.item_id!r} names media outside the roots"
                    result.dead.append((ev, RejectedEvent("media_path_outside_roots", reason)))
                    continue
                result.media_errors.extend(out.media_errors.values())
                kept.append(ev)
                fused.append(out.vector)
                parts.append(out.parts if len(out.parts) > 1 else {})
        if kept:
            result.items = content_to_items(kept, np.stack(fused))
            # parts first: an item is searchable once it is in the index, and then it can be explained
            for item, item_parts in zip(result.items, parts, strict=True):
                if item.is_live:
                    item_parts = {**item_parts, "origin": item.vector}
                self.modalities.put(item.item_id, item_parts)
            self.index.upsert(result.items)
            for models in self.arms.values():
                models.learn_content(result.items)
            if self.music is not None:
                text_of = {ev.item_id: vectors[i] for i, ev in enumerate(events)}
                tracks = self.music.index_tracks(kept, text_of)
                result.media_errors.extend(tracks.media_errors)
        return result

    def _search_creators(self, vector: np.ndarray, limit: int) -> list[dict[str, Any]]:
        """Creators whose vector (the decayed mean of their items) best matches the query; the title is
        their latest item's."""
        models = self.arms.get("a")
        if models is None:
            return []
        model = models.creator_signal("creators").model  # type: ignore[attr-defined]
        out = []
        for creator, score in model.search(np.asarray(vector, np.float32)[None], limit)[0]:
            latest = model.recent.get(creator, [])
            out.append(
                {
                    "item_id": creator,
                    "title": latest[-1][3] if latest else creator,
                    "score": round(score, 6),
                    "feed": Feed.creators.value,
                    "matched": "text",
                    "modality_scores": {"text": round(score, 6)},
                }
            )
        return out

    # --- live streams now ----------------------------------------------------------------------
    def add_live_segment(self, event: LiveSegmentEvent) -> bool:
        """Fold a segment or forwarded comments into the stream's window (cheap; no encoding here).

        Media paths are checked against the roots now, so a hostile segment is a dead letter with its
        reason instead of a decode error later.
        """
        if self.media is not None:
            roots = self.media.params.media_roots
            for path in [*event.keyframe_paths, event.video_path, event.audio_path]:
                if path is None:
                    continue
                try:
                    confine_path(path, roots)
                except MediaError as exc:
                    raise RejectedEvent(
                        "media_path_outside_roots" if exc.reason == "path_outside_roots" else "bad_media_path",
                        f"stream {event.item_id!r}: {exc}",
                    ) from exc
        return self.live_windows.add(event.to_core())

    def refresh_live(self, windows: Sequence[LiveWindow]) -> LiveRefresh:
        """Re-encode due live streams from their windows and upsert the blended vectors.

        Comments and transcripts of all due streams go through the text encoder in one batch; each
        stream's new frames/audio through the media pipeline. A stream that ended or is unknown is
        skipped (an ended stream must never come back into the live feed).
        """
        out = LiveRefresh()
        if not windows:
            return out
        items = self.index.get([w.item_id for w in windows])
        live = [w for w in windows if (it := items.get(w.item_id)) is not None and it.is_live]
        out.skipped = len(windows) - len(live)
        if not live:
            return out
        originals = self.modalities.get([w.item_id for w in live])
        texts = [w.text() for w in live]
        with_text = [i for i, t in enumerate(texts) if t]
        text_vectors = self.encoder.encode([texts[i] for i in with_text]) if with_text else np.zeros((0, 1))
        text_of = dict(zip(with_text, text_vectors, strict=True))
        refreshed: list[IndexedItem] = []
        for pos, w in enumerate(live):
            item = items[w.item_id]
            now: dict[str, np.ndarray | None] = {"text": text_of.get(pos)}
            if self.media is not None:
                media, errors = self.media.media_vectors(w)
                out.media_errors.extend(errors.values())
                now.update(media)
            original = originals.get(w.item_id, {}).get("origin", item.vector)
            vector = refreshed_vector(original, now, self.fusion_weights, self.live_refresh_alpha)
            if vector is None:
                out.skipped += 1
                continue
            dim = len(original)
            self.modalities.put(w.item_id, {f"live_{m}": to_common(m, v, dim) for m, v in now.items() if v is not None})
            refreshed.append(item.with_vector(vector))
        if refreshed:
            # re-check just before writing: a stream that ended meanwhile stays ended
            current = self.index.get([it.item_id for it in refreshed], use_cache=False)
            refreshed = [it for it in refreshed if (c := current.get(it.item_id)) is not None and c.is_live]
            self.index.upsert(refreshed)
            for models in self.arms.values():  # the streams' creators move with what is on air now
                models.learn_refresh(refreshed)
        out.items = refreshed
        return out

    # --- search ------------------------------------------------------------------------------
    def search(self, query: str, feed: Feed, limit: int) -> list[dict[str, Any]]:
        """Keyword/semantic search: the text tower against the same item vectors recommendations use.

        Candidates come from the fused vectors (``encoders.fusion``: text is the retrieval space). Each
        hit is then explained by its stored parts: the query's similarity to the item's text, to what a
        live stream's viewers say now (``live_text``) and, when the image tower is text-aligned (CLIP),
        to its frames; ``matched`` names the best. Audio has no text-aligned tower here, so it is never
        the match.
        """
        query = query.strip()
        if not query:
            raise RejectedEvent("empty_query", "the query is empty")
        if feed is Feed.music and self.music is not None:  # words onto descriptors, the rest as text
            return self.music.search(query, limit, self.encoder.encode)
        vector = self.encoder.encode([query])[0]
        if feed is Feed.creators:
            return self._search_creators(vector, limit)
        hits = self.index.search([vector], feed, limit=limit)[0]
        queries: dict[str, np.ndarray] = {"text": vector, "live_text": vector}
        if self.media is not None and hits:
            image_q = self.media.image_query([query], len(vector))
            if image_q is not None:
                queries["image"] = queries["live_image"] = image_q[0]
        parts = self.modalities.get([h.item_id for h in hits]) if hits else {}
        out = []
        for h in hits:
            # a text-only item's fused vector is its text vector
            scores = modality_scores(queries, parts.get(h.item_id, {})) or {"text": h.similarity}
            out.append(
                {
                    "item_id": h.item_id,
                    "title": h.title,
                    "score": round(h.similarity, 6),
                    "feed": feed.value,
                    "matched": max(scores, key=lambda m: scores[m]) if scores else "text",
                    "modality_scores": {m: round(v, 6) for m, v in scores.items()},
                }
            )
        return out


class RankingHandlers:
    """The ranking role's operations: live status changes, interactions into state and lists, and lists now.

    ``live_windows``: the encoder role's windows, forgotten when a stream ends (shared in a worker doing both).
    """

    def __init__(
        self,
        index: Index,
        user_model: UserModel,
        ranking: RankingParams,
        candidates: int,
        topics: Mapping[str, str],
        live_windows: LiveWindows | None = None,
        models: OnlineModels | None = None,
        variant: OnlineModels | None = None,
        split: ArmSplit | None = None,
        online_lists: int = 100_000,
        log_training: bool = False,
    ) -> None:
        self.index = index
        self.user_model = user_model
        self.ranking = ranking
        self.candidates = candidates
        self.topics = topics
        self.live_windows = live_windows if live_windows is not None else LiveWindows()
        # Without a trainer, co-engagement, trending, live velocity, the next-item model and the ranker are
        # learned from this worker's interactions (its partitions), each worker holding its own copy. With
        # one (``log_training``), they come from the trainer, which learns every worker's events.
        self.models = models or OnlineModels(user_model, params=ranking)
        # A/B: arm "b" ranks the users ``split`` sends it; both arms' shared models learn every event.
        # Without a variant there is one arm and ``arm_of`` is never asked.
        self.arms: dict[str, OnlineModels] = {"a": self.models, **({"b": variant} if variant is not None else {})}
        self.split = split if variant is not None and split is not None else ArmSplit(0.0)
        self.last_lists = LastLists(online_lists)
        # True with a trainer (``Settings.trainer``): applied events are logged as training records and the
        # shared models are swapped in from the trainer's snapshots (``streams.model_updates``)
        self.log_training = log_training

    def arm_of(self, user_id: str) -> str:
        return self.split.arm(user_id) if len(self.arms) > 1 else "a"

    # --- live status -------------------------------------------------------------------------
    def apply_live_status(self, event: LiveStatusEvent) -> IndexedItem:
        item = self.index.set_live(event.item_id, event.status is LiveState.live)
        if item is None:
            raise RejectedEvent("unknown_item", f"item {event.item_id!r} is not indexed")
        if item.feed is not Feed.live:
            raise RejectedEvent("not_live_stream", f"item {event.item_id!r} is not a live stream ({item.feed.value})")
        if event.status is LiveState.ended:
            self.live_windows.forget(event.item_id)
            for models in self.arms.values():
                models.end_live(event.item_id)
        return item

    # --- interactions ------------------------------------------------------------------------
    def process_interactions(
        self, events: Sequence[tuple[int, InteractionEvent]], states: Mapping[str, dict[str, Any] | None]
    ) -> InteractionResult:
        """Update each user's state in event order, then refresh one list per (user, feed) touched.

        Each applied positive interaction is first scored against the list its user last got for that feed
        (``ranking.ab.LastLists``: the online HR@K and NDCG@K of the arm that ranked it); the lists of this
        batch are recorded after, so an event is never scored against the list it triggered.
        """
        items = self.index.get([ev.item_id for _, ev in events if ev.item_id is not None and not ev.names_creator])
        dead: list[tuple[int, DeadLetter]] = []
        users: dict[str, UserState] = {u: UserState.from_dict(s) for u, s in states.items()}
        last_trigger: dict[tuple[str, Feed], InteractionEvent] = {}
        comments: dict[str, list[str]] = {}
        known: list[tuple[InteractionEvent, IndexedItem]] = []
        follows: list[tuple[InteractionEvent, Follow]] = []

        def reject(pos: int, ev: InteractionEvent, reason: str, detail: str) -> None:
            err = RejectedEvent(reason, detail)
            dead.append((pos, dead_letter(self.topics["interactions"], ev.model_dump_json().encode(), err)))

        for pos, ev in events:
            if ev.names_creator:
                if ev.creator_id == ev.user_id:
                    reject(pos, ev, "self_follow", f"user {ev.user_id!r} cannot {ev.type.value} themselves")
                    continue
                users.setdefault(ev.user_id, UserState())
                follows.append((ev, ev.to_follow()))
                continue
            item = items.get(ev.item_id or "")
            if item is None:
                reject(pos, ev, "unknown_item", f"item {ev.item_id!r} is not indexed")
                continue
            own = item.creator_id == ev.user_id
            if ev.type is InteractionType.unfollow:  # through an item: only its creator can be unfollowed
                if not item.creator_id or own:
                    reason = "self_follow" if own else "no_creator"
                    reject(pos, ev, reason, f"item {ev.item_id!r} names no creator {ev.user_id!r} can unfollow")
                    continue
                users.setdefault(ev.user_id, UserState())
                follows.append((ev, ev.to_follow(item.creator_id)))
                continue
            users.setdefault(ev.user_id, UserState())
            known.append((ev, item))
            last_trigger[(ev.user_id, item.feed)] = ev
            if ev.type is InteractionType.follow and item.creator_id and not own:  # the older form: and its creator
                follows.append((ev, ev.to_follow(item.creator_id, event_id=f"{ev.event_id}:creator")))
            elif item.creator_id and self._engages(ev):
                last_trigger[(ev.user_id, Feed.creators)] = ev
        for ev, _ in follows:  # what follows change: the creators feed and the live feed (followed streams first)
            last_trigger[(ev.user_id, Feed.creators)] = ev
            last_trigger[(ev.user_id, Feed.live)] = ev
        peers = [m for arm, m in self.arms.items() if arm != "a"]
        core = [(ev.to_core(), item) for ev, item in known]
        observed = self.models.observe_batch(users, core, self.index, peers=peers)
        applied = observed.applied
        followed, follow_observations = self.models.observe_follows(users, [f for _, f in follows])
        observations = [*observed.observations, *follow_observations]
        training: list[tuple[str, bytes]] = []
        if self.log_training:  # the trainer learns these (``streams.trainer``); nothing shared trains here
            records = records_of(observations, observed.examples)
            training = [(r.observation.user_id, encode_record(r)) for r in records]
        else:
            for arm in [self.models, *peers]:
                arm.learn_shared(observations, observed.examples[arm.arm])
        online: dict[tuple[str, Feed], Tally] = {}
        unscored: dict[tuple[str, Feed], int] = {}
        weights = self.models.user_model.params.event_weights
        for (ev, item), ok in zip(known, applied, strict=True):
            if ok and ev.comment and ev.comment.strip() and item.feed is Feed.live and item.is_live:
                comments.setdefault(ev.item_id, []).append(ev.comment.strip())
            if ok and weights.get(ev.type, 0.0) > 0:  # a skip of a recommended item is no success
                outcome = self.last_lists.score(ev.user_id, item.feed, ev.item_id)
                if outcome is None:
                    key = (self.arm_of(ev.user_id), item.feed)
                    unscored[key] = unscored.get(key, 0) + 1
                else:
                    online.setdefault((outcome.arm, outcome.feed), Tally()).add(outcome)
        for (_, f), ok in zip(follows, followed, strict=True):  # the creators feed's online metric: a follow
            if ok and f.on:  # of a creator in the user's last creators list is its hit
                outcome = self.last_lists.score(f.user_id, Feed.creators, f.creator_id)
                if outcome is None:
                    key = (self.arm_of(f.user_id), Feed.creators)
                    unscored[key] = unscored.get(key, 0) + 1
                else:
                    online.setdefault((outcome.arm, outcome.feed), Tally()).add(outcome)
        duplicates = applied.count(False) + sum(
            1 for (ev, f), ok in zip(follows, followed, strict=True) if not ok and f.event_id == ev.event_id
        )
        recs = self.recommend(users, last_trigger)
        for rec in recs:
            self.last_lists.record(rec.user_id, rec.feed, self.arm_of(rec.user_id), [i.item_id for i in rec.items])
        touched = {user for user, _ in last_trigger}
        forwarded = [
            LiveSegmentEvent(item_id=item_id, comments=texts[-100:], ts=time.time())
            for item_id, texts in comments.items()
        ]
        return InteractionResult(
            states={u: users[u].to_dict() for u in touched},
            recommendations=recs,
            dead=dead,
            duplicates=duplicates,
            online=online,
            unscored=unscored,
            live_comments=forwarded,
            training=training,
        )

    def _engages(self, ev: InteractionEvent) -> bool:
        """A gift, a comment or a long watch: it changes the creators the user engaged with."""
        if ev.type in (InteractionType.gift, InteractionType.comment):
            return True
        return ev.type is InteractionType.view and ev.value >= self.user_model.params.watch_seconds_full

    def process_fanout(
        self, events: Sequence[FanOutEvent], states: Mapping[str, dict[str, Any] | None]
    ) -> list[Recommendation]:
        """Refresh and emit followers' lists for a followed creator's new upload or stream gone live.

        No state changes: the item is put first by ``OnlineModels.with_followed`` if the user still
        follows its creator and has not seen it (a follower who unfollowed meanwhile gets a plain list)."""
        users = {u: UserState.from_dict(s) for u, s in states.items()}
        triggers: dict[tuple[str, Feed], FanOutEvent] = {}
        pushed: dict[tuple[str, Feed], list[tuple[str, str]]] = {}
        for ev in events:
            users.setdefault(ev.user_id, UserState())
            triggers[(ev.user_id, Feed(ev.feed))] = ev
            pushed.setdefault((ev.user_id, Feed(ev.feed)), []).append((ev.item_id, ev.creator_id))
        return self.recommend(users, triggers, pushed)

    def fanout_for(self, items: Sequence[IndexedItem], max_followers: int, now: float) -> list[FanOutEvent]:
        """One fan-out record per follower (the most recent ``max_followers`` of each creator) of each item's
        creator: the cap bounds what one upload costs, the rest see it on their next request or event."""
        cofollow = self.models.creator_signal("cofollow")
        out: list[FanOutEvent] = []
        for it in items:
            if not it.creator_id or it.feed is Feed.creators:
                continue
            kind = "live" if it.is_live and it.feed is Feed.live else "new"
            event_id = f"fanout:{it.item_id}:{kind}"
            if len(event_id) > 128:  # the Id bound: a long item id is named by its digest instead
                event_id = f"fanout:{hashlib.sha1(it.item_id.encode()).hexdigest()[:20]}:{kind}"
            for user in cofollow.followers_of(it.creator_id, max_followers):  # type: ignore[attr-defined]
                out.append(
                    FanOutEvent(
                        event_id=event_id,
                        user_id=user,
                        creator_id=it.creator_id,
                        item_id=it.item_id,
                        feed=it.feed,
                        ts=now,
                    )
                )
        return out

    def recommend_now(self, user: str, state: Mapping[str, Any] | None, feed: Feed) -> Recommendation:
        """The user's current list for a feed from the latest state (``GET /recommendations``); an
        unknown user (``state`` None) gets the cold-start list: what is trending in that feed."""
        return self.recommend({user: UserState.from_dict(state)}, {(user, feed): None})[0]

    def recommend(
        self,
        users: Mapping[str, UserState],
        triggers: Mapping[tuple[str, Feed], InteractionEvent | FanOutEvent | None],
        pushed: Mapping[tuple[str, Feed], Sequence[tuple[str, str]]] | None = None,
    ) -> list[Recommendation]:
        """One refreshed list per (user, feed); the trigger (if any) is recorded for freshness.

        Ranking is ``OnlineModels.recommend`` of the user's arm, the code the offline evaluation runs; a
        user without a taste yet (e.g. unknown to ``GET /recommendations``) gets the feed's trending items.
        Each list carries the version of the models that ranked it (``OnlineModels.version``).
        """
        by_arm_feed: dict[tuple[str, Feed], list[tuple[str, InteractionEvent | FanOutEvent | None]]] = {}
        for (user, feed), ev in triggers.items():
            by_arm_feed.setdefault((self.arm_of(user), feed), []).append((user, ev))
        out: list[Recommendation] = []
        for (arm, feed), wanted in by_arm_feed.items():
            models = self.arms[arm]
            version = models.version
            lists = models.recommend(
                [users[u] for u, _ in wanted],
                feed,
                self.index,
                time.time(),
                user_ids=[u for u, _ in wanted],
                pushed={n: pushed[(u, feed)] for n, (u, _) in enumerate(wanted) if (u, feed) in (pushed or {})},
            )
            for (user, ev), ranked in zip(wanted, lists, strict=True):
                out.append(
                    Recommendation(
                        user_id=user,
                        feed=feed,
                        items=[RecommendedItem.from_core(r) for r in ranked],
                        generated_at=time.time(),
                        trigger_event_id=ev.event_id if ev else None,
                        trigger_ts=ev.ts if ev else None,
                        model_version=version,
                    )
                )
        return out


class Handlers(RankingHandlers, ContentHandlers):
    """Both roles' operations over one index, sharing the ranking models and the live windows (a worker
    doing both roles, and the tests)."""

    def __init__(
        self,
        index: Index,
        encoder: TextEncoder,
        user_model: UserModel,
        ranking: RankingParams,
        candidates: int,
        topics: Mapping[str, str],
        media: MediaPipeline | None = None,
        modalities: ModalityStore | None = None,
        live_windows: LiveWindows | None = None,
        fusion_weights: Mapping[str, float] | None = None,
        live_refresh_alpha: float = 0.3,
        models: OnlineModels | None = None,
        variant: OnlineModels | None = None,
        split: ArmSplit | None = None,
        online_lists: int = 100_000,
        log_training: bool = False,
        music: MusicHandlers | None = None,
    ) -> None:
        windows = live_windows if live_windows is not None else LiveWindows()
        RankingHandlers.__init__(
            self,
            index,
            user_model,
            ranking,
            candidates,
            topics,
            live_windows=windows,
            models=models,
            variant=variant,
            split=split,
            online_lists=online_lists,
            log_training=log_training,
        )
        arms = self.arms
        ContentHandlers.__init__(
            self,
            index,
            encoder,
            topics,
            media=media,
            modalities=modalities,
            live_windows=windows,
            fusion_weights=fusion_weights,
            live_refresh_alpha=live_refresh_alpha,
            arms=arms,  # the same dict: a model swapped in by the trainer is the one content teaches
            music=music,
        )

    def playlist(
        self, user_id: str, state: Mapping[str, Any] | None, length: int, seed_item: str | None
    ) -> dict[str, Any]:
        """``GET /playlist/{user}``: an ordered, explained playlist (``streams.music.MusicHandlers.playlist``)."""
        if self.music is None:
            raise RejectedEvent("no_music", "this worker has no track store")
        return self.music.playlist(user_id, state, length, seed_item, self.models.user_model)
