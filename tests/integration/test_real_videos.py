"""The three real MicroLens videos (HEVC + AAC) through decoding, the shipped encoders and fusion.

No broker or Milvus here: this checks that real content events become sensible fused vectors. Skips cleanly
when ../shared/datasets is absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.audio import AudioFeatureEncoder
from encoders.fusion import fuse
from encoders.image import EfficientNetImageEncoder
from encoders.text import MiniLMTextEncoder
from encoders.video import MediaInputs, decode_media
from streams.schemas import ContentEvent, ContentKind
from streams.settings import default_datasets_dir

SR = 16_000
VIDEOS = Path(os.environ.get("LIVELENS_DATASETS_DIR", default_datasets_dir())) / "microlens-50k" / "videos"
TITLES = {  # from MicroLens-50k_titles.csv
    "1002": "appropriate play meme brothers if there is infringement contact delete # King glory # Dream tears",
    "10034": "demon water water is also super handsome OK # water prince # Nine Mo exclusive topic",
    "10040": "as a professional to send the admission notice, I will reveal how the admission notice is delivered. "
    "# College Entrance examination Admission Notice # This is China Post",
}
QUERIES = {
    "1002": "King of Glory mobile game play",
    "10034": "handsome water prince clip",
    "10040": "college admission letter delivered by China Post",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def decoded() -> dict[str, tuple[ContentEvent, MediaInputs]]:
    if not all((VIDEOS / f"{vid}.mp4").is_file() for vid in TITLES):
        pytest.skip(f"real videos not found under {VIDEOS}")
    out = {}
    for vid, title in TITLES.items():
        event = ContentEvent(item_id=vid, kind=ContentKind.short_video, title=title, video_path=f"{vid}.mp4")
        out[vid] = (event, decode_media(event, roots=[VIDEOS], max_frames=4, sample_rate=SR))
    return out


def test_real_videos_decode_to_keyframes_and_audio(decoded: dict[str, tuple[ContentEvent, MediaInputs]]) -> None:
    import av

    for vid, (_, media) in decoded.items():
        assert media.errors == {}, vid
        assert 1 <= len(media.frames) <= 4
        assert all(f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8 for f in media.frames)
        with av.open(str(VIDEOS / f"{vid}.mp4")) as container:
            duration = container.duration / av.time_base
        assert media.audio is not None and media.audio.dtype == np.float32
        assert len(media.audio) == pytest.approx(duration * SR, rel=0.05), vid
        assert AudioFeatureEncoder(SR).describe(media.audio)["loudness_dbfs"] > -40  # real soundtracks, not silence


def test_real_videos_get_fused_embeddings_in_the_text_space(
    decoded: dict[str, tuple[ContentEvent, MediaInputs]],
) -> None:
    text_enc = MiniLMTextEncoder(device="cpu")
    image_enc = EfficientNetImageEncoder(device="cpu")
    audio_enc = AudioFeatureEncoder(SR)
    ids = list(decoded)
    texts = text_enc.encode([decoded[i][0].text() for i in ids])
    images = image_enc.encode_items([decoded[i][1].frames for i in ids])
    audios = audio_enc.encode([decoded[i][1].audio for i in ids])
    weights = {"text": 1.0, "image": 0.35, "audio": 0.15}
    fused = [
        fuse({"text": t, "image": im, "audio": au}, weights, text_enc.dim)
        for t, im, au in zip(texts, images, audios, strict=True)
    ]
    vectors = np.stack([f.vector for f in fused])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert all(set(f.modalities) == {"text", "image", "audio"} for f in fused)
    # Media perturb, text still leads: each text query retrieves its own video first among the fused vectors.
    queries = text_enc.encode([QUERIES[i] for i in ids])
    assert list((queries @ vectors.T).argmax(axis=1)) == [0, 1, 2]
    assert all(float(f.vector @ t) > 0.8 for f, t in zip(fused, texts, strict=True))
