"""Personal playlists: relevant tracks, ordered so the tempo flows and artists do not bunch up.

Pure ordering over candidates the shell gathers (tracks with their relevance to the user's taste and seed).
Rules, in priority order:

1. artist spacing: no artist twice within ``artist_spacing`` consecutive tracks (hard; a shorter list
   rather than a broken rule);
2. smooth tempo: consecutive tracks differ in tempo by at most ``max_tempo_step`` (8 %) where the
   catalogue allows it;
3. relevance: the candidates are the user's most relevant tracks (the shell gathers a few per slot);
   among them, the tempo window with the fewest rough steps and then the most relevance.

The plan is a tempo ramp through that window (``_tempo_run``), then artists are spaced by pulling the
nearest fitting track forward (``_space_artists``). O(candidates x length) at worst: 200 from 800 is instant.
The achieved share of smooth transitions is reported with every playlist.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PlaylistParams:
    artist_spacing: int = 3
    max_tempo_step: float = 0.08
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
    """Up to ``length`` candidates (the seed first when given), chosen and ordered under the module doc's rules.

    Live streams (no tempo) go at the end, at most ``params.live_slots`` of them, when relevant enough
    (at least the median relevance of the chosen tracks): their transitions are not judged.
    """
    if length < 1:
        raise ValueError("length must be >= 1")
    k = max(1, params.artist_spacing)
    tracks = [c for c in candidates if not c.is_live and (seed is None or c.item_id != seed.item_id)]
    lives = sorted((c for c in candidates if c.is_live), key=lambda c: -c.relevance)
    known = sorted((c for c in tracks if c.tempo_bpm), key=lambda c: (c.tempo_bpm, -c.relevance, c.item_id))
    target = length - min(params.live_slots, len(lives), max(0, length - 1))
    run = _tempo_run(known, target - (seed is not None), seed, params.max_tempo_step)
    in_run = {c.item_id for c in run}
    spare = sorted((c for c in tracks if c.item_id not in in_run), key=lambda c: (-c.relevance, c.item_id))
    chosen = _space_artists([*([seed] if seed else []), *run], spare, k, target, params.max_tempo_step)
    reasons = [
        _reason(c, chosen[i - 1] if i else None, params, "the seed you chose" if c is seed else None)
        for i, c in enumerate(chosen)
    ]
    if chosen and lives and len(chosen) < length:
        floor = sorted(c.relevance for c in chosen)[len(chosen) // 2]
        for live in lives:
            recent = {c.creator_id for c in chosen[-(k - 1) :]} if k > 1 else set()
            if len(chosen) >= length or sum(c.is_live for c in chosen) >= params.live_slots:
                break
            if live.relevance >= floor and live.creator_id not in recent:
                chosen.append(live)
                reasons.append(f"live now: {live.why or 'fits your taste'} ({live.relevance:.2f})")
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


def _tempo_run(known: list[Candidate], n: int, seed: Candidate | None, max_step: float) -> list[Candidate]:
    """``n`` tempo-neighbouring tracks in play order: the window of the tempo-sorted candidates with the
    fewest rough steps, then the most relevance, played as a ramp (from the seed when there is one).

    For a fixed set of tracks, playing them in tempo order takes the fewest rough steps any order can
    (each gap of more than a step between tempo neighbours must be crossed at least once), so the choice
    is which window. With a seed, the window is played from the seed: down then up, or up then down.
    """
    n = min(n, len(known))
    if n <= 0:
        return []
    rough = [0] * len(known)  # rough[i]: steps over a gap among known[:i+1] in tempo order
    for i in range(1, len(known)):
        rough[i] = rough[i - 1] + (not is_smooth(known[i - 1].tempo_bpm, known[i].tempo_bpm, max_step))
    rel = list(itertools.accumulate((c.relevance for c in known), initial=0.0))

    def inner(i: int, j: int) -> int:  # rough steps walking known[i..j] in tempo order (j inclusive)
        return rough[j] - rough[i] if j > i else 0

    def jump(a: Candidate | None, b: Candidate) -> int:
        return 0 if a is None else int(not is_smooth(a.tempo_bpm, b.tempo_bpm, max_step))

    best: tuple[int, float, int, int] | None = None  # (rough steps, -relevance, start, order)
    for start in range(len(known) - n + 1):
        end = start + n - 1
        relevance = rel[end + 1] - rel[start]
        if seed is None or not seed.tempo_bpm:
            # the ramp opens with whichever end of the window is more relevant
            order = 0 if known[start].relevance >= known[end].relevance else 1
            options = [(inner(start, end), order)]
        else:
            split = start  # known[start:split] below the seed's tempo, known[split:end+1] at or above it
            while split <= end and known[split].tempo_bpm < seed.tempo_bpm:
                split += 1
            below, above = (start, split - 1), (split, end)
            options = []
            has_below, has_above = split > start, split <= end
            # order 0: up through the tracks above, then down from the seed's side through those below
            up = inner(*above) if has_above else 0
            down = inner(*below) if has_below else 0
            if has_above:
                back = jump(known[end], known[split - 1]) if has_below else 0
                options.append((jump(seed, known[split]) + up + back + down, 0))
            if has_below:
                back = jump(known[start], known[split]) if has_above else 0
                options.append((jump(seed, known[split - 1]) + down + back + up, 1))
        for cost, order in options:
            key = (cost, -relevance, start, order)
            if best is None or key < best:
                best = key
    assert best is not None
    _, _, start, order = best
    window = known[start : start + n]
    if seed is None or not seed.tempo_bpm:
        return window if order == 0 else window[::-1]
    below = [c for c in window if c.tempo_bpm < seed.tempo_bpm]
    above = [c for c in window if c.tempo_bpm >= seed.tempo_bpm]
    return above + below[::-1] if order == 0 else below[::-1] + above


def _space_artists(
    order: list[Candidate], spare: list[Candidate], k: int, target: int, max_step: float
) -> list[Candidate]:
    """The planned order with artist spacing enforced: where the next track's artist played within the last
    ``k - 1`` tracks, the nearest later track in the plan that fits takes its place (smooth first), else the
    most relevant spare track that fits smoothly, else the nearest that fits at all; none fits: the list ends."""
    queue, spare, out = list(order), list(spare), []
    while len(out) < target and (queue or spare):
        recent = {c.creator_id for c in out[-(k - 1) :]} if k > 1 else set()
        prev = out[-1] if out else None

        def ok(c: Candidate, smooth: bool, recent: set[str] = recent, prev: Candidate | None = prev) -> bool:
            fits = c.creator_id not in recent
            return fits and (not smooth or prev is None or is_smooth(prev.tempo_bpm, c.tempo_bpm, max_step))

        pick = next((c for c in queue if ok(c, True)), None)
        pick = pick or next((c for c in spare if ok(c, True)), None)
        pick = pick or next((c for c in queue if ok(c, False)), None)
        if pick is None:
            fitting = [c for c in spare if ok(c, False)]
            pick = min(fitting, key=lambda c, prev=prev: _distance(prev, c), default=None)
        if pick is None:
            break
        out.append(pick)
        (queue if pick in queue else spare).remove(pick)
    return out


def _distance(prev: Candidate | None, c: Candidate) -> float:
    """Tempo step from ``prev`` to ``c``; unknown tempi sort last."""
    step = tempo_step(prev.tempo_bpm, c.tempo_bpm) if prev is not None else 0.0
    return step if step is not None else float("inf")


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
            parts.append(f"tempo jump from {prev.tempo_bpm:.0f} bpm ({change:+.1%}): the closest that fits")
    return "; ".join(parts)
