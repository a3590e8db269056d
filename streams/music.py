"""The shell's music operations: analyse and store tracks, search them by words, build playlists.

Plain synchronous code like ``streams.handlers`` (the agents and pages run it in executor threads: the
audio analysis is seconds of librosa DSP per track). The pure parts are ``encoders.music`` (descriptors),
``ranking.music`` (the search vocabulary) and ``ranking.playlist`` (ordering).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.music import MusicParams, TrackDescriptors, analyse_track
from encoders.video import MediaError, confine_path, extract_audio
from ranking.domain import ContentKind, Feed
from ranking.index import Index
from ranking.music import MusicTrack, TrackStore, parse_music_query, search_tracks
from ranking.playlist import Candidate, PlaylistParams, build_playlist
from ranking.user_state import UserModel, UserState, normalized
from streams.schemas import ContentEvent, RejectedEvent

MAX_PLAYLIST_LENGTH = 200
log = logging.getLogger(__name__)


@dataclass
class TrackResult:
    tracks: list[MusicTrack] = field(default_factory=list)
    dead: list[tuple[ContentEvent, RejectedEvent]] = field(default_factory=list)
    media_errors: list[str] = field(default_factory=list)


def check_music_paths(
    events: Sequence[ContentEvent], roots: Sequence[str | Path]
) -> list[tuple[ContentEvent, RejectedEvent]]:
    """Tracks whose audio path leaves the media roots: rejected whole (as the media pipeline does)."""
    dead = []
    for ev in events:
        if ev.kind is ContentKind.music and ev.audio_path is not None:
            try:
                confine_path(ev.audio_path, roots)
            except MediaError as exc:
                if exc.reason == "path_outside_roots":
                    dead.append((ev, RejectedEvent("media_path_outside_roots", f"track {ev.item_id!r}: {exc}")))
    return dead


class MusicHandlers:
    """Tracks into the track store (with descriptors from their audio); music search; playlists."""

    def __init__(
        self,
        index: Index,
        tracks: TrackStore,
        media_roots: Sequence[str | Path],
        params: MusicParams | None = None,
        playlist: PlaylistParams | None = None,
        scan_limit: int = 16_384,
    ) -> None:
        self.index = index
        self.tracks = tracks
        self.media_roots = list(media_roots)
        self.params = params or MusicParams()
        self.playlist_params = playlist or PlaylistParams()
        self.scan_limit = scan_limit

    # --- indexing -----------------------------------------------------------------------------
    def describe(self, ev: ContentEvent) -> tuple[TrackDescriptors | None, str | None]:
        """The track's descriptors from its audio, or (None, reason) when it has none or it cannot be read."""
        if ev.audio_path is None:
            return None, None
        try:
            path = confine_path(ev.audio_path, self.media_roots)
            audio = extract_audio(path, self.params.sample_rate, self.params.max_seconds)
        except MediaError as exc:
            return None, f"music_{exc.reason}"
        try:
            return analyse_track(audio, self.params), None
        except Exception:  # odd audio must cost its descriptors, never the batch (a retried batch would loop)
            log.exception("analysing the audio of track %r failed", ev.item_id)
            return None, "music_analysis_failed"

    def index_tracks(self, events: Sequence[ContentEvent], text_vectors: Mapping[str, np.ndarray]) -> TrackResult:
        """Store the tracks (and live streams tagged music) of a batch that the item index accepted."""
        out = TrackResult()
        rows: list[MusicTrack] = []
        for ev in events:
            if ev.kind is ContentKind.music:
                descriptors, error = self.describe(ev)
                if error:
                    out.media_errors.append(error)
                rows.append(
                    MusicTrack(
                        ev.item_id,
                        ev.creator_id or "",
                        ev.title,
                        ev.created_at,
                        text_vectors.get(ev.item_id),
                        descriptors,
                    )
                )
            elif ev.is_live_music:
                artist = ev.creator_id or f"live:{ev.item_id}"
                rows.append(
                    MusicTrack(ev.item_id, artist, ev.title, ev.created_at, text_vectors.get(ev.item_id), None, True)
                )
        if rows:
            self.tracks.upsert(rows)
        out.tracks = rows
        return out

    # --- search -------------------------------------------------------------------------------
    def search(self, query: str, limit: int, encode: Any) -> list[dict[str, Any]]:
        """Music search: vocabulary words become descriptor conditions, the rest goes through the text encoder."""
        parsed = parse_music_query(query)
        if not parsed.facets and not parsed.text:
            raise RejectedEvent("empty_query", f"nothing to search for in {query!r} (only filler words)")
        text_vector = encode([parsed.text])[0] if parsed.text else None
        if parsed.facets:  # live music streams have no descriptors: the facets leave them out
            scanned = self.tracks.scan(self.scan_limit, with_vectors=text_vector is not None)
            hits = search_tracks(parsed, scanned, text_vector, limit)
        else:  # live music streams are searched in the live feed, where ended ones are gone
            found = [t for t, _ in self.tracks.search(text_vector, limit)]
            hits = search_tracks(parsed, found, text_vector, limit)
        return [
            {
                "item_id": h.track.item_id,
                "title": h.track.title,
                "creator_id": h.track.creator_id,
                "score": round(h.score, 6),
                "feed": Feed.music.value,
                "matched": ", ".join(h.matched),
                "facets": h.matched,
                "query_words": list(parsed.words),
                "text_query": parsed.text,
                "descriptors": h.track.descriptors.to_dict() if h.track.descriptors else None,
            }
            for h in hits
        ]

    # --- playlists ----------------------------------------------------------------------------
    def playlist(
        self, user_id: str, state: Mapping[str, Any] | None, length: int, seed_item: str | None, user_model: UserModel
    ) -> dict[str, Any]:
        """An ordered playlist for the user: relevance to their taste (and the seed), smooth tempo, spaced artists.

        Candidates: the music feed's nearest items to the taste (plus seed) in the item index, four per
        slot; live streams tagged music that are live now and near the same vector. A listener with no
        taste and no seed gets the catalogue's newest tracks, ordered by the same rules.
        """
        if not 1 <= length <= MAX_PLAYLIST_LENGTH:
            raise RejectedEvent("bad_length", f"length must be 1-{MAX_PLAYLIST_LENGTH}, got {length}")
        taste = user_model.query_vector(UserState.from_dict(state))
        seed_track: MusicTrack | None = None
        seed_vector: np.ndarray | None = None
        if seed_item is not None:
            seed_track = self.tracks.get([seed_item]).get(seed_item)
            item = self.index.get([seed_item]).get(seed_item)
            if seed_track is None or item is None or seed_track.is_live:
                raise RejectedEvent("unknown_seed", f"seed_item {seed_item!r} is not a music track in the index")
            seed_vector = item.vector
        parts = [v for v in (taste, seed_vector) if v is not None]
        why = {2: "like your taste and the seed", 1: "like your taste" if taste is not None else "close to the seed"}
        if parts:
            query = normalized(np.sum([normalized(np.asarray(v, np.float32)) for v in parts], axis=0))
            want = min(self.scan_limit, max(4 * length, 100))
            hits = self.index.search([query], Feed.music, limit=want)[0]
            relevance = {h.item_id: h.similarity for h in hits}
            live_hits = self.index.search([query], Feed.live, limit=20)[0]
            relevance.update({h.item_id: h.similarity for h in live_hits})
            found = self.tracks.get(list(relevance))
            reason = why[len(parts)]
        else:  # a new listener without a seed: the newest tracks
            scanned = sorted(self.tracks.scan(self.scan_limit), key=lambda t: -t.created_at)
            found = {t.item_id: t for t in scanned if not t.is_live}
            relevance = dict.fromkeys(found, 0.0)
            reason = "new listener: a recent track"
        live_now = {h for h in relevance if h in found and found[h].is_live}
        candidates = [
            Candidate(
                item_id=t.item_id,
                creator_id=t.creator_id,
                title=t.title,
                tempo_bpm=t.descriptors.tempo_bpm if t.descriptors and t.descriptors.tempo_bpm > 0 else None,
                relevance=float(relevance[t.item_id]),
                is_live=t.item_id in live_now,
                why=reason,
            )
            for t in found.values()
            if not t.is_live or t.item_id in live_now
        ]
        seed = None
        if seed_track is not None:
            d = seed_track.descriptors
            seed = Candidate(
                seed_track.item_id,
                seed_track.creator_id,
                seed_track.title,
                d.tempo_bpm if d and d.tempo_bpm > 0 else None,
                float(relevance.get(seed_track.item_id, 1.0)),
            )
        made = build_playlist(candidates, length, self.playlist_params, seed=seed)
        return {
            "user_id": user_id,
            "length": length,
            "seed_item": seed_item,
            "items": [
                {
                    "item_id": e.item_id,
                    "title": e.title,
                    "creator_id": e.creator_id,
                    "tempo_bpm": e.tempo_bpm,
                    "relevance": e.relevance,
                    "is_live": e.is_live,
                    "reason": e.reason,
                }
                for e in made.entries
            ],
            "smooth_transitions": made.smooth_transitions,
            "judged_transitions": made.judged_transitions,
            "smooth_share": None if made.smooth_share is None else round(made.smooth_share, 4),
            "max_tempo_step": self.playlist_params.max_tempo_step,
            "artist_spacing": made.artist_spacing,
            "note": None
            if len(made.entries) == length
            else f"{len(made.entries)} of {length}: the music catalogue has no more tracks that fit the rules",
        }
