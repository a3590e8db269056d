"""One item vector from whatever an item has: its text, frames (cover/keyframes/video) and audio.

The text vector is the retrieval space (text queries and text-only items stay comparable); frames and
audio are decoded (paths confined to the configured media roots), encoded and fused into it with the
configured weights (``encoders.fusion``). Image and audio models load on the first item with media.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.fusion import fuse, to_common
from encoders.video import MediaSource, decode_media


@dataclass
class ItemVectors:
    vector: np.ndarray
    modalities: list[str]
    media_errors: dict[str, str] = field(default_factory=dict)
    # each modality's unit vector in the common dim (what the fusion summed); kept for search
    parts: dict[str, np.ndarray] = field(default_factory=dict)


def has_media(source: MediaSource) -> bool:
    return bool(source.cover_path or source.keyframe_paths or source.video_path or source.audio_path)


class MediaPipeline:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._image: Any = None
        self._audio: Any = None
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        from encoders.audio import build_audio_encoder
        from encoders.image import build_image_encoder

        self._image = build_image_encoder(self.settings)
        self._audio = build_audio_encoder(self.settings)
        self._loaded = True

    def media_vectors(self, source: MediaSource) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Each media modality's own vector (image, audio) and the errors of media that failed to decode."""
        if not has_media(source):
            return {}, {}
        self._load()
        s = self.settings
        media = decode_media(
            source,
            roots=s.media_roots,
            max_frames=s.keyframes,
            sample_rate=s.audio_sample_rate,
            max_audio_s=s.audio_max_seconds,
            want_frames=self._image is not None,
            want_audio=self._audio is not None,
        )
        vectors: dict[str, np.ndarray] = {}
        if media.frames and self._image is not None:
            vectors["image"] = self._image.encode_items([media.frames])[0]
        if media.audio is not None and len(media.audio) and self._audio is not None:
            vectors["audio"] = self._audio.encode([media.audio])[0]
        return vectors, dict(media.errors)

    def item_vector(self, source: MediaSource, text_vector: np.ndarray) -> ItemVectors:
        """Fuse the text vector with the item's media; media that fail to decode are skipped and reported."""
        if not has_media(source):
            return ItemVectors(text_vector, ["text"])
        media, errors = self.media_vectors(source)
        fused = fuse({"text": text_vector, **media}, self.settings.fusion_weights, len(text_vector))
        return ItemVectors(fused.vector, sorted(fused.modalities), errors, dict(fused.modalities))

    def image_query(self, texts: list[str], dim: int) -> np.ndarray | None:
        """Text queries in the image part's space when the image tower is text-aligned (CLIP); else None.

        The CLIP text vector goes through the same fixed projection as CLIP image vectors
        (``encoders.fusion.to_common``), which keeps their inner products, so a query can match frames.
        """
        self._load()
        encode_text = getattr(self._image, "encode_text", None)
        if encode_text is None:
            return None
        return np.stack([to_common("image", v, dim) for v in encode_text(texts)])
