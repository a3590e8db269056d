"""Which encoders to build and how: the typed parameters the encoders take (no settings object in the core).

The shell makes one from its settings (``streams.params.encoder_params_from_settings``); the settings'
defaults are read from here, so each is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from encoders.fusion import DEFAULT_WEIGHTS

TextEncoderKind = Literal["minilm", "use-m3", "hash"]
ImageEncoderKind = Literal["efficientnet", "clip", "none"]
AudioEncoderKind = Literal["features", "wav2vec2", "none"]
Device = Literal["auto", "cpu", "cuda"]

__all__ = ["AudioEncoderKind", "Device", "EncoderParams", "ImageEncoderKind", "TextEncoderKind"]


@dataclass(frozen=True, kw_only=True)
class EncoderParams:
    """Text, frame and audio encoders, media decoding and fusion.

    ``media_roots`` has no default: media paths in events must resolve inside one of them, and an empty
    tuple allows none (a deployment that configured no roots fails closed).
    """

    media_roots: tuple[Path, ...]
    device: Device = "auto"
    torch_threads: int | None = None  # torch intra-op threads; None: torch's default
    encoder_batch_size: int = 32
    text_encoder: TextEncoderKind = "minilm"
    text_model_path: Path | None = None  # None: the shipped MiniLM
    image_encoder: ImageEncoderKind = "efficientnet"
    image_model_path: Path | None = None  # None: the shipped EfficientNet-Lite0
    clip_model: str = "ViT-B-32"
    clip_checkpoint: str | None = None
    audio_encoder: AudioEncoderKind = "features"
    audio_model_path: Path | None = None
    audio_sample_rate: int = 16_000
    audio_max_seconds: float = 120.0
    keyframes: int = 4
    fusion_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
