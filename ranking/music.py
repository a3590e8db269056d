"""Music tracks as the core sees them, the store they live in, and music search by words.

No text-audio model weights exist here, so a query is read in two parts: words of a documented
vocabulary (``VOCABULARY``: "slow", "fast", "120 bpm", "acoustic", "energetic", "instrumental", ...) become
conditions on a track's descriptors (``encoders.music.TrackDescriptors``), and everything else (a line of
lyrics, a title) goes through the index's text encoder. A quoted phrase is always text. Each answer names
the facets that matched (docs/music.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from encoders.music import TrackDescriptors


@dataclass(frozen=True)
class MusicTrack:
    """A track (or a live music stream: ``is_live``, no descriptors) with what search and playlists need.

    ``vector``: the text vector of its title, tags and lyrics (the index's text space), which lyric lines
    are compared with; None when read without vectors. Relevance to a user's taste uses the item index.
    """

    item_id: str
    creator_id: str
    title: str
    created_at: float
    vector: np.ndarray | None
    descriptors: TrackDescriptors | None = None
    is_live: bool = False


class TrackStore(Protocol):
    """Tracks by id; every track (scanned whole for conditions on descriptors); the nearest tracks by text
    vector (live streams left out: they are searched in the live feed, where ended ones are gone)."""

    def upsert(self, tracks: Sequence[MusicTrack]) -> None: ...
    def get(self, item_ids: Iterable[str]) -> dict[str, MusicTrack]: ...
    def scan(self, limit: int, with_vectors: bool = False) -> list[MusicTrack]: ...
    def search(self, vector: np.ndarray, limit: int) -> list[tuple[MusicTrack, float]]: ...


class InMemoryTrackStore:
    """The same interface in a dict (unit tests)."""

    def __init__(self) -> None:
        self._rows: dict[str, MusicTrack] = {}

    def upsert(self, tracks: Sequence[MusicTrack]) -> None:
        self._rows.update({t.item_id: t for t in tracks})

    def get(self, item_ids: Iterable[str]) -> dict[str, MusicTrack]:
        return {i: self._rows[i] for i in item_ids if i in self._rows}

    def scan(self, limit: int, with_vectors: bool = False) -> list[MusicTrack]:
        return list(self._rows.values())[:limit]

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[MusicTrack, float]]:
        rows = [t for t in self._rows.values() if t.vector is not None and not t.is_live]
        scored = [(t, float(np.dot(vector, t.vector))) for t in rows]
        return sorted(scored, key=lambda p: -p[1])[:limit]


# --- the vocabulary -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facet:
    """One condition a word asks for: a name, what it means, and a 0..1 fit (0 = the track does not match)."""

    name: str
    meaning: str
    fit: Callable[[TrackDescriptors], float]


def _above(value: float, threshold: float, full: float) -> float:
    """0 below ``threshold``; rising to 1 at ``full`` (a soft edge so better matches rank first)."""
    if value < threshold:
        return 0.0
    return 0.5 + 0.5 * min(1.0, (value - threshold) / max(full - threshold, 1e-9))


def _below(value: float, threshold: float, full: float) -> float:
    return _above(-value, -threshold, -full)


def _has_pitch(d: TrackDescriptors) -> bool:
    return d.percussiveness <= 0.85


def _energy(d: TrackDescriptors) -> float:
    """0..1: loud, fast and driven by strong, regular onsets."""
    loud = np.clip((d.loudness_db + 30.0) / 20.0, 0, 1)
    fast = np.clip((d.tempo_bpm - 80.0) / 60.0, 0, 1)
    return float((loud + fast + d.rhythm_strength) / 3.0)


SLOW_BELOW_BPM = 90.0
FAST_ABOVE_BPM = 130.0
BPM_TOLERANCE = 0.04

# word -> facet; several words can name one facet
VOCABULARY: dict[str, Facet] = {}


def _word(words: str, name: str, meaning: str, fit: Callable[[TrackDescriptors], float]) -> None:
    for w in words.split():
        VOCABULARY[w] = Facet(name, meaning, fit)


_word(
    "slow",
    "tempo:slow",
    f"under {SLOW_BELOW_BPM:.0f} bpm",
    lambda d: _below(d.tempo_bpm, SLOW_BELOW_BPM, 70) if d.tempo_bpm else 0,
)
_word("midtempo mid-tempo moderate", "tempo:moderate", "90-130 bpm", lambda d: float(90 <= d.tempo_bpm <= 130))
_word(
    "fast upbeat uptempo up-tempo",
    "tempo:fast",
    f"over {FAST_ABOVE_BPM:.0f} bpm",
    lambda d: _above(d.tempo_bpm, FAST_ABOVE_BPM, 160),
)
_word(
    "acoustic unplugged",
    "timbre:acoustic",
    "electronic under 0.4",
    lambda d: _below(d.electronic, 0.4, 0.1) if _has_pitch(d) else 0,
)
_word(
    "electronic synth synthetic edm",
    "timbre:electronic",
    "electronic over 0.6",
    lambda d: _above(d.electronic, 0.6, 0.9) if _has_pitch(d) else 0,
)
_word("energetic energy driving intense", "mood:energetic", "energy over 0.6", lambda d: _above(_energy(d), 0.6, 0.9))
_word("calm chill relaxing relaxed mellow", "mood:calm", "energy under 0.4", lambda d: _below(_energy(d), 0.4, 0.1))
_word("instrumental", "voice:instrumental", "vocal under 0.3", lambda d: _below(d.vocal, 0.3, 0.0))
_word("vocal vocals singing sung singer", "voice:vocal", "vocal over 0.6", lambda d: _above(d.vocal, 0.6, 1.0))
_word("bright", "timbre:bright", "brightness over 2500 Hz", lambda d: _above(d.brightness_hz, 2500, 4000))
_word(
    "dark warm",
    "timbre:dark",
    "brightness under 1500 Hz",
    lambda d: _below(d.brightness_hz, 1500, 800) if d.brightness_hz else 0,
)
_word(
    "percussive drums drum beats",
    "rhythm:percussive",
    "percussiveness over 0.5",
    lambda d: _above(d.percussiveness, 0.5, 0.9),
)
_word(
    "groovy danceable rhythmic",
    "rhythm:strong",
    "rhythm strength over 0.6",
    lambda d: _above(d.rhythm_strength, 0.6, 0.9),
)
_word("loud", "level:loud", "loudness over -18 dBFS", lambda d: _above(d.loudness_db, -18, -10))
_word("quiet soft", "level:quiet", "loudness under -25 dBFS", lambda d: _below(d.loudness_db, -25, -35))

# words that say "music" without asking for anything (dropped), and words that alone ask for nothing (a query
# left with only these has no text part; among other words they stay: "the" belongs in a line of lyrics)
MUSIC_WORDS = frozenset(["music", "song", "songs", "track", "tracks", "tune", "tunes"])
_STOP_WORDS = "with and a an the some me play of in for at to by"
STOP_WORDS = frozenset(_STOP_WORDS.split())
_BPM = re.compile(r"\b(\d{2,3}(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)
_QUOTED = re.compile(r"\"([^\"]+)\"")
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)?")


def tempo_facet(bpm: float) -> Facet:
    """``N bpm``: within ±4 % of N (0.5 at the edge, 1 exactly on it)."""

    def fit(d: TrackDescriptors) -> float:
        if d.tempo_bpm <= 0:
            return 0.0
        off = abs(d.tempo_bpm / bpm - 1.0)
        return 0.0 if off > BPM_TOLERANCE else 1.0 - 0.5 * off / BPM_TOLERANCE

    return Facet(f"tempo:{bpm:g}bpm", f"{bpm:g} bpm ±{BPM_TOLERANCE:.0%}", fit)


@dataclass(frozen=True)
class MusicQuery:
    """A query read: the descriptor facets it asks for and the text left for the text encoder."""

    facets: tuple[Facet, ...]
    text: str
    words: tuple[str, ...] = field(default=())  # the vocabulary words recognised, in order


def parse_music_query(query: str) -> MusicQuery:
    """Split a query into descriptor facets and free text (quoted phrases are always text)."""
    facets: list[Facet] = []
    words: list[str] = []
    quoted = _QUOTED.findall(query)
    rest = _QUOTED.sub(" ", query)
    for m in _BPM.finditer(rest):
        bpm = float(m.group(1))
        if 20 <= bpm <= 300:
            facets.append(tempo_facet(bpm))
            words.append(m.group(0))
    rest = _BPM.sub(" ", rest)
    leftover: list[str] = []
    for raw in rest.split():
        token = raw.strip(".,;:!?()'").lower()
        facet = VOCABULARY.get(token)
        if facet is not None:
            if all(f.name != facet.name for f in facets):
                facets.append(facet)
            words.append(token)
        elif token and token not in MUSIC_WORDS:
            leftover.append(raw)
    if all(w.strip(".,;:!?()'").lower() in STOP_WORDS for w in leftover):
        leftover = []
    text = " ".join([*quoted, *leftover]).strip()
    return MusicQuery(tuple(facets), text, tuple(words))


@dataclass(frozen=True)
class MusicHit:
    """One answer: the track, its score, and which facets matched (with the measured value)."""

    track: MusicTrack
    score: float
    matched: list[str]
    text_similarity: float | None = None


def describe_match(facet: Facet, d: TrackDescriptors) -> str:
    """``tempo:fast (142 bpm)``: the facet and the measurement behind it."""
    kind = facet.name.split(":")[0]
    value = {
        "tempo": f"{d.tempo_bpm:.0f} bpm",
        "timbre": f"electronic {d.electronic:.2f}"
        if "acoustic" in facet.name or "electronic" in facet.name
        else f"{d.brightness_hz:.0f} Hz",
        "mood": f"energy {_energy(d):.2f}",
        "voice": f"vocal {d.vocal:.2f}",
        "rhythm": f"percussive {d.percussiveness:.2f}"
        if "percussive" in facet.name
        else f"rhythm {d.rhythm_strength:.2f}",
        "level": f"{d.loudness_db:.0f} dBFS",
    }.get(kind, "")
    return f"{facet.name} ({value})" if value else facet.name


def search_tracks(
    query: MusicQuery,
    tracks: Sequence[MusicTrack],
    text_query: np.ndarray | None,
    limit: int,
) -> list[MusicHit]:
    """Tracks meeting every facet, ranked by mean facet fit, plus text similarity when there is text.

    Without facets, this ranks by text similarity alone (title, tags, lyrics). Live streams have no
    descriptors, so no facet finds them (the shell leaves them out of music search altogether).
    """
    out: list[MusicHit] = []
    for t in tracks:
        if query.facets:
            if t.descriptors is None:
                continue
            fits = [f.fit(t.descriptors) for f in query.facets]
            if min(fits) <= 0:
                continue
            facet_score = float(np.mean(fits))
            matched = [describe_match(f, t.descriptors) for f in query.facets]
        else:
            facet_score, matched = 0.0, []
        sim = None
        if text_query is not None:
            if t.vector is None:
                continue
            sim = float(np.dot(text_query, t.vector))
            matched.append(f"lyrics/title ({sim:.2f})")
        score = facet_score + (sim if sim is not None else 0.0)
        out.append(MusicHit(t, score, matched, sim))
    out.sort(key=lambda h: (-h.score, h.track.item_id))
    return out[:limit]
