"""Late fusion of per-modality vectors into the one vector an item is indexed and ranked by.

Method. Each modality arrives as a unit vector in its own space (text 384, EfficientNet 1280, audio 132, ...).
Every modality except text-of-the-right-size is mapped to the common ``dim`` by a fixed random projection with
orthonormal columns/rows (Johnson-Lindenstrauss): inner products *within* a modality are approximately kept
(exactly, when projecting up), so two items with similar frames still get similar image parts. The matrix
depends only on (modality, in_dim, out_dim) through a hash-derived seed, so every worker, host and restart
computes the same one, and nothing has to be trained, stored or shipped. The fused vector is the weighted sum of
the modalities present, with the weights renormalised over what is present, then L2-normalised.

Why this shape. The text space stays the retrieval space: text is not projected, so a text query and a
text-only item are compared exactly as the text encoder intended, and items without frames or audio stay
comparable with those that have them. A projected image or audio vector is nearly orthogonal to any text vector
(random directions in 384-d), so it acts as a bounded perturbation of at most its renormalised weight: it
separates or joins items that look or sound alike without overriding what the titles say.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from encoders.base import l2_normalize

__all__ = ["DEFAULT_WEIGHTS", "FusedItem", "blend", "fuse", "projection"]

TEXT = "text"
DEFAULT_WEIGHTS: dict[str, float] = {"text": 1.0, "image": 0.35, "audio": 0.15}


@dataclass(frozen=True)
class FusedItem:
    """The fused unit vector and the per-modality unit vectors (already in the common ``dim``) that built it.

    ``weights`` are the renormalised weights actually used (they sum to 1 over the modalities present).
    """

    vector: np.ndarray
    modalities: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


def _seed(modality: str, in_dim: int, out_dim: int) -> int:
    digest = hashlib.blake2b(f"livelens-fusion:{modality}:{in_dim}:{out_dim}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@lru_cache(maxsize=64)
def projection(modality: str, in_dim: int, out_dim: int) -> np.ndarray:
    """The fixed (in_dim, out_dim) float32 projection for a modality; read-only and cached per process.

    Built by QR of a seeded Gaussian matrix: orthonormal columns when reducing (a random ``out_dim``-d
    subspace, norms shrink by ~sqrt(out/in) which the per-modality renormalisation undoes), orthonormal rows when
    expanding (an exact isometry).
    """
    if in_dim < 1 or out_dim < 1:
        raise ValueError("dims must be >= 1")
    rng = np.random.default_rng(_seed(modality, in_dim, out_dim))
    tall = max(in_dim, out_dim), min(in_dim, out_dim)
    q, r = np.linalg.qr(rng.standard_normal(tall))
    q *= np.sign(np.diag(r))  # make the factorisation unique, hence identical across LAPACK builds up to rounding
    mat = q if in_dim >= out_dim else q.T
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    mat.setflags(write=False)
    return mat


def _usable(vec: np.ndarray | None) -> np.ndarray | None:
    """A 1-d finite non-zero float32 vector, or None (treated exactly like a missing modality)."""
    if vec is None:
        return None
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)) or not np.any(v):
        return None
    return v


def to_common(modality: str, vec: np.ndarray, dim: int) -> np.ndarray:
    """One modality's vector as a unit vector in the common ``dim`` (text of the same size is left as is)."""
    v = np.asarray(vec, dtype=np.float32).reshape(-1)
    if not (modality == TEXT and v.size == dim):
        v = v @ projection(modality, v.size, dim)
    return l2_normalize(v)[0]


def fuse(vectors: Mapping[str, np.ndarray | None], weights: Mapping[str, float], dim: int) -> FusedItem:
    """The weighted, renormalised fusion of the modalities present (see the module docstring for why).

    A modality is used when its vector is present, finite and non-zero and its weight is > 0; a modality with
    no weight entry gets weight 0. Raises ValueError when nothing usable remains or a weight is negative.
    """
    if dim < 1:
        raise ValueError("dim must be >= 1")
    bad = {k: w for k, w in weights.items() if not (isinstance(w, int | float) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ValueError(f"weights must be finite and >= 0: {bad}")
    present: dict[str, np.ndarray] = {}
    raw_w: dict[str, float] = {}
    for modality, vec in vectors.items():
        v = _usable(vec)
        w = float(weights.get(modality, 0.0))
        if v is None or w <= 0:
            continue
        present[modality] = to_common(modality, v, dim)
        raw_w[modality] = w
    total = sum(raw_w.values())
    if not present or total <= 0:
        raise ValueError(f"no usable modality to fuse (given: {sorted(vectors)}, weighted: {sorted(weights)})")
    used = {m: w / total for m, w in raw_w.items()}
    acc = np.zeros(dim, dtype=np.float64)
    for modality, v in present.items():
        acc += used[modality] * v
    if not np.any(acc):  # exactly opposite modalities cancelled: fall back to the heaviest one
        acc = present[max(used, key=lambda m: used[m])].astype(np.float64)
    return FusedItem(vector=l2_normalize(acc)[0], modalities=present, weights=used)


def blend(original: np.ndarray, recent: np.ndarray, alpha: float) -> np.ndarray:
    """Unit-norm ``(1 - alpha) * original + alpha * recent`` of two unit-normalised vectors.

    Live streams change while they run: the worker re-encodes a recent window and blends it in, so the item
    drifts toward what is on air now while keeping its identity (``alpha`` near 0 keeps the original). If the
    two cancel exactly, the recent vector wins.
    """
    if not (0.0 <= alpha <= 1.0):
        raise ValueError("alpha must be in [0, 1]")
    o = l2_normalize(np.asarray(original, dtype=np.float32).reshape(-1))[0]
    r = l2_normalize(np.asarray(recent, dtype=np.float32).reshape(-1))[0]
    if o.shape != r.shape:
        raise ValueError(f"shape mismatch: {o.shape} vs {r.shape}")
    mixed = (1.0 - alpha) * o.astype(np.float64) + alpha * r.astype(np.float64)
    if not np.any(np.abs(mixed) > 1e-9):
        return r
    return l2_normalize(mixed)[0]
