"""The shell's music operations over in-memory stores and real generated audio (no broker, no Milvus)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranking.domain import Feed
from ranking.index import IndexedItem
from ranking.memory_index import InMemoryIndex
from ranking.music import InMemoryTrackStore
from ranking.user_state import DEFAULT_EVENT_WEIGHTS, UserModel, UserModelParams
from streams.music import MusicHandlers, check_music_paths
from streams.music_clips import make_clip, write_wav
from streams.schemas import ContentEvent, RejectedEvent

DIM = 8


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def music(tmp_path: Path) -> MusicHandlers:
    index = InMemoryIndex(DIM)
    handlers = MusicHandlers(index, InMemoryTrackStore(), media_roots=[tmp_path / "media"])
    events = []
    for n, (bpm, timbre) in enumerate([(96.0, "pluck"), (100.0, "synth"), (104.0, "drums")]):
        path = write_wav(make_clip(bpm, timbre, seconds=6.0, seed=n), tmp_path / "media" / f"t{n}.wav")
        events.append(
            ContentEvent(item_id=f"t{n}", kind="music", title=f"Track {n}", creator_id=f"a{n}", audio_path=str(path))
        )
    vectors = {ev.item_id: unit(n) for n, ev in enumerate(events)}
    index.upsert([IndexedItem(ev.item_id, Feed.music, False, 0.0, ev.title, vectors[ev.item_id]) for ev in events])
    result = handlers.index_tracks(events, vectors)
    assert not result.media_errors
    return handlers


def test_tracks_are_stored_with_their_measured_tempo(music: MusicHandlers) -> None:
    stored = music.tracks.get(["t0", "t1", "t2"])
    tempi = {i: t.descriptors.tempo_bpm for i, t in stored.items() if t.descriptors is not None}
    assert tempi.keys() == {"t0", "t1", "t2"}
    for item_id, truth in (("t0", 96.0), ("t1", 100.0), ("t2", 104.0)):
        assert abs(tempi[item_id] / truth - 1) <= 0.02, tempi
    assert {t.creator_id for t in stored.values()} == {"a0", "a1", "a2"}


def test_audio_outside_the_roots_is_rejected_and_unreadable_audio_costs_only_descriptors(
    music: MusicHandlers, tmp_path: Path
) -> None:
    outside = ContentEvent(
        item_id="x", kind="music", title="x", creator_id="a", audio_path=str(tmp_path / "elsewhere.wav")
    )
    [(ev, err)] = check_music_paths([outside], music.media_roots)
    assert ev is outside and err.reason == "media_path_outside_roots"
    (tmp_path / "media" / "bad.wav").write_bytes(b"not audio")
    broken = ContentEvent(
        item_id="y", kind="music", title="y", creator_id="a", audio_path=str(tmp_path / "media" / "bad.wav")
    )
    result = music.index_tracks([broken], {"y": unit(9)})
    assert result.media_errors and result.media_errors[0].startswith("music_")
    assert music.tracks.get(["y"])["y"].descriptors is None


def test_playlist_and_search_reject_bad_requests_with_a_reason(music: MusicHandlers) -> None:
    model = UserModel(UserModelParams(event_weights=DEFAULT_EVENT_WEIGHTS))
    for length in (0, 201):
        with pytest.raises(RejectedEvent) as bad:
            music.playlist("u", None, length, None, model)
        assert bad.value.reason == "bad_length"
    with pytest.raises(RejectedEvent) as unknown:
        music.playlist("u", None, 3, "nope", model)
    assert unknown.value.reason == "unknown_seed"
    with pytest.raises(RejectedEvent) as empty:
        music.search("songs for me", 5, lambda texts: np.zeros((len(texts), DIM)))
    assert empty.value.reason == "empty_query"


def test_a_seeded_playlist_opens_with_the_seed_and_walks_the_tempo(music: MusicHandlers) -> None:
    model = UserModel(UserModelParams(event_weights=DEFAULT_EVENT_WEIGHTS))
    body = music.playlist("u", None, 3, "t0", model)
    assert [i["item_id"] for i in body["items"]] == ["t0", "t1", "t2"], "96 -> 100 -> 104 bpm, up from the seed"
    assert body["smooth_share"] == 1.0 and body["note"] is None
    assert "the seed you chose" in body["items"][0]["reason"]
