"""Live streams change while they run: what is on air now refreshes a stream's vector, at a bounded rate.

Segments (new keyframes or audio a producer publishes, and the comments viewers write) accumulate in a
per-stream window. A stream is *due* once it has something new and its last refresh is at least
``min_interval_s`` old, so a chatty stream costs one encoder pass per interval however many comments
arrive, and a quiet one costs nothing. On refresh the window's modalities are fused like a new item's,
and the result is blended with the stream's *original* vector (its title and description at start):
``(1 - alpha) * original + alpha * now``. Blending with the original rather than the previous refresh
keeps a stream's identity however long it runs; the window itself slides (last N comments, latest media).

Windows live in worker memory: after a crash a stream's pending window is lost and its next segment
starts a new one; the refreshed vector itself is in the index.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from encoders.fusion import blend, fuse

__all__ = ["LiveSegment", "LiveWindow", "LiveWindows", "refreshed_vector"]


@dataclass(frozen=True)
class LiveSegment:
    """What a stream showed, said or heard lately: new keyframes or audio from a producer, or recent comments.

    The shell converts its wire event (``streams.schemas.LiveSegmentEvent.to_core``) into this.
    """

    item_id: str
    ts: float
    comments: tuple[str, ...] = ()
    transcript: str = ""
    keyframe_paths: tuple[str, ...] = ()
    video_path: str | None = None
    audio_path: str | None = None

    def has_content(self) -> bool:
        return bool(
            any(c.strip() for c in self.comments)
            or self.transcript.strip()
            or self.keyframe_paths
            or self.video_path
            or self.audio_path
        )


@dataclass
class LiveWindow:
    """What one stream showed and heard lately; also a ``MediaSource`` for the media decoder."""

    item_id: str
    comments: deque[str]
    transcript: str = ""
    keyframe_paths: list[str] = field(default_factory=list)
    video_path: str | None = None
    audio_path: str | None = None
    cover_path: str | None = None  # never set: segments carry keyframes or video, not covers
    pending: bool = False
    last_refresh: float = float("-inf")
    last_ts: float = 0.0

    def text(self) -> str:
        """What viewers and the stream say now: the transcript, then the recent comments."""
        return " ".join(p for p in (self.transcript.strip(), " ".join(self.comments)) if p).strip()

    def snapshot(self) -> LiveWindow:
        return LiveWindow(
            self.item_id,
            deque(self.comments),
            self.transcript,
            list(self.keyframe_paths),
            self.video_path,
            self.audio_path,
            None,
            self.pending,
            self.last_refresh,
            self.last_ts,
        )


class LiveWindows:
    """Per-stream windows with a refresh-rate bound and a bound on how many streams are tracked."""

    def __init__(self, comment_window: int = 50, max_streams: int = 10_000, min_interval_s: float = 5.0) -> None:
        if comment_window < 1 or max_streams < 1 or min_interval_s <= 0:
            raise ValueError("comment_window, max_streams >= 1 and min_interval_s > 0")
        self.comment_window = comment_window
        self.max_streams = max_streams
        self.min_interval_s = min_interval_s
        self._windows: OrderedDict[str, LiveWindow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def add(self, event: LiveSegment) -> bool:
        """Fold a segment into its stream's window; False when it carries nothing to refresh from."""
        if not event.has_content():
            return False
        w = self._windows.get(event.item_id)
        if w is None:
            w = LiveWindow(event.item_id, deque(maxlen=self.comment_window))
            self._windows[event.item_id] = w
            while len(self._windows) > self.max_streams:
                self._windows.popitem(last=False)  # the least recently active stream
        self._windows.move_to_end(event.item_id)
        w.comments.extend(c.strip() for c in event.comments if c.strip())
        if event.transcript.strip():
            w.transcript = event.transcript.strip()
        if event.keyframe_paths or event.video_path:
            # new pictures replace the old ones: the window shows what is on screen now
            w.keyframe_paths, w.video_path = list(event.keyframe_paths), event.video_path
        if event.audio_path:
            w.audio_path = event.audio_path
        w.last_ts = max(w.last_ts, event.ts)
        w.pending = True
        return True

    def due(self, now: float) -> list[LiveWindow]:
        """Snapshots of the streams to refresh now; they count as refreshed (``mark`` is implicit)."""
        out: list[LiveWindow] = []
        for w in self._windows.values():
            if w.pending and now - w.last_refresh >= self.min_interval_s:
                out.append(w.snapshot())
                w.pending = False
                w.last_refresh = now
        return out

    def forget(self, item_id: str) -> None:
        """A stream ended: drop its window."""
        self._windows.pop(item_id, None)


def refreshed_vector(
    original: np.ndarray, now_parts: Mapping[str, np.ndarray | None], weights: Mapping[str, float], alpha: float
) -> np.ndarray | None:
    """The stream's new vector: its original blended with the fusion of what the window holds now.

    None when the window has nothing usable (every part missing or failed to decode): keep the vector.
    """
    try:
        now = fuse(now_parts, weights, len(original)).vector
    except ValueError:
        return None
    return blend(original, now, alpha)
