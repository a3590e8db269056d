"""Music understanding on generated clips of known tempo and timbre, and the search vocabulary on top of it."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.music import MusicParams, TrackDescriptors, analyse_track, refine_tempo
from ranking.music import InMemoryTrackStore, MusicTrack, parse_music_query, search_tracks
from streams.music_clips import TIMBRES, make_clip, make_rock_beat

SECONDS = 12.0


def classify_tempo(estimate: float, truth: float) -> str:
    """hit: within 2 %; octave: within 2 % of half, double, a third or three times the truth; else miss."""
    if abs(estimate / truth - 1) <= 0.02:
        return "hit"
    if any(abs(estimate / (truth * r) - 1) <= 0.02 for r in (0.5, 2.0, 1 / 3, 3.0)):
        return "octave"
    return "miss"


def test_tempo_is_within_two_percent_on_generated_clips_of_known_tempo() -> None:
    """25 clips, tempi evenly spread over 70-160 bpm, five timbres in turn; octave errors are not hits."""
    tempi = np.linspace(70.0, 160.0, 25)
    rows = []
    for n, bpm in enumerate(tempi):
        clip = make_clip(float(bpm), TIMBRES[n % len(TIMBRES)], seconds=SECONDS, seed=n)
        estimate = analyse_track(clip.audio).tempo_bpm
        rows.append((clip.timbre, float(bpm), estimate, classify_tempo(estimate, float(bpm))))
    hits = sum(r[3] == "hit" for r in rows)
    octaves = [r for r in rows if r[3] == "octave"]
    misses = [r for r in rows if r[3] == "miss"]
    errors = [abs(r[2] / r[1] - 1) for r in rows if r[3] == "hit"]
    print(
        f"\ntempo accuracy: {hits}/{len(rows)} = {hits / len(rows):.0%} within 2 %; octave errors {len(octaves)} "
        f"{[(t, round(b, 1), round(e, 1)) for t, b, e, _ in octaves]}; other misses {len(misses)} "
        f"{[(t, round(b, 1), round(e, 1)) for t, b, e, _ in misses]}; median error of hits {np.median(errors):.3%}"
    )
    assert hits / len(rows) >= 0.9, rows


def test_a_rock_beat_with_eighth_note_hats_is_mostly_right_and_otherwise_an_octave_off() -> None:
    """The ambiguous case, measured apart: slow rock beats with a hi-hat between the beats read at double tempo."""
    rows = []
    for n, bpm in enumerate(np.linspace(70.0, 160.0, 13)):
        estimate = analyse_track(make_rock_beat(float(bpm), seconds=SECONDS, seed=n).audio).tempo_bpm
        rows.append((float(bpm), estimate, classify_tempo(estimate, float(bpm))))
    hits = sum(r[2] == "hit" for r in rows)
    octaves = [(round(b, 1), round(e, 1)) for b, e, kind in rows if kind == "octave"]
    print(f"\nrock beat: {hits}/{len(rows)} within 2 %; octave errors {len(octaves)} {octaves}")
    assert hits / len(rows) >= 0.75
    assert all(kind != "miss" for _, _, kind in rows), rows


def test_refined_tempo_comes_from_the_beat_times_not_the_quantised_estimate() -> None:
    beats = np.arange(20) * (60 / 123.4) + 0.1
    assert refine_tempo(beats, fallback_bpm=120.0) == pytest.approx(123.4, rel=1e-6)
    # a skipped beat does not drag the tempo down
    skipped = np.delete(beats, 7)
    assert refine_tempo(skipped, fallback_bpm=120.0) == pytest.approx(123.4, rel=1e-6)
    assert refine_tempo(beats[:4], fallback_bpm=99.0) == 99.0  # too few beats: the tracker's estimate


@pytest.fixture(scope="module")
def described() -> dict[str, TrackDescriptors]:
    return {t: analyse_track(make_clip(110.0, t, seconds=SECONDS, seed=7).audio) for t in TIMBRES}


def test_timbre_descriptors_separate_the_generated_timbres(described: dict[str, TrackDescriptors]) -> None:
    print("\n" + "\n".join(f"{t}: {d.to_dict()}" for t, d in described.items()))
    pluck, synth, vocal, drums = described["pluck"], described["synth"], described["vocal"], described["drums"]
    assert pluck.electronic < 0.4 < 0.6 < synth.electronic, "decaying strings read acoustic, held synths electronic"
    assert vocal.vocal > 0.6 and pluck.vocal < 0.3 and synth.vocal < 0.3, "only the sung line has vibrato"
    assert drums.percussiveness > 0.5 > pluck.percussiveness
    assert synth.brightness_hz > pluck.brightness_hz, "sawtooth and square waves are brighter than a plucked string"
    assert all(d.rhythm_strength > 0.3 for d in described.values()), "every clip has a note on every beat"


def test_silence_and_very_short_clips_have_no_tempo() -> None:
    silent = analyse_track(np.zeros(MusicParams.sample_rate * 5, dtype=np.float32))
    short = analyse_track(make_clip(120.0, "clicks", seconds=1.0).audio)
    assert silent.tempo_bpm == 0 and silent.loudness_db == -120.0
    assert short.tempo_bpm == 0 and short.duration_s == pytest.approx(1.0, abs=0.01)


def test_the_vocabulary_splits_a_query_into_facets_and_text() -> None:
    q = parse_music_query('fast acoustic songs at 128 BPM "under the bridge" tonight')
    assert [f.name for f in q.facets] == ["tempo:128bpm", "tempo:fast", "timbre:acoustic"]
    assert q.text == "under the bridge at tonight"
    assert parse_music_query("slow songs for me").text == "", "only stop words left: no text part"
    lyrics = parse_music_query("I walked along the river slow")
    assert [f.name for f in lyrics.facets] == ["tempo:slow"] and lyrics.text == "I walked along the river"
    assert parse_music_query("music songs").facets == () and parse_music_query("music songs").text == ""


def _track(item_id: str, artist: str, **desc: float) -> MusicTrack:
    base = {
        "tempo_bpm": 120.0,
        "rhythm_strength": 0.8,
        "brightness_hz": 2000.0,
        "percussiveness": 0.2,
        "electronic": 0.5,
        "loudness_db": -20.0,
        "vocal": 0.0,
        "duration_s": 30.0,
    }
    v = np.zeros(4, np.float32)
    v[hash(item_id) % 4] = 1.0
    return MusicTrack(item_id, artist, item_id, 0.0, v, TrackDescriptors(**{**base, **desc}))


def test_search_keeps_tracks_that_meet_every_facet_and_says_which_matched() -> None:
    store = InMemoryTrackStore()
    store.upsert(
        [
            _track("slow_acoustic", "a", tempo_bpm=72.0, electronic=0.15),
            _track("fast_synth", "b", tempo_bpm=150.0, electronic=0.85),
            _track("at_120", "c", tempo_bpm=121.0, electronic=0.2),
            _track("at_127", "d", tempo_bpm=127.0, electronic=0.2),
        ]
    )
    tracks = store.scan(100)

    def ids(query: str) -> list[str]:
        return [h.track.item_id for h in search_tracks(parse_music_query(query), tracks, None, 10)]

    assert ids("slow") == ["slow_acoustic"]
    assert ids("fast electronic") == ["fast_synth"]
    assert ids("120 bpm") == ["at_120"], "±4 % of 120 is 115.2-124.8"
    assert set(ids("acoustic")) == {"slow_acoustic", "at_120", "at_127"}
    hit = search_tracks(parse_music_query("fast"), tracks, None, 1)[0]
    assert hit.matched == ["tempo:fast (150 bpm)"]
