"""The plain vocabulary the core speaks: feeds, interaction and content kinds, an interaction, a ranked item.

Why here: ``ranking`` and ``encoders`` are pure code (plain types, numpy/torch) that the shell drives.
The wire formats (``streams.schemas``: pydantic models, JSON schemas) reuse these enums, so there is one
definition of each value, and convert their events into these types at the edge
(``InteractionEvent.to_core``, ``RecommendedItem.from_core``) before calling the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ContentKind(StrEnum):
    short_video = "short_video"
    live_stream = "live_stream"
    music = "music"  # a track: artist as creator_id, lyrics, audio (docs/music.md)


class Feed(StrEnum):
    short_video = "short_video"
    live = "live"
    creators = "creators"  # creators and streamers to follow (``ranking.creators``); its items are creator ids
    music = "music"


class InteractionType(StrEnum):
    view = "view"
    like = "like"
    comment = "comment"
    share = "share"
    gift = "gift"
    skip = "skip"
    follow = "follow"
    unfollow = "unfollow"


def feed_of(kind: ContentKind) -> Feed:
    """The feed an item of this kind is served in."""
    return {ContentKind.live_stream: Feed.live, ContentKind.music: Feed.music}.get(kind, Feed.short_video)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user action on one item; ``value`` is watch seconds for views, amount for gifts (0 otherwise).

    ``event_id`` makes applying it idempotent (``ranking.user_state.UserModel.learn_one``); ``ts`` is the
    event time in Unix seconds, which decays taste and trending.
    """

    event_id: str
    user_id: str
    item_id: str
    type: InteractionType
    ts: float
    value: float = 0.0


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    """One place in a ranked list: the item, its score and the reason shown to the user."""

    item_id: str
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class Follow:
    """A user starts (``on``) or stops following a creator; idempotent by ``event_id`` like an interaction.

    Why apart from ``Interaction``: a follow names a creator, not an indexed item, and a creator never
    seen before is a valid target (their first upload may come later).
    """

    event_id: str
    user_id: str
    creator_id: str
    ts: float
    on: bool = True
