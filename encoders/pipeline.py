"""One item vector from whatever an item has: its text, frames (cover/keyframes/video) and audio.

The text vector is the retrieval space (text queries and text-only items stay comparable); frames and
audio are decoded (paths confined to the configured media roots), encoded and fused into it with the
configured weights (``encoders.fusion``). Image and audio models load on the first item with media.
``item_vectors`` does a batch of items: each item's media is decoded, then the frames of all items go
through the image encoder together (and all clips through the audio encoder), since one forward over
32 frames costs far less than 8 forwards over 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.fusion import fuse, to_common
from encoders.params import EncoderParams
from encoders.video import MediaInputs, MediaSource, decode_media


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
    def __init__(self, params: EncoderParams) -> None:
        self.params = params
        self._image: Any = None
        self._audio: Any = None
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        from encoders.audio import build_audio_encoder
        from encoders.image import build_image_encoder

        self._image = build_image_encoder(self.params)
        self._audio = build_audio_encoder(self.params)
        self._loaded = True

    def item_vector(self, source: MediaSource, text_vector: np.ndarray) -> ItemVectors:
        """Fuse the text vector with the item's media; media that fail to decode are skipped and reported."""
        return self.item_vectors([source], np.asarray(text_vector)[None, :])[0]

    def item_vectors(self, sources: Sequence[MediaSource], text_vectors: np.ndarray) -> list[ItemVectors]:
        """``item_vector`` for a batch: decode each item, then one image and one audio encoder call for all."""
        if len(sources) != len(text_vectors):
            raise ValueError(f"{len(sources)} sources but {len(text_vectors)} text vectors")
        decoded: list[MediaInputs | None] = [self._decode(src) if has_media(src) else None for src in sources]
        image_vecs = self._encode_frames(decoded)
        audio_vecs = self._encode_audio(decoded)
        out: list[ItemVectors] = []
        for i, (media, text_vector) in enumerate(zip(decoded, text_vectors, strict=True)):
            if media is None:
                out.append(ItemVectors(text_vector, ["text"]))
                continue
            vectors: dict[str, np.ndarray | None] = {"text": text_vector}
            if i in image_vecs:
                vectors["image"] = image_vecs[i]
            if i in audio_vecs:
                vectors["audio"] = audio_vecs[i]
            fused = fuse(vectors, self.params.fusion_weights, len(text_vector))
            out.append(ItemVectors(fused.vector, sorted(fused.modalities), dict(media.errors), dict(fused.modalities)))
        return out

    def _decode(self, source: MediaSource) -> MediaInputs:
        self._load()
        p = self.params
        return decode_media(
            source,
            roots=p.media_roots,
            max_frames=p.keyframes,
            sample_rate=p.audio_sample_rate,
            max_audio_s=p.audio_max_seconds,
            want_frames=self._image is not None,
            want_audio=self._audio is not None,
        )

    def _encode_frames(self, decoded: Sequence[MediaInputs | None]) -> dict[int, np.ndarray]:
        """Item position -> image vector, for the items that have frames (one encoder call for all)."""
        idx = [i for i, m in enumerate(decoded) if m is not None and m.frames]
        if not idx or self._image is None:
            return {}
        vecs = self._image.encode_items([decoded[i].frames for i in idx])  # type: ignore[union-attr]
        return dict(zip(idx, vecs, strict=True))

    def _encode_audio(self, decoded: Sequence[MediaInputs | None]) -> dict[int, np.ndarray]:
        """Item position -> audio vector, for the items with a non-empty clip (one encoder call for all)."""
        idx = [i for i, m in enumerate(decoded) if m is not None and m.audio is not None and len(m.audio)]
        if not idx or self._audio is None:
            return {}
        vecs = self._audio.encode([decoded[i].audio for i in idx])  # type: ignore[union-attr]
        return dict(zip(idx, vecs, strict=True))

    def media_vectors(self, source: MediaSource) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Each media modality's own vector (image, audio) and the errors of media that failed to decode."""
        if not has_media(source):
            return {}, {}
        decoded: list[MediaInputs | None] = [self._decode(source)]
        vectors = {
            name: vecs[0]
            for name, vecs in (("image", self._encode_frames(decoded)), ("audio", self._encode_audio(decoded)))
            if 0 in vecs
        }
        return vectors, dict(decoded[0].errors)  # type: ignore[union-attr]

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
