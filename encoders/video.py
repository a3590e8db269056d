"""Media decoding for the content encoders: keyframes, audio tracks and still images, with PyAV (bundled FFmpeg).

Content events carry *paths* (cover, keyframes, video, audio) written by producers we do not control, so every
path is confined to the configured media roots before anything opens it, and every failure becomes a
``MediaError`` with a short machine-readable ``reason`` (for metrics and dead letters) instead of an FFmpeg
traceback. Decoding is bounded: only keyframes are decoded (``skip_frame="NONKEY"``), frames are downscaled as
they are converted, and audio can be capped in seconds, so one long live recording cannot exhaust a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "MediaError",
    "MediaInputs",
    "MediaSource",
    "confine_path",
    "decode_media",
    "extract_audio",
    "extract_keyframes",
    "load_image",
]

DEFAULT_MAX_SIDE = 512  # encoders resize to 224-256 px; keeping more only costs memory between decode and encode


class MediaError(ValueError):
    """A media path that cannot be used; ``reason`` is a stable short code, ``path`` what was asked for.

    Reasons: ``bad_path``, ``path_outside_roots``, ``not_found``, ``not_a_file``, ``corrupt``, ``too_large``,
    ``no_video_stream``, ``no_audio_stream``, ``no_frames``, ``no_audio``.
    """

    def __init__(self, reason: str, path: str | Path | None = None, detail: str = "") -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        msg = reason if path is None else f"{reason}: {path}"
        super().__init__(f"{msg} ({detail})" if detail else msg)


def confine_path(path: str | Path, roots: Sequence[str | Path] | None) -> Path:
    """The resolved absolute path, if it lies inside one of ``roots``; else ``MediaError("path_outside_roots")``.

    Symlinks and ``..`` are resolved *before* the check, so neither can lead outside a root. A relative path is
    taken relative to the first root. ``roots=None`` turns confinement off (library use and tests); an empty
    list allows nothing, so a deployment that configured no roots fails closed.
    """
    text = str(path)
    if not text or "\x00" in text:
        raise MediaError("bad_path", repr(text))
    p = Path(text)
    if roots is None:
        return p.resolve()
    resolved_roots = [Path(r).resolve() for r in roots]
    if not resolved_roots:
        raise MediaError("path_outside_roots", text, "no media roots configured")
    if not p.is_absolute():
        p = resolved_roots[0] / p
    resolved = p.resolve()  # follows every symlink that exists, including ones in parent directories
    if not any(resolved == r or resolved.is_relative_to(r) for r in resolved_roots):
        raise MediaError("path_outside_roots", text)
    return resolved


def _existing_file(path: Path) -> Path:
    if not path.exists():
        raise MediaError("not_found", path)
    if not path.is_file():
        raise MediaError("not_a_file", path)
    return path


def _open_container(path: str | Path) -> Any:
    """av.open with FFmpeg's errors mapped to MediaError (missing vs unreadable files are different problems)."""
    import av

    p = _existing_file(Path(path))
    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise MediaError("corrupt", p, str(exc)) from exc


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _frame_to_rgb(frame: Any, max_side: int | None) -> np.ndarray:
    width, height = _scaled_size(frame.width, frame.height, max_side)
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def _evenly(values: Sequence[int], k: int) -> list[int]:
    """``k`` items spread evenly from first to last (both ends kept), without repeats."""
    if k <= 0 or not values:
        return []
    if len(values) <= k:
        return list(values)
    idx = np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))
    return [values[i] for i in idx]


def extract_keyframes(
    path: str | Path, max_frames: int = 4, max_side: int | None = DEFAULT_MAX_SIDE
) -> list[np.ndarray]:
    """Up to ``max_frames`` RGB uint8 keyframes (H, W, 3), spread evenly over the video's keyframes, in time order.

    Two cheap passes instead of a full decode: a demux-only pass lists keyframe timestamps (no decoding), then a
    decode with ``skip_frame="NONKEY"`` converts only the chosen ones. Keyframes are independently decodable
    and typically 1-2 s apart, so this costs a few frame decodes even for long videos.
    """
    import av

    if max_frames < 1:
        raise ValueError("max_frames must be >= 1")
    with _open_container(path) as container:
        if not container.streams.video:
            raise MediaError("no_video_stream", path)
        stream = container.streams.video[0]
        try:
            key_pts = sorted(
                {int(pkt.pts) for pkt in container.demux(stream) if pkt.is_keyframe and pkt.pts is not None}
            )
        except av.error.FFmpegError as exc:
            raise MediaError("corrupt", path, str(exc)) from exc
    wanted = set(_evenly(key_pts, max_frames))
    frames: dict[int, np.ndarray] = {}
    first: tuple[int, np.ndarray] | None = None
    with _open_container(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        try:
            for frame in container.decode(stream):
                pts = int(frame.pts) if frame.pts is not None else -1
                if pts in wanted:
                    frames[pts] = _frame_to_rgb(frame, max_side)
                    if len(frames) == len(wanted):
                        break
                elif first is None:
                    first = (pts, _frame_to_rgb(frame, max_side))
                    if not wanted:
                        break
        except av.error.FFmpegError as exc:
            if not frames and first is None:
                raise MediaError("corrupt", path, str(exc)) from exc
            # A damaged tail after usable keyframes: keep what decoded rather than losing the whole item.
    if not frames and first is not None:
        # Packets and frames disagreed on timestamps (some muxers): the first decoded keyframe still shows it.
        frames[first[0]] = first[1]
    if not frames:
        raise MediaError("no_frames", path)
    return [frames[pts] for pts in sorted(frames)]


def extract_audio(path: str | Path, sample_rate: int = 16_000, max_seconds: float | None = None) -> np.ndarray:
    """The first audio track as float32 mono in [-1, 1] at ``sample_rate``; at most ``max_seconds`` of it.

    FFmpeg's resampler (``av.AudioResampler``) converts rate and sample format, so any codec PyAV can decode
    (AAC, Opus, MP3, WAV, FLAC, ...) arrives in the one format the audio encoders expect. The down-mix is a plain
    channel average done here: FFmpeg's own stereo-to-mono matrix adds the channels at -3 dB each, which lifts
    correlated (typical) stereo by 3 dB and clips loud tracks.
    """
    import av

    if sample_rate < 1:
        raise ValueError("sample_rate must be >= 1")
    limit = None if max_seconds is None else max(1, round(max_seconds * sample_rate))
    chunks: list[np.ndarray] = []
    total = 0
    with _open_container(path) as container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", path)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # planar, channel layout kept
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().mean(axis=0, dtype=np.float32)
                    chunks.append(chunk)
                    total += chunk.size
                if limit is not None and total >= limit:
                    break
            else:
                for out in resampler.resample(None):  # flush the resampler's delay line
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
        except av.error.FFmpegError as exc:
            if not chunks:
                raise MediaError("corrupt", path, str(exc)) from exc
    if not chunks:
        raise MediaError("no_audio", path)
    audio = np.concatenate(chunks).astype(np.float32, copy=False)
    if limit is not None:
        audio = audio[:limit]
    return np.clip(audio, -1.0, 1.0)


def load_image(path: str | Path, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), EXIF-rotated and downscaled to ``max_side``.

    Pillow's decompression-bomb guard stays on (``too_large``); JPEGs are decoded at reduced size directly
    (``draft``), which is several times faster for camera-sized covers.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = _existing_file(Path(path))
    try:
        with Image.open(p) as im:
            if max_side and im.format == "JPEG":
                im.draft("RGB", (max_side, max_side))
            im = ImageOps.exif_transpose(im).convert("RGB")
            if max_side:
                im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise MediaError("too_large", p, str(exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise MediaError("corrupt", p, str(exc)) from exc


class MediaSource(Protocol):
    """What ``decode_media`` reads from a content event (``streams.schemas.ContentEvent`` fits)."""

    @property
    def cover_path(self) -> str | None: ...

    @property
    def keyframe_paths(self) -> Sequence[str]: ...

    @property
    def video_path(self) -> str | None: ...

    @property
    def audio_path(self) -> str | None: ...


@dataclass
class MediaInputs:
    """Decoded media of one item: RGB frames (may be empty), mono audio (or None), and why anything is missing.

    ``errors`` maps the event field (``cover_path``, ``keyframe_paths``, ``video_path``, ``audio_path``) to a
    ``MediaError.reason``, so the caller can count failures and still encode the modalities that worked.
    """

    frames: list[np.ndarray] = field(default_factory=list)
    audio: np.ndarray | None = None
    errors: dict[str, str] = field(default_factory=dict)


def decode_media(
    source: MediaSource,
    *,
    roots: Sequence[str | Path] | None,
    max_frames: int = 4,
    sample_rate: int = 16_000,
    max_audio_s: float | None = 120.0,
    max_side: int | None = DEFAULT_MAX_SIDE,
    want_frames: bool = True,
    want_audio: bool = True,
    strict: bool = False,
) -> MediaInputs:
    """Frames and audio for one content event, every path confined to ``roots`` first.

    Frames: the cover, then explicit keyframe images, then, only if no keyframe images were given, keyframes of
    the video, up to ``max_frames`` in all. Audio: ``audio_path`` if set, else the video's own track (a silent
    video is normal, not an error). With ``strict=False`` a bad path costs only its modality (recorded in
    ``errors``); with ``strict=True`` the first ``MediaError`` is raised.
    """
    out = MediaInputs()

    def attempt(field_name: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except MediaError as exc:
            if strict:
                raise
            out.errors.setdefault(field_name, exc.reason)
            return None

    if want_frames:
        images: list[tuple[str, str]] = []
        if source.cover_path:
            images.append(("cover_path", source.cover_path))
        images.extend(("keyframe_paths", p) for p in source.keyframe_paths)
        for field_name, raw in images[:max_frames]:
            img = attempt(field_name, lambda r: load_image(confine_path(r, roots), max_side), raw)
            if img is not None:
                out.frames.append(img)
        budget = max_frames - len(out.frames)
        if source.video_path and not source.keyframe_paths and budget > 0:
            frames = attempt(
                "video_path", lambda r: extract_keyframes(confine_path(r, roots), budget, max_side), source.video_path
            )
            out.frames.extend(frames or [])
    if want_audio:
        if source.audio_path:
            out.audio = attempt(
                "audio_path",
                lambda r: extract_audio(confine_path(r, roots), sample_rate, max_audio_s),
                source.audio_path,
            )
        elif source.video_path and "video_path" not in out.errors:
            try:
                out.audio = extract_audio(confine_path(source.video_path, roots), sample_rate, max_audio_s)
            except MediaError as exc:
                if exc.reason not in ("no_audio_stream", "no_audio"):
                    if strict:
                        raise
                    out.errors.setdefault("video_path", exc.reason)
    return out
