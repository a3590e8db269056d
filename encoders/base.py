"""The encoder contract shared by text (and later frame/audio) encoders, plus small helpers.

Everything downstream (Milvus index, taste vectors, cosine ranking) assumes unit-norm float32 rows of a fixed
``dim``, so that contract lives here once instead of being re-checked by each caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Maps a batch of inputs to L2-normalised float32 vectors of shape (n, dim).

    Implementations never return zero rows (an empty text still gets a real embedding), so inner products are
    always cosine similarities and no caller needs a zero-norm special case.
    """

    name: str
    dim: int
    device: str

    def encode(self, inputs: Sequence[str]) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise unit norm as float32; zero rows stay zero rather than becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def resolve_device(pref: str) -> str:
    """Turn the ``auto`` setting into a concrete torch device, so the same config runs on laptops and GPU nodes."""
    if pref != "auto":
        return pref
    import torch  # local: hash-only deployments should not pay torch's import time

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_texts(inputs: Sequence[str]) -> list[str]:
    """Reject a bare string (a Sequence[str] of characters) that would silently encode one row per character."""
    if isinstance(inputs, str | bytes):
        raise TypeError("encode() takes a sequence of strings, not a single string; wrap it in a list")
    return [str(t) for t in inputs]
