"""Event schemas: the contract with producers and consumers.

Every event on a LiveLens topic is JSON matching one of these models. ``livelens schemas`` writes
their JSON Schema files into ``streams/jsonschema/`` for producers in other languages.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from encoders.live import LiveSegment
from ranking import domain
from ranking.domain import ContentKind, Feed, InteractionType, feed_of

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
ShortText = Annotated[str, Field(max_length=4_000)]
Timestamp = Annotated[float, Field(ge=0, allow_inf_nan=False, description="Unix time, seconds")]
MediaPath = Annotated[str, Field(min_length=1, max_length=1_024)]


class LiveState(StrEnum):
    live = "live"
    ended = "ended"


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContentEvent(Event):
    """A new short video, live stream or music track.

    A track (``kind: music``) names its artist as ``creator_id`` (required: playlists space artists apart) and
    may carry ``lyrics``; its ``audio_path`` is analysed for tempo and timbre (``encoders.music``). A track
    without audio is still indexed by its text, with no tempo. ``lyrics`` belong to tracks only.
    """

    item_id: Id
    kind: ContentKind
    title: Annotated[str, Field(min_length=1, max_length=1_000)]
    description: ShortText = ""
    tags: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=50)] = []
    language: Annotated[str, Field(max_length=16)] = "en"
    creator_id: Id | None = None
    created_at: Timestamp = Field(default_factory=time.time)
    cover_path: MediaPath | None = None
    keyframe_paths: Annotated[list[MediaPath], Field(max_length=64)] = []
    video_path: MediaPath | None = None
    audio_path: MediaPath | None = None
    lyrics: Annotated[str, Field(max_length=20_000)] = ""

    @model_validator(mode="after")
    def _music_fields(self) -> ContentEvent:
        if self.kind is ContentKind.music and self.creator_id is None:
            raise ValueError("a music track needs creator_id (its artist)")
        if self.lyrics and self.kind is not ContentKind.music:
            raise ValueError(f"lyrics belong to music tracks, not {self.kind.value}")
        return self

    @property
    def feed(self) -> Feed:
        return feed_of(self.kind)

    @property
    def is_live_music(self) -> bool:
        """A live stream tagged ``music``: playlists may include it while it is live (docs/music.md)."""
        return self.kind is ContentKind.live_stream and any(t.lower() == "music" for t in self.tags)

    def text(self) -> str:
        """What the text encoder reads: title, description, hashtags and, for tracks, the lyrics."""
        parts = [self.title, self.description, " ".join(f"#{t}" for t in self.tags), self.lyrics]
        return " ".join(p for p in parts if p).strip()


class LiveStatusEvent(Event):
    """A live stream started or ended; ended streams leave the live feed at once."""

    item_id: Id
    status: LiveState
    viewer_count: Annotated[int, Field(ge=0)] = 0
    ts: Timestamp = Field(default_factory=time.time)


class LiveSegmentEvent(Event):
    """What is happening on a live stream now: new keyframes or audio from a producer, or recent comments.

    Producers publish segments with media paths (confined to the media roots, like content events); the
    interaction agent forwards comments on live streams here, keyed by item id, so the one worker that
    owns a stream's partition refreshes its vector from everything said about it.
    """

    item_id: Id
    ts: Timestamp = Field(default_factory=time.time)
    comments: Annotated[list[ShortText], Field(max_length=100)] = []
    transcript: ShortText = ""
    keyframe_paths: Annotated[list[MediaPath], Field(max_length=64)] = []
    video_path: MediaPath | None = None
    audio_path: MediaPath | None = None

    def to_core(self) -> LiveSegment:
        """The segment as the live-window code (``encoders.live``) takes it."""
        return LiveSegment(
            item_id=self.item_id,
            ts=self.ts,
            comments=tuple(self.comments),
            transcript=self.transcript,
            keyframe_paths=tuple(self.keyframe_paths),
            video_path=self.video_path,
            audio_path=self.audio_path,
        )


FOLLOW_TYPES = (InteractionType.follow, InteractionType.unfollow)


class InteractionEvent(Event):
    """One user action on one item, or a follow/unfollow of a creator; ``value`` is watch seconds for views,
    amount for gifts.

    ``follow`` and ``unfollow`` name a ``creator_id`` (a creator never seen before is valid). A ``follow``
    naming only an ``item_id`` (the form before issue 16) still works: it is an interaction with that item
    and a follow of the item's creator when the index knows one. Every other type names an ``item_id``.
    """

    event_id: Id
    user_id: Id
    item_id: Id | None = None
    creator_id: Id | None = None
    type: InteractionType
    value: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] = 0.0
    comment: ShortText | None = None
    ts: Timestamp = Field(default_factory=time.time)

    @model_validator(mode="after")
    def _names_its_target(self) -> InteractionEvent:
        if self.type in FOLLOW_TYPES:
            if self.creator_id is None and self.item_id is None:
                raise ValueError(f"a {self.type.value} names a creator_id")
        else:
            if self.item_id is None:
                raise ValueError(f"a {self.type.value} names an item_id")
            if self.creator_id is not None:
                raise ValueError("creator_id is for follow and unfollow events only")
        return self

    @property
    def names_creator(self) -> bool:
        """A follow or unfollow of a creator named by id (not through an item)."""
        return self.type in FOLLOW_TYPES and self.creator_id is not None

    def to_follow(self, creator_id: str | None = None, event_id: str | None = None) -> domain.Follow:
        """The follow as the core applies it (``creator_id``: resolved from the item, for the older form)."""
        creator = creator_id or self.creator_id
        if creator is None:
            raise ValueError("a follow without a creator")
        return domain.Follow(
            event_id=event_id or self.event_id,
            user_id=self.user_id,
            creator_id=creator,
            ts=self.ts,
            on=self.type is not InteractionType.unfollow,
        )

    def to_core(self) -> domain.Interaction:
        """The event as the core learns from it (``ranking.domain.Interaction``); ``comment`` stays here."""
        if self.item_id is None:
            raise ValueError(f"event {self.event_id!r} names no item")
        return domain.Interaction(
            event_id=self.event_id,
            user_id=self.user_id,
            item_id=self.item_id,
            type=self.type,
            ts=self.ts,
            value=self.value,
        )

    @classmethod
    def from_core(cls, interaction: domain.Interaction) -> InteractionEvent:
        """The wire event for a core interaction (validated: ids must fit the schema)."""
        return cls(
            event_id=interaction.event_id,
            user_id=interaction.user_id,
            item_id=interaction.item_id,
            type=interaction.type,
            value=interaction.value,
            ts=interaction.ts,
        )


class FanOutEvent(Event):
    """A followed creator published an item or went live: refresh this follower's list for that feed.

    Written by the worker that indexed the item (or applied the live status) to ``livelens.fanout``, one
    per follower up to ``LIVELENS_FANOUT_MAX_FOLLOWERS``, keyed by the follower, so the worker holding
    the follower's state refreshes and emits their list without any event from them.
    """

    event_id: Id
    user_id: Id
    creator_id: Id
    item_id: Id
    feed: Literal[Feed.short_video, Feed.live]
    ts: Timestamp = Field(default_factory=time.time)


class RecommendedItem(Event):
    item_id: Id
    score: float
    reason: str

    @classmethod
    def from_core(cls, item: domain.RecommendedItem) -> RecommendedItem:
        """The wire form of one place in a ranked list (``ranking.domain.RecommendedItem``)."""
        return cls(item_id=item.item_id, score=item.score, reason=item.reason)


class Recommendation(Event):
    """A refreshed ranked list for one user and one feed, keyed by user_id on the feed's topic."""

    user_id: Id
    feed: Feed
    items: list[RecommendedItem]
    generated_at: Timestamp
    trigger_event_id: Id | None = None
    model_version: Annotated[
        str,
        Field(
            pattern=r"^[a-z]+:[0-9a-f]{8}:[0-9]+$",
            description="What ranked this list: '<arm>:<config-id>:<events learned>', the A/B arm, 8 hex digits "
            "naming the model configuration, and how many events its shared models had learned (0 after a restart).",
            examples=["a:3f9c1a2b:1234"],
        ),
    ]
    # Interaction ts of the trigger, so consumers can measure event-to-recommendation freshness.
    trigger_ts: Timestamp | None = None


class DeadLetter(Event):
    """A rejected event: where it came from, why, and the original bytes (as text if decodable)."""

    source_topic: str
    reason: str
    error: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    ts: Timestamp = Field(default_factory=time.time)

    @field_validator("error")
    @classmethod
    def _bounded(cls, v: str) -> str:
        return v[:2_000]


class RejectedEvent(ValueError):
    """Why an input event cannot be processed; ``reason`` is a short, low-cardinality label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


MAX_EVENT_BYTES = 256 * 1024
E = TypeVar("E", bound="Event")


def parse_event(model: type[E], raw: bytes | str | dict[str, Any] | None) -> E:
    """Decode and validate one raw event, raising ``RejectedEvent`` with a reason label."""
    if raw is None:
        raise RejectedEvent("empty", "event has no value")
    if isinstance(raw, dict):
        data: Any = raw
    else:
        if len(raw) > MAX_EVENT_BYTES:
            raise RejectedEvent("oversized", f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            raise RejectedEvent("invalid_utf8", str(exc)) from exc
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as exc:
            raise RejectedEvent("invalid_json", str(exc)) from exc
        except RecursionError as exc:  # e.g. 100k nested "[": the decoder recurses per level
            raise RejectedEvent("invalid_json", "nested too deeply") from exc
    if not isinstance(data, dict):
        raise RejectedEvent("schema", f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "event"
        raise RejectedEvent("schema", f"{where}: {first.get('msg')} ({exc.error_count()} error(s))") from exc


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not valid JSON")


SCHEMA_MODELS: dict[str, type[Event]] = {
    "content": ContentEvent,
    "live_status": LiveStatusEvent,
    "interaction": InteractionEvent,
    "live_segment": LiveSegmentEvent,
    "fanout": FanOutEvent,
    "recommendation": Recommendation,
    "dead_letter": DeadLetter,
}

JSONSCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in SCHEMA_MODELS.items()}


def write_json_schemas(directory: Path = JSONSCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
