"""Playlist ordering: length, artist spacing, smooth tempo where the catalogue allows, relevance, live slots."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.playlist import Candidate, Playlist, PlaylistParams, build_playlist, is_smooth


def catalogue(n: int, artists: int, tempi: np.ndarray, seed: int = 0) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [
        Candidate(f"t{i}", f"artist{i % artists}", f"track {i}", float(tempi[i]), float(rng.uniform(0.2, 0.9)))
        for i in range(n)
    ]


def assert_rules(p: Playlist, spacing: int, step: float = 0.08) -> None:
    ids = [e.item_id for e in p.entries]
    assert len(ids) == len(set(ids)), "a track twice"
    artists = [e.creator_id for e in p.entries]
    for i in range(len(artists)):
        window = artists[max(0, i - spacing + 1) : i + 1]
        assert len(window) == len(set(window)), f"artist twice within {spacing}: {window}"
    smooth = sum(is_smooth(a.tempo_bpm, b.tempo_bpm, step) for a, b in zip(p.entries, p.entries[1:], strict=False))
    assert p.smooth_transitions == smooth and p.judged_transitions == len(ids) - 1, "the reported share is the real one"


def test_a_varied_catalogue_gives_the_length_spacing_and_smooth_tempo() -> None:
    rng = np.random.default_rng(1)
    tracks = catalogue(120, 15, rng.uniform(70, 160, 120))
    p = build_playlist(tracks, 40, PlaylistParams(artist_spacing=3))
    assert len(p.entries) == 40
    assert_rules(p, 3)
    print(f"\nsmooth share {p.smooth_share:.2%} ({p.smooth_transitions}/{p.judged_transitions})")
    assert p.smooth_share is not None and p.smooth_share >= 0.9
    assert all(e.reason for e in p.entries)
    mean_all = np.mean([t.relevance for t in tracks])
    assert np.mean([e.relevance for e in p.entries]) > mean_all, "among smooth windows, the most relevant one"


def test_a_catalogue_of_three_tempo_islands_takes_the_fewest_jumps_and_says_so() -> None:
    tempi = np.array([70.0 + (i % 3) for i in range(10)] + [110.0 + (i % 3) for i in range(10)] + [160.0] * 10)
    tracks = catalogue(30, 10, tempi)
    p = build_playlist(tracks, 30, PlaylistParams(artist_spacing=3))
    assert len(p.entries) == 30
    assert_rules(p, 3)
    assert p.judged_transitions - p.smooth_transitions == 2, "two jumps join three islands; every other step smooth"
    jumps = [e.reason for e in p.entries if "tempo jump" in e.reason]
    assert len(jumps) == 2 and all("the closest that fits" in r for r in jumps)


def test_among_equally_smooth_tracks_the_most_relevant_come_first() -> None:
    tracks = catalogue(40, 40, np.full(40, 120.0))
    p = build_playlist(tracks, 10)
    best = sorted(tracks, key=lambda t: -t.relevance)[:10]
    assert [e.item_id for e in p.entries] == [t.item_id for t in best]


def test_the_seed_opens_and_too_few_artists_end_the_list_early() -> None:
    tracks = catalogue(20, 2, np.full(20, 100.0))
    seed = Candidate("seed", "artist0", "the seed", 100.0, 1.0)
    p = build_playlist(tracks, 10, PlaylistParams(artist_spacing=3), seed=seed)
    assert p.entries[0].item_id == "seed" and "seed" in p.entries[0].reason
    # two artists cannot fill a window of three: after seed (artist0) and one track of artist1, nothing fits
    assert [e.creator_id for e in p.entries] == ["artist0", "artist1"]
    assert_rules(p, 3)


def test_a_relevant_live_stream_ends_the_list_and_an_irrelevant_one_does_not() -> None:
    tracks = catalogue(12, 12, np.full(12, 120.0))
    live = Candidate("live1", "dj", "live set", None, 0.95, is_live=True)
    dull = Candidate("live2", "dj2", "other set", None, 0.0, is_live=True)
    p = build_playlist([*tracks, live, dull], 6)
    assert [e.item_id for e in p.entries][-1] == "live1" and p.entries[-1].is_live
    assert "live2" not in [e.item_id for e in p.entries] and len(p.entries) == 6
    assert p.judged_transitions == 4, "a transition to a stream without a tempo is not judged"
    without = build_playlist([*tracks, live], 6, PlaylistParams(live_slots=0))
    assert not any(e.is_live for e in without.entries)


def test_length_must_be_positive() -> None:
    with pytest.raises(ValueError):
        build_playlist([], 0)
    assert build_playlist([], 5).entries == []


def test_a_chain_of_tempi_is_walked_without_stranding_at_either_end() -> None:
    """24 tracks, each tempo 3.6 % above the last (70-160 bpm): every ordering step can be smooth, but a walk
    that starts in the middle and follows relevance alone strands at one end and must jump back."""
    shares = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        tempi = 70.0 * 1.036 ** np.arange(24)
        order = rng.permutation(24)
        tracks = [
            Candidate(f"t{i}", f"artist{i % 8}", f"track {i}", float(tempi[i]), float(rng.uniform(0.2, 0.9)))
            for i in order
        ]
        p = build_playlist(tracks, 16)
        assert len(p.entries) == 16
        assert_rules(p, 3)
        shares.append(p.smooth_share)
    print(f"\nsmooth share over 20 random relevance orders: min {min(shares):.0%}, mean {np.mean(shares):.1%}")
    assert min(shares) >= 0.9
