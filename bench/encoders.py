"""``livelens bench encoders`` (issue 3): items/s of each encoder per batch size, and what the pipeline costs.

Inputs are real where the project has them: MicroLens titles for text, keyframes and 16 kHz audio of the 3
MicroLens videos for frames and audio (repeated to fill a batch). Without ../shared the frame, audio and
pipeline parts are skipped with a message and text falls back to generated titles.

The pipeline figure is the path ``Handlers.index_content`` runs for a batch of content events: text
encode, media decode, frame and audio encode, fusion, and an upsert into a Milvus Lite file. Its reference
is the raw forward of the same models on the same, already decoded media at the same batch, timed in the
same run; ``pipeline_vs_forward`` is their time ratio. ``batched_vs_per_item`` compares one ``item_vectors``
call for the batch with one call per item (the path before cross-item batching).
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench import BenchOptions

DEFAULT_BATCHES = (1, 8, 32)


@dataclass
class Source:
    """A content event's media fields (the ``MediaSource`` protocol)."""

    video_path: str | None = None
    cover_path: str | None = None
    keyframe_paths: list[str] = field(default_factory=list)
    audio_path: str | None = None


def throughput(fn: Callable[[], Any], items_per_call: int, min_s: float, max_calls: int = 200) -> dict[str, float]:
    """Items/s of ``fn`` after one warm-up call, repeating until ``min_s`` has passed (at least 2 calls)."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < 2 or (time.perf_counter() - start < min_s and calls < max_calls):
        fn()
        calls += 1
    elapsed = time.perf_counter() - start
    return {
        "items_per_s": round(items_per_call * calls / elapsed, 2),
        "ms_per_call": round(1000 * elapsed / calls, 3),
        "calls": calls,
    }


def repeat_to(values: Sequence[Any], n: int) -> list[Any]:
    """The first ``n`` of ``values`` cycled (a batch larger than the real inputs reuses them)."""
    return [values[i % len(values)] for i in range(n)]


def microlens_titles(datasets_dir: Path, n: int) -> list[str]:
    path = datasets_dir / "microlens-50k" / "MicroLens-50k_titles.csv"
    if not path.is_file():
        return [f"clip {i}: street food tour #food #travel part {i % 7}" for i in range(n)]
    with open(path, newline="", encoding="utf-8") as f:
        titles = [row["title"].strip() for _, row in zip(range(n), csv.DictReader(f), strict=False)]
    return [t or "untitled" for t in titles]


def set_threads(device: str, threads: int) -> None:
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)


def bench_text(batches: Sequence[int], titles: list[str], device: str, min_s: float, console: Console) -> dict:
    from encoders.text import HashTextEncoder, MiniLMTextEncoder, MultilingualTextEncoder

    builders: dict[str, Callable[[], Any]] = {
        "minilm": lambda: MiniLMTextEncoder(None, device, max(batches)),
        "use-m3": MultilingualTextEncoder,
        "hash": HashTextEncoder,
    }
    out: dict[str, Any] = {}
    for name, build in builders.items():
        try:
            enc = build()
        except Exception as exc:  # a missing optional model must not sink the whole bench
            console.print(f"  text {name}: skipped ({exc})")
            out[name] = {"skipped": str(exc)}
            continue
        rows = {}
        for b in batches:
            batch = repeat_to(titles, b)
            rows[str(b)] = throughput(lambda enc=enc, batch=batch: enc.encode(batch), b, min_s)
        out[name] = {"dim": enc.dim, "device": getattr(enc, "device", "cpu"), "weights": "shipped", "batches": rows}
        if name == "hash":
            out[name]["weights"] = "none (hashing)"
        console.print(f"  text {name}: " + ", ".join(f"b{b} {r['items_per_s']:.0f}/s" for b, r in rows.items()))
    return out


def bench_image(batches: Sequence[int], frames: list[np.ndarray], device: str, min_s: float, console: Console) -> dict:
    from encoders.image import ClipImageEncoder, EfficientNetImageEncoder

    builders: dict[str, tuple[Callable[[], Any], str]] = {
        "efficientnet-lite0": (lambda: EfficientNetImageEncoder(None, device, max(batches)), "shipped ImageNet"),
        "clip-vit-b-32": (
            lambda: ClipImageEncoder("ViT-B-32", None, device=device, batch_size=max(batches), random_init=True),
            "RANDOM INIT (no weights ship): speed only",
        ),
    }
    out: dict[str, Any] = {}
    for name, (build, weights) in builders.items():
        enc = build()
        rows = {}
        for b in batches:
            batch = repeat_to(frames, b)
            rows[str(b)] = throughput(lambda enc=enc, batch=batch: enc.encode(batch), b, min_s)
        out[name] = {"dim": enc.dim, "device": enc.device, "weights": weights, "unit": "frames", "batches": rows}
        console.print(f"  image {name}: " + ", ".join(f"b{b} {r['items_per_s']:.1f}/s" for b, r in rows.items()))
        del enc
    return out


def tiny_wav2vec2_dir(root: Path) -> Path:
    """A random-init wav2vec2-base-shaped checkpoint on disk (none ships), so the real loader path is timed."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    path = root / "wav2vec2-random"
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(path)
    return path


def bench_audio(
    batches: Sequence[int], clips: list[np.ndarray], device: str, min_s: float, console: Console, quick: bool
) -> dict:
    from encoders.audio import AudioFeatureEncoder, Wav2Vec2AudioEncoder

    out: dict[str, Any] = {}
    enc = AudioFeatureEncoder(16_000)
    rows = {str(b): throughput(lambda b=b: enc.encode(repeat_to(clips, b)), b, min_s) for b in batches}
    seconds = round(float(np.mean([len(c) for c in clips])) / 16_000, 1)
    out["log-mel-features"] = {"dim": enc.dim, "weights": "none", "clip_s": seconds, "batches": rows}
    console.print(
        f"  audio features ({seconds} s clips): " + ", ".join(f"b{b} {r['items_per_s']:.1f}/s" for b, r in rows.items())
    )
    if quick:
        out["wav2vec2"] = {"skipped": "not in --quick"}
        return out
    # wav2vec2-base is ~95M params with attention over 50 frames/s: time 2 s clips at the two smaller batches.
    short = [c[:32_000] for c in clips]
    with tempfile.TemporaryDirectory(prefix="livelens-w2v-") as tmp:
        w2v = Wav2Vec2AudioEncoder(tiny_wav2vec2_dir(Path(tmp)), device=device, batch_size=max(batches))
        small = [b for b in batches if b <= 8]
        rows = {str(b): throughput(lambda b=b: w2v.encode(repeat_to(short, b)), b, min_s, max_calls=5) for b in small}
    out["wav2vec2-base"] = {
        "dim": w2v.dim,
        "weights": "RANDOM INIT (no weights ship): speed only",
        "clip_s": 2.0,
        "batches": rows,
    }
    console.print(
        "  audio wav2vec2-base (random init, 2 s): "
        + ", ".join(f"b{b} {r['items_per_s']:.2f}/s" for b, r in rows.items())
    )
    return out


def bench_pipeline(
    batches: Sequence[int], videos: list[Path], titles: list[str], device: str, min_s: float, console: Console
) -> dict:
    """Text + decode + frame/audio encode + fuse + Milvus Lite upsert vs the raw forwards, at each batch."""
    from encoders.pipeline import MediaPipeline
    from encoders.text import MiniLMTextEncoder
    from encoders.video import decode_media
    from ranking.index import IndexedItem
    from storage.milvus import MilvusIndex
    from streams.params import encoder_params_from_settings
    from streams.schemas import Feed
    from streams.settings import Settings

    settings = Settings(media_roots=[videos[0].parent], device=device, encoder_batch_size=max(batches))
    pipeline = MediaPipeline(encoder_params_from_settings(settings))
    text = MiniLMTextEncoder(None, device, max(batches))
    out: dict[str, Any] = {"keyframes_per_item": settings.keyframes, "audio_max_s": settings.audio_max_seconds}
    with tempfile.TemporaryDirectory(prefix="livelens-enc-") as tmp:
        index = MilvusIndex(str(Path(tmp) / "milvus.db"), "bench_items", text.dim)
        counter = iter(range(10**9))
        try:
            for b in batches:
                sources = repeat_to([Source(video_path=str(v)) for v in videos], b)
                batch_titles = repeat_to(titles, b)

                def upsert(titles: list[str], vectors: list[np.ndarray]) -> None:
                    items = [
                        IndexedItem(f"v{next(counter)}", Feed.short_video, False, 0.0, t, v)
                        for t, v in zip(titles, vectors, strict=True)
                    ]
                    index.upsert(items)

                def batched(sources: list[Source] = sources, titles: list[str] = batch_titles) -> None:
                    tv = text.encode(titles)
                    upsert(titles, [r.vector for r in pipeline.item_vectors(sources, tv)])

                def per_item(sources: list[Source] = sources, titles: list[str] = batch_titles) -> None:
                    tv = text.encode(titles)
                    upsert(titles, [pipeline.item_vector(s, v).vector for s, v in zip(sources, tv, strict=True)])

                decoded = [decode_media(s, roots=settings.media_roots, max_frames=settings.keyframes) for s in sources]

                def forward(decoded: list[Any] = decoded, titles: list[str] = batch_titles) -> None:
                    text.encode(titles)
                    pipeline._image.encode_items([m.frames for m in decoded])
                    pipeline._audio.encode([m.audio for m in decoded])

                row = {
                    "pipeline": throughput(batched, b, min_s, max_calls=20),
                    "forward_only": throughput(forward, b, min_s, max_calls=20),
                }
                if b > 1:
                    row["pipeline_per_item_calls"] = throughput(per_item, b, min_s, max_calls=20)
                    row["batched_vs_per_item"] = round(
                        row["pipeline"]["items_per_s"] / row["pipeline_per_item_calls"]["items_per_s"], 3
                    )
                row["pipeline_vs_forward"] = round(
                    row["pipeline"]["ms_per_call"] / row["forward_only"]["ms_per_call"], 3
                )
                out[str(b)] = row
                console.print(
                    f"  pipeline b{b}: {row['pipeline']['items_per_s']:.2f} items/s, forward only "
                    f"{row['forward_only']['items_per_s']:.2f} items/s "
                    f"(pipeline/forward time x{row['pipeline_vs_forward']})"
                    + (f", batched vs per-item calls x{row['batched_vs_per_item']}" if b > 1 else "")
                )
        finally:
            index.close()
    if "1" in out and "8" in out:
        out["gain_batch8_vs_batch1"] = round(
            out["8"]["pipeline"]["items_per_s"] / out["1"]["pipeline"]["items_per_s"], 3
        )
    return out


def run(options: BenchOptions, console: Console) -> dict[str, Any]:
    import torch

    from encoders.base import resolve_device
    from encoders.video import extract_audio, extract_keyframes
    from streams.settings import Settings

    settings = Settings()
    device = resolve_device(settings.device)
    threads = int(options.extra.get("threads", settings.torch_threads or 1))
    set_threads(device, threads)
    batches = list(options.batch_sizes or DEFAULT_BATCHES)
    min_s = float(options.extra.get("min_s", 0.3 if options.quick else 1.0))
    precision = "bf16/fp16 autocast" if device.startswith("cuda") else "fp32"
    console.print(f"device {device} ({precision}), torch threads {torch.get_num_threads()}, batches {batches}")
    result: dict[str, Any] = {"device": device, "precision": precision, "torch_threads": torch.get_num_threads()}

    titles = microlens_titles(settings.datasets_dir, 256)
    result["text"] = bench_text(batches, titles, device, min_s, console)

    videos = sorted((settings.datasets_dir / "microlens-50k" / "videos").glob("*.mp4"))[:3]
    if not videos:
        msg = f"no MicroLens videos under {settings.datasets_dir}: image, audio and pipeline parts skipped"
        console.print(f"[yellow]{msg}[/]")
        result["skipped"] = msg
        return result
    result["videos"] = [v.name for v in videos]
    frames = [f for v in videos for f in extract_keyframes(v, settings.keyframes)]
    clips = [extract_audio(v, 16_000, 10.0) for v in videos]
    result["image"] = bench_image(batches, frames, device, min_s, console)
    result["audio"] = bench_audio(batches, clips, device, min_s, console, options.quick)
    pipe_batches = [b for b in (1, 8) if not options.batch_sizes or b in options.batch_sizes] or batches[:1]
    result["pipeline"] = bench_pipeline(pipe_batches, videos, titles, device, min_s, console)
    return result
