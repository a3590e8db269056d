"""`livelens demo` on real MicroLens users, end to end (skips without ../shared/datasets)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from streams.demo import run_demo
from tests.conftest import base_settings

pytestmark = pytest.mark.integration


def test_demo_recommends_for_every_replayed_user(datasets_dir: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    settings = base_settings(tmp_path / "data", datasets_dir=datasets_dir, log_level="warn")
    figures = run_demo(settings, users=25, show=2, work_dir=tmp_path, console=Console(file=out, width=150))
    text = out.getvalue()
    assert figures["users_missing_final_recommendation"] == 0, text
    assert figures["interactions"] > 100
    assert figures["throughput_events_per_s"] > 0 and figures["latency_p99_ms"] >= figures["latency_p50_ms"] > 0
    # Real titles and reasons are printed for the first users (MicroLens user ids 1 and 2).
    assert "user 1" in text and "user 2" in text and "because you commented on" in text
    # then the music part: generated tracks analysed by the worker, and a playlist that keeps its rules
    assert figures["playlist_length"] == 8 and figures["playlist_smooth_share"] >= 0.9, text
    assert "playlist for demo-listener" in text and 'music search "fast"' in text
    # and streamers: a fan who gifted one gaming streamer is shown the other gaming streamer, with reasons
    assert figures["creators_listed"] >= 2 and "streamers to follow for demo-fan" in text and "gamer_bo" in text, text
