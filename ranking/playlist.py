"""Personal playlists: relevant tracks, ordered so the tempo flows and artists do not bunch up.

Pure ordering over candidates the shell gathers (tracks with their relevance to the user's taste and seed).
Rules, in priority order:

1. artist spacing: no artist twice within ``artist_spacing`` consecutive tracks (hard; a shorter list
   rather than a broken rule);
2. smooth tempo: consecutive tracks differ in tempo by at most ``max_tempo_step`` (8 %) where the
   catalogue allows it; a rough step is taken only when no smooth one is left;
3. relevance: among the steps allowed, the most relevant track, nudged towards tracks that keep more
   smooth steps open (so the walk does not strand itself at an extreme tempo).

Greedy, one track at a time (O(length x candidates)): a playlist of 200 from 800 candidates is instant.
The achieved share of smooth transitions is reported with every playlist.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PlaylistParams:
    artist_spacing: int = 3
    max_tempo_step: float = 0.08
    # weight of "smooth steps still open from here" (0..1, normalised) against relevance (cosine, -1..1)
    openness_weight: float = 0.05
    live_slots: int = 1


@dataclass(frozen=True)
class Candidate:
    """A track that could go in: its artist, tempo (None for live streams and tracks without audio), relevance."""

    item_id: str
    creator_id: str
    title: str
    tempo_bpm: float | None
    relevance: float
    is_live: bool = False
    why: str = ""  # what made it relevant (the shell's words: "like your taste", "close to the seed")


@dataclass(frozen=True)
class PlaylistEntry:
    item_id: str
    creator_id: str
    title: str
    tempo_bpm: float | None
    relevance: float
    reason: str
    is_live: bool = False


@dataclass(frozen=True)
class Playlist:
    entries: list[PlaylistEntry]
    smooth_transitions: int
    judged_transitions: int  # transitions between two tracks of known tempo
    artist_spacing: int

    @property
    def smooth_share(self) -> float | None:
        return self.smooth_transitions / self.judged_transitions if self.judged_transitions else None


def tempo_step(a: float | None, b: float | None) -> float | None:
    """Relative tempo change between two tracks (max/min - 1), or None when either tempo is unknown."""
    if not a or not b or a <= 0 or b <= 0:
        return None
    return max(a, b) / min(a, b) - 1.0


def is_smooth(a: float | None, b: float | None, max_step: float) -> bool:
    step = tempo_step(a, b)
    return step is not None and step <= max_step + 1e-9


def build_playlist(
    candidates: Sequence[Candidate],
    length: int,
    params: PlaylistParams = PlaylistParams(),
    seed: Candidate | None = None,
) -> Playlist:
    """Order up to ``length`` candidates (the seed first when given) under the rules of the module doc.

    Live streams (no tempo) go at the end, at most ``params.live_slots`` of them, when relevant enough
    (at least the median relevance of the chosen tracks): their transitions are not judged.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    k = max(1, params.artist_spacing)
    pool = {c.item_id: c for c in candidates if not c.is_live and (seed is None or c.item_id != seed.item_id)}
    lives = sorted((c for c in candidates if c.is_live), key=lambda c: -c.relevance)
    tempi = sorted(c.tempo_bpm for c in pool.values() if c.tempo_bpm)

    def openness(bpm: float | None) -> float:
        """Share of the remaining tempi within one smooth step of ``bpm`` (recomputed lazily: tempi shrink)."""
        if not bpm or not tempi:
            return 0.0
        lo = bisect.bisect_left(tempi, bpm / (1 + params.max_tempo_step))
        hi = bisect.bisect_right(tempi, bpm * (1 + params.max_tempo_step))
        return (hi - lo) / len(tempi)

    chosen: list[Candidate] = []
    reasons: list[str] = []

    def take(c: Candidate, reason: str) -> None:
        chosen.append(c)
        reasons.append(reason)
        pool.pop(c.item_id, None)
        if c.tempo_bpm:
            i = bisect.bisect_left(tempi, c.tempo_bpm)
            if i < len(tempi) and tempi[i] == c.tempo_bpm:
                tempi.pop(i)

    if seed is not None:
        take(seed, _reason(seed, None, params, "the seed you chose"))
    track_slots = length - min(params.live_slots, len(lives), max(0, length - 1))
    while len(chosen) < track_slots and pool:
        recent = {c.creator_id for c in chosen[-(k - 1) :]} if k > 1 else set()
        allowed = [c for c in pool.values() if c.creator_id not in recent]
        if not allowed:
            break
        prev = chosen[-1] if chosen else None
        if prev is None:
            best = max(allowed, key=lambda c: (c.relevance, c.item_id))
        else:
            smooth = [c for c in allowed if is_smooth(prev.tempo_bpm, c.tempo_bpm, params.max_tempo_step)]
            if smooth:
                best = max(
                    smooth, key=lambda c: (c.relevance + params.openness_weight * openness(c.tempo_bpm), c.item_id)
                )
            else:  # no smooth step left: the nearest tempo (unknown tempi last), relevance breaking ties
                best = min(
                    allowed,
                    key=lambda c: (
                        tempo_step(prev.tempo_bpm, c.tempo_bpm)
                        if tempo_step(prev.tempo_bpm, c.tempo_bpm) is not None
                        else float("inf"),
                        -c.relevance,
                    ),
                )
        take(best, _reason(best, prev, params, None))
    if chosen and lives and len(chosen) < length:
        floor = sorted(c.relevance for c in chosen)[len(chosen) // 2]
        recent = {c.creator_id for c in chosen[-(k - 1) :]} if k > 1 else set()
        for live in lives:
            if len(chosen) >= length or sum(c.is_live for c in chosen) >= params.live_slots:
                break
            if live.relevance >= floor and live.creator_id not in recent:
                take(live, f"live now: {live.why or 'fits your taste'} ({live.relevance:.2f})")
    smooth_n = judged = 0
    for a, b in itertools.pairwise(chosen):
        if tempo_step(a.tempo_bpm, b.tempo_bpm) is not None:
            judged += 1
            smooth_n += is_smooth(a.tempo_bpm, b.tempo_bpm, params.max_tempo_step)
    entries = [
        PlaylistEntry(c.item_id, c.creator_id, c.title, c.tempo_bpm, round(c.relevance, 6), r, c.is_live)
        for c, r in zip(chosen, reasons, strict=True)
    ]
    return Playlist(entries, smooth_n, judged, k)


def _reason(c: Candidate, prev: Candidate | None, params: PlaylistParams, lead: str | None) -> str:
    """One line per track: why it is here and how it follows the previous one."""
    parts = [lead or f"{c.why or 'fits your taste'} ({c.relevance:.2f})"]
    if c.tempo_bpm:
        parts.append(f"{c.tempo_bpm:.0f} bpm")
    if prev is not None:
        step = tempo_step(prev.tempo_bpm, c.tempo_bpm)
        if step is None:
            parts.append("tempo unknown")
        elif step <= params.max_tempo_step + 1e-9:
            parts.append(f"smooth from {prev.tempo_bpm:.0f} bpm ({c.tempo_bpm / prev.tempo_bpm - 1:+.1%})")
        else:
            change = c.tempo_bpm / prev.tempo_bpm - 1
            parts.append(f"tempo jump from {prev.tempo_bpm:.0f} bpm ({change:+.1%}): no smoother track left")
    return "; ".join(parts)
