"""Media decoding, frame/audio encoders, fusion and micro-batching: behaviour on real and synthetic media.

Synthetic media are generated here with PyAV (tiny MPEG-4 + AAC files), so decoding is tested without the
dataset; the EfficientNet checks use the real MicroLens keyframes and skip cleanly without ../shared. CLIP and
wav2vec2 run with random weights (none ship offline): those tests check wiring and shapes, not semantics.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from encoders.audio import AudioFeatureEncoder, Wav2Vec2AudioEncoder
from encoders.batching import MicroBatcher
from encoders.fusion import blend, fuse, projection
from encoders.image import ClipImageEncoder, EfficientNetImageEncoder, shipped_efficientnet_weights
from encoders.video import MediaError, confine_path, decode_media, extract_audio, extract_keyframes, load_image
from streams.settings import default_datasets_dir

SR = 16_000
VIDEOS = Path(os.environ.get("LIVELENS_DATASETS_DIR", default_datasets_dir())) / "microlens-50k" / "videos"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Two cores shared by many processes: spinning OpenMP threads were measured ~10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_video(path: Path, seconds: int = 4, fps: int = 10, gop: int = 10, audio: bool = True) -> Path:
    """A tiny MPEG-4 video whose brightness steps up every second (keyframe every ``gop`` frames) + a 440 Hz tone."""
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.codec_context.gop_size = gop
        a = out.add_stream("aac", rate=44_100) if audio else None
        if a is not None:
            a.layout = "stereo"
        for i in range(seconds * fps):
            level = 30 + 50 * (i // fps)
            img = np.full((48, 64, 3), level, dtype=np.uint8)
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in v.encode():
            out.mux(pkt)
        if a is not None:
            n, chunk = seconds * 44_100, 1024
            t = np.arange(n) / 44_100
            tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for start in range(0, n, chunk):
                block = np.stack([tone[start : start + chunk]] * 2)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout="stereo")
                frame.sample_rate = 44_100
                frame.pts = start
                frame.time_base = Fraction(1, 44_100)
                for pkt in a.encode(frame):
                    out.mux(pkt)
            for pkt in a.encode():
                out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_video(root / "clip.mp4")
    make_video(root / "silent.mp4", seconds=2, audio=False)
    (root / "garbage.mp4").write_bytes(os.urandom(4096))
    (root / "garbage.jpg").write_bytes(b"not an image" * 10)
    from PIL import Image

    Image.fromarray(np.full((300, 600, 3), (200, 30, 30), dtype=np.uint8)).save(root / "cover.jpg")
    return root


@pytest.fixture(scope="module")
def real_frames() -> dict[str, list[np.ndarray]]:
    if not VIDEOS.is_dir():
        pytest.skip(f"real videos not found under {VIDEOS}")
    return {p.stem: extract_keyframes(p, 4) for p in sorted(VIDEOS.glob("*.mp4"))[:3]}


@pytest.fixture(scope="module")
def effnet() -> EfficientNetImageEncoder:
    return EfficientNetImageEncoder(device="cpu", batch_size=8)


# --- decoding ----------------------------------------------------------------------------------------------


def test_keyframes_are_spread_in_time_order_and_bounded(media: Path) -> None:
    frames = extract_keyframes(media / "clip.mp4", max_frames=3, max_side=32)
    assert len(frames) == 3
    assert all(f.dtype == np.uint8 and f.shape == (24, 32, 3) for f in frames)
    levels = [float(f.mean()) for f in frames]
    # 4 keyframes at brightness 30/80/130/180: the evenly spread 3 are the first, one middle and the last.
    assert levels == sorted(levels)
    assert levels[0] == pytest.approx(30, abs=8) and levels[-1] == pytest.approx(180, abs=8)
    assert len(extract_keyframes(media / "clip.mp4", max_frames=10)) == 4  # only keyframes, never more


def test_audio_is_mono_16k_of_the_right_length(media: Path) -> None:
    audio = extract_audio(media / "clip.mp4", SR)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(4 * SR, rel=0.05)
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.1)  # the 0.5 sine survived
    assert len(extract_audio(media / "clip.mp4", SR, max_seconds=1.5)) == int(1.5 * SR)


def test_media_errors_have_reasons(media: Path) -> None:
    cases = {
        "not_found": lambda: extract_keyframes(media / "nope.mp4"),
        "not_a_file": lambda: extract_audio(media),
        "corrupt": lambda: extract_keyframes(media / "garbage.mp4"),
        "no_audio_stream": lambda: extract_audio(media / "silent.mp4"),
    }
    for reason, call in cases.items():
        with pytest.raises(MediaError) as info:
            call()
        assert info.value.reason == reason
        assert isinstance(info.value, ValueError)
    with pytest.raises(MediaError, match="corrupt"):
        load_image(media / "garbage.jpg")
    cover = load_image(media / "cover.jpg", max_side=100)
    assert cover.shape == (50, 100, 3)


def test_decode_media_degrades_per_modality(media: Path) -> None:
    event = SimpleNamespace(
        cover_path="cover.jpg", keyframe_paths=[], video_path="clip.mp4", audio_path="../outside.wav"
    )
    out = decode_media(event, roots=[media], max_frames=3)
    assert len(out.frames) == 3  # cover + 2 video keyframes
    assert out.audio is None and out.errors == {"audio_path": "path_outside_roots"}
    silent = decode_media(
        SimpleNamespace(cover_path=None, keyframe_paths=[], video_path="silent.mp4", audio_path=None), roots=[media]
    )
    assert silent.frames and silent.audio is None and silent.errors == {}  # a silent video is normal
    broken = SimpleNamespace(cover_path="garbage.jpg", keyframe_paths=["missing.jpg"], video_path=None, audio_path=None)
    assert decode_media(broken, roots=[media]).errors == {"cover_path": "corrupt", "keyframe_paths": "not_found"}
    with pytest.raises(MediaError, match="corrupt"):
        decode_media(broken, roots=[media], strict=True)


def test_confine_path_rejects_escapes_and_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "secret"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.mp4").write_bytes(b"x")
    (root / "sub" / "ok.mp4").write_bytes(b"x")
    (root / "link_out").symlink_to(outside)
    (root / "link_in.mp4").symlink_to(root / "sub" / "ok.mp4")
    assert confine_path("sub/ok.mp4", [root]) == (root / "sub" / "ok.mp4").resolve()
    assert confine_path(root / "link_in.mp4", [root]) == (root / "sub" / "ok.mp4").resolve()
    for bad in [
        "../secret/x.mp4",
        str(root / "sub" / ".." / ".." / "secret" / "x.mp4"),
        "link_out/x.mp4",
        "/etc/passwd",
    ]:
        with pytest.raises(MediaError) as info:
            confine_path(bad, [root])
        assert info.value.reason == "path_outside_roots"
    with pytest.raises(MediaError, match="path_outside_roots"):
        confine_path("sub/ok.mp4", [])  # no roots configured: fail closed
    with pytest.raises(MediaError, match="bad_path"):
        confine_path("a\x00b", [root])
    assert confine_path(outside / "x.mp4", None) == (outside / "x.mp4").resolve()  # explicit opt-out


# --- frames -------------------------------------------------------------------------------------------------


def test_efficientnet_loads_the_shipped_imagenet_weights(effnet: EfficientNetImageEncoder) -> None:
    """The weights really classify: Grace Hopper's portrait (shipped with matplotlib) reads as a uniform/gown."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        pytest.skip("matplotlib sample image not installed")
    head = torch.load(shipped_efficientnet_weights(), map_location="cpu", weights_only=True)
    pixels = effnet._to_tensor(Image.open(path).convert("RGB"))[None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = effnet.model(pixels) @ head["_fc.weight"].T + head["_fc.bias"]
    top5 = set(logits.topk(5).indices[0].tolist())
    assert 652 in top5  # ImageNet "military uniform"
    assert top5 & {400, 457, 667, 906}  # academic gown, bow tie, mortarboard, Windsor tie


def test_efficientnet_frames_from_the_same_shot_are_closer(
    effnet: EfficientNetImageEncoder, real_frames: dict[str, list[np.ndarray]]
) -> None:
    videos = list(real_frames.values())
    assert len(videos) >= 2
    frame = max(videos[0], key=lambda f: float(f.std()))  # a busy frame, not a black fade
    h, w = frame.shape[:2]
    same = [frame, frame[:, ::-1], frame[h // 10 :, w // 12 : w - w // 12], frame[:, ::-1][: h - h // 8]]
    others = [f for v in videos[1:] for f in v]
    vec_same = effnet.encode(same)
    vec_other = effnet.encode(others)
    assert vec_same.shape == (4, 1280) and np.allclose(np.linalg.norm(vec_same, axis=1), 1, atol=1e-4)
    within = (vec_same @ vec_same.T)[np.triu_indices(4, 1)]
    across = vec_same @ vec_other.T
    assert within.min() > across.max()
    items = effnet.encode_items([videos[0], videos[1], [videos[0][0]]])
    assert items.shape == (3, 1280)
    with pytest.raises(ValueError):
        effnet.encode_items([[]])


def test_efficientnet_rejects_mismatched_checkpoints() -> None:
    target = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="does not fit"):
        EfficientNetImageEncoder._map_state(target, {"x": torch.zeros(3), "y": torch.zeros(4)})
    with pytest.raises(ValueError, match="needs"):
        EfficientNetImageEncoder._map_state(target, {"x": torch.zeros(3)})
    mapped = EfficientNetImageEncoder._map_state(target, {"x": torch.ones(3), "y": torch.ones(2, 2), "_fc.bias": 0})
    assert list(mapped) == ["a", "b"] and float(mapped["a"].sum()) == 3


def test_clip_random_towers_have_the_right_shapes() -> None:
    """Random weights (no CLIP ships offline): only the wiring is tested, similarities here mean nothing."""
    with pytest.raises(ValueError, match="needs weights"):
        ClipImageEncoder("ViT-S-32")
    with pytest.raises(FileNotFoundError):
        ClipImageEncoder("ViT-S-32", "/nonexistent/clip.pt")
    clip = ClipImageEncoder("ViT-S-32", random_init=True, device="cpu")
    assert clip.random_init and clip.name.endswith("-random") and clip.dim == 384
    img = clip.encode([np.zeros((90, 160, 3), dtype=np.uint8), np.full((64, 64, 3), 200, dtype=np.uint8)])
    txt = clip.encode_text(["a cooking video", "a football match", ""])
    assert img.shape == (2, 384) and txt.shape == (3, 384)
    assert np.allclose(np.linalg.norm(np.vstack([img, txt]), axis=1), 1, atol=1e-4)


# --- audio --------------------------------------------------------------------------------------------------

T = np.arange(3 * SR) / SR
RNG = np.random.default_rng(7)
SINE = (0.5 * np.sin(2 * np.pi * 440 * T)).astype(np.float32)
NOISE = np.clip(0.3 * RNG.standard_normal(T.size), -1, 1).astype(np.float32)
SILENCE = np.zeros(T.size, dtype=np.float32)
# Speech-like: a voiced buzz (harmonics of 150 Hz) opening and closing ~4 times per second, like syllables.
BUZZ = sum(np.sin(2 * np.pi * 150 * k * T) / k for k in range(1, 8))
SYLLABLES = (0.3 * BUZZ * np.clip(np.sin(2 * np.pi * 4 * T), 0, None) ** 2).astype(np.float32)
STEADY = (0.3 * BUZZ).astype(np.float32)


@pytest.fixture(scope="module")
def audio_enc() -> AudioFeatureEncoder:
    return AudioFeatureEncoder(SR)


def test_descriptors_tell_tone_noise_and_silence_apart(audio_enc: AudioFeatureEncoder) -> None:
    sine, noise, silence = (audio_enc.describe(x) for x in (SINE, NOISE, SILENCE))
    assert sine["loudness_dbfs"] == pytest.approx(-9.03, abs=0.2)  # 0.5 * full-scale sine
    assert silence["loudness_dbfs"] <= -100 and silence["silent"] and silence["texture"] == "silence"
    assert sine["spectral_flatness"] < 0.01 < 0.4 < noise["spectral_flatness"] < 0.7
    assert noise["zero_crossing_rate"] > 0.4 > 0.1 > sine["zero_crossing_rate"]
    assert sine["texture"] == "tonal/music-like" and noise["texture"] == "noise-like"
    assert sine["duration_s"] == pytest.approx(3.0)


def test_speech_rhythm_indicator(audio_enc: AudioFeatureEncoder) -> None:
    syl, steady = audio_enc.describe(SYLLABLES), audio_enc.describe(STEADY)
    assert syl["modulation_4hz"] > 0.2 > 0.02 > steady["modulation_4hz"]
    assert syl["texture"] == "speech-like" and steady["texture"] != "speech-like"


def test_audio_vectors(audio_enc: AudioFeatureEncoder) -> None:
    clips = [SINE, 0.5 * SINE, NOISE, SILENCE, SYLLABLES, STEADY, SINE[:100]]
    vecs = audio_enc.encode(clips)
    assert vecs.shape == (7, 132) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[0, 3]  # a quieter tone is still closer than noise
    fitted = AudioFeatureEncoder(SR).fit(clips)
    assert fitted.encode([SINE]).shape == (1, 132) and fitted.mean_ is not None
    with pytest.raises(TypeError):
        audio_enc.encode(SINE)  # type: ignore[arg-type]


def test_wav2vec2_needs_a_local_path_and_pools_real_frames(tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    with pytest.raises(ValueError, match="model_path"):
        Wav2Vec2AudioEncoder(None)
    with pytest.raises(FileNotFoundError):
        Wav2Vec2AudioEncoder(tmp_path / "missing")
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
    )  # fmt: skip
    torch.manual_seed(0)
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp_path / "w2v")
    enc = Wav2Vec2AudioEncoder(tmp_path / "w2v", device="cpu", batch_size=4)
    assert enc.dim == 32 and enc.sample_rate == SR
    short, long = SINE[: SR + 3000], NOISE
    alone = enc.encode([short])
    together = enc.encode([long, short])
    assert together.shape == (2, 32) and np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    assert np.allclose(alone[0], together[1], atol=1e-4)  # padding frames never enter the mean


# --- fusion and batching ----------------------------------------------------------------------------------


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal(n).astype(np.float32)
    return v / np.linalg.norm(v)


def test_fusion_keeps_text_space_and_handles_missing_modalities() -> None:
    rng = np.random.default_rng(1)
    text, image, audio = _unit(rng, 384), _unit(rng, 1280), _unit(rng, 132)
    weights = {"text": 1.0, "image": 0.5, "audio": 0.5}
    full = fuse({"text": text, "image": image, "audio": audio}, weights, 384)
    assert full.vector.shape == (384,) and full.vector.dtype == np.float32
    assert np.linalg.norm(full.vector) == pytest.approx(1, abs=1e-5)
    assert full.weights == pytest.approx({"text": 0.5, "image": 0.25, "audio": 0.25})
    assert np.array_equal(full.modalities["text"], text)  # text is not projected
    assert float(full.vector @ text) > 0.75  # image/audio only perturb the text direction

    text_only = fuse({"text": text, "image": None, "audio": np.zeros(132)}, weights, 384)
    assert text_only.weights == {"text": 1.0} and np.allclose(text_only.vector, text, atol=1e-6)
    no_text = fuse({"image": image, "audio": audio}, weights, 384)
    assert no_text.weights == pytest.approx({"image": 0.5, "audio": 0.5})
    assert np.linalg.norm(no_text.vector) == pytest.approx(1, abs=1e-5)
    assert set(fuse({"text": text, "video": image}, weights, 384).weights) == {"text"}  # unweighted: ignored
    with pytest.raises(ValueError, match="no usable"):
        fuse({"image": None, "text": np.full(384, np.nan)}, weights, 384)
    with pytest.raises(ValueError, match=">= 0"):
        fuse({"text": text}, {"text": -1.0}, 384)


def test_projection_is_deterministic_and_preserves_geometry() -> None:
    p = projection("image", 1280, 384)
    assert p.shape == (1280, 384) and not p.flags.writeable
    assert np.allclose(p.T @ p, np.eye(384), atol=1e-4)  # orthonormal columns
    assert projection("image", 1280, 384) is p  # cached
    projection.cache_clear()
    assert np.array_equal(projection("image", 1280, 384), p)  # same seed -> same matrix after a restart
    assert not np.allclose(projection("audio", 1280, 384), p)  # but per modality
    up = projection("audio", 132, 384)
    assert np.allclose(up @ up.T, np.eye(132), atol=1e-4)  # expanding is an isometry
    rng = np.random.default_rng(2)
    base = _unit(rng, 1280)
    near, far = base + 0.3 * _unit(rng, 1280), _unit(rng, 1280)
    a, b, c = (fuse({"image": v}, {"image": 1.0}, 384).vector for v in (base, near, far))
    assert float(a @ b) > 0.8 and abs(float(a @ c)) < 0.25  # similar frames stay similar after projection


def test_blend() -> None:
    rng = np.random.default_rng(3)
    a, b = _unit(rng, 16), _unit(rng, 16)
    assert np.allclose(blend(a, b, 0.0), a, atol=1e-6) and np.allclose(blend(a, b, 1.0), b, atol=1e-6)
    mid = blend(a * 5, b, 0.3)  # inputs are normalised first
    assert np.linalg.norm(mid) == pytest.approx(1, abs=1e-5)
    assert float(mid @ a) > float(mid @ b)
    assert np.allclose(blend(a, -a, 0.5), -a)  # exact cancellation: recent wins
    with pytest.raises(ValueError):
        blend(a, b, 1.5)


def test_micro_batcher_by_size_and_by_wait() -> None:
    mb: MicroBatcher[int] = MicroBatcher(max_size=3, max_wait_s=0.5)
    assert mb.deadline is None and not mb.due(100.0)
    assert mb.add(1, 10.0) is None and mb.add(2, 10.2) is None
    assert mb.deadline == pytest.approx(10.5) and not mb.due(10.4) and mb.due(10.5)
    assert mb.add(3, 10.3) == [1, 2, 3] and len(mb) == 0 and mb.deadline is None
    mb.add(4, 20.0)
    assert mb.due(20.6) and mb.drain() == [4] and mb.drain() == []
    assert MicroBatcher[str](1, 0.0).add("x", 0.0) == ["x"]
    with pytest.raises(ValueError):
        MicroBatcher(0, 1.0)


# --- cross-item batching -----------------------------------------------------------------------------------


def test_pipeline_batch_equals_per_item(media: Path) -> None:
    """One batched call (frames of all items in one image forward, clips in one audio call) must give each
    item exactly what it gets alone: same modalities, same errors, same fused vector."""
    from encoders.pipeline import MediaPipeline
    from streams.params import encoder_params_from_settings
    from streams.settings import Settings

    settings = Settings(media_roots=[media], keyframes=2, device="cpu", encoder_batch_size=8)
    pipeline = MediaPipeline(encoder_params_from_settings(settings))

    def src(cover: str | None = None, video: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(
            cover_path=cover and str(media / cover),
            keyframe_paths=[],
            video_path=video and str(media / video),
            audio_path=None,
        )

    sources = [
        src(video="clip.mp4"),  # frames + audio
        src(),  # text only
        src(cover="cover.jpg", video="silent.mp4"),  # cover + video frames, no audio track
        src(video="garbage.mp4"),  # undecodable: text only, error reported
        src(cover="cover.jpg"),
    ]
    rng = np.random.default_rng(0)
    text = rng.standard_normal((len(sources), 384)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)

    batched = pipeline.item_vectors(sources, text)
    alone = [pipeline.item_vector(s, t) for s, t in zip(sources, text, strict=True)]

    assert [b.modalities for b in batched] == [a.modalities for a in alone]
    assert batched[0].modalities == ["audio", "image", "text"]
    assert batched[1].modalities == ["text"] and batched[3].modalities == ["text"]
    assert [b.media_errors for b in batched] == [a.media_errors for a in alone]
    assert batched[3].media_errors
    for b, a in zip(batched, alone, strict=True):
        np.testing.assert_allclose(b.vector, a.vector, atol=1e-5)
    # Items really differ, so the check above would catch rows handed to the wrong item.
    assert not np.allclose(batched[0].vector, batched[4].vector, atol=1e-3)
    with pytest.raises(ValueError):
        pipeline.item_vectors(sources, text[:2])
