"""Adam's state as plain arrays and back: how the torch models' snapshots carry their optimiser, so a
restored model continues learning exactly as the original would."""

from __future__ import annotations

from typing import Any

import numpy as np


def adam_state(optimizer: Any) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(step per parameter, moments as ``adam.<n>.m`` / ``adam.<n>.v`` arrays)."""
    steps: dict[str, float] = {}
    arrays: dict[str, np.ndarray] = {}
    for n, st in optimizer.state_dict()["state"].items():
        arrays[f"adam.{n}.m"] = st["exp_avg"].numpy().copy()
        arrays[f"adam.{n}.v"] = st["exp_avg_sq"].numpy().copy()
        steps[str(n)] = float(st["step"])
    return steps, arrays


def load_adam_state(optimizer: Any, steps: dict[str, float], arrays: dict[str, np.ndarray]) -> None:
    import torch

    opt = optimizer.state_dict()
    opt["state"] = {
        int(n): {
            "step": torch.tensor(step),
            "exp_avg": torch.from_numpy(arrays[f"adam.{n}.m"].copy()),
            "exp_avg_sq": torch.from_numpy(arrays[f"adam.{n}.v"].copy()),
        }
        for n, step in steps.items()
    }
    optimizer.load_state_dict(opt)
