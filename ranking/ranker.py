"""The learned ranker: one score per (user, candidate) row of the signals' feature matrix.

Why this shape: a hand-set blend of signals was tuned on one dataset and did not transfer. Here a
linear layer over the raw columns, initialised at that hand blend (so a worker that has learned
nothing yet ranks as before), plus a small MLP over standardised columns whose output starts at
zero, are trained online with a listwise softmax loss: each labelled interaction asks that its item
score highest among the candidates ranked for that user just before it. The validation figures of
the alternatives tried are in the README ("Quality").

Explanations: for each kept item the signal whose columns, replaced by their running mean, lower
the score the most is the one named in its reason, so reasons follow the learned weights.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.signal import decode_snapshot, encode_snapshot
from ranking.torch_state import adam_state, load_adam_state


@dataclass(frozen=True)
class RankerParams:
    hidden: int = 64  # width of each of the MLP's hidden layers (0: linear only)
    layers: int = 2
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    # decay of an exponential moving average of the weights, which then does the scoring (0: score with
    # the latest weights); averaging smooths the noise of small online steps
    average: float = 0.0
    # initial weights of the linear part by column name (``OnlineModels`` passes the hand blend of
    # ``RankingParams``); columns not named start at 0
    prior: Mapping[str, float] = field(default_factory=dict)
    seed: int = 17


@dataclass
class Example:
    """One labelled interaction: its candidates' features (the positive first) and its weight."""

    event_id: str
    features: np.ndarray  # float16 (candidates, columns); row 0 is the item the user engaged with
    weight: float = 1.0


def sample_negatives(event_id: str, n_rows: int, positive: int, keep: int) -> np.ndarray:
    """The positive row first, then up to ``keep`` other rows drawn without replacement, seeded by the
    event id: the same event always gives the same example."""
    others = np.delete(np.arange(n_rows), positive)
    if len(others) > keep:
        rng = np.random.default_rng(zlib.crc32(event_id.encode()))
        others = np.sort(rng.choice(others, size=keep, replace=False))
    return np.concatenate(([positive], others)).astype(np.int64)


class Ranker:
    """``score(features)`` for rows; ``step(examples)`` is one optimiser step; snapshot and restore."""

    name = "ranker"
    version = 1

    def __init__(self, columns: Sequence[str], params: RankerParams | None = None) -> None:
        import torch

        self._torch = torch
        self.params = p = params or RankerParams()
        self.columns = tuple(columns)
        self.steps = 0
        self.examples = 0
        n = len(self.columns)
        self.mean = np.zeros(n, np.float64)
        self.var = np.ones(n, np.float64)
        self.seen_rows = 0.0
        state = torch.random.get_rng_state()
        torch.manual_seed(p.seed)
        self.linear = torch.nn.Linear(n, 1, bias=False)
        with torch.no_grad():
            self.linear.weight.zero_()
            for name, w in p.prior.items():
                if name in self.columns:
                    self.linear.weight[0, self.columns.index(name)] = w
        layers: list[Any] = []
        width = n
        for _ in range(p.layers if p.hidden else 0):
            layers += [torch.nn.Linear(width, p.hidden), torch.nn.ReLU()]
            width = p.hidden
        out = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(out.weight)  # the MLP adds nothing until it has learned something
        torch.nn.init.zeros_(out.bias)
        self.mlp = torch.nn.Sequential(*layers, out)
        torch.random.set_rng_state(state)
        self.averaged: tuple[Any, Any] | None = (
            (copy.deepcopy(self.linear), copy.deepcopy(self.mlp)) if p.average > 0 else None
        )
        self.optimizer = torch.optim.Adam(
            [*self.linear.parameters(), *self.mlp.parameters()], lr=p.learning_rate, weight_decay=p.weight_decay
        )

    # --- scoring ---------------------------------------------------------------------------------
    def _forward(self, x: Any, latest: bool = True) -> Any:
        torch = self._torch
        linear, mlp = (self.linear, self.mlp) if latest or self.averaged is None else self.averaged
        std = torch.from_numpy(np.sqrt(self.var + 1e-6).astype(np.float32))
        z = (x - torch.from_numpy(self.mean.astype(np.float32))) / std
        return linear(x).squeeze(-1) + mlp(z).squeeze(-1)

    def score(self, features: np.ndarray) -> np.ndarray:
        """float64 score per row."""
        if not len(features):
            return np.zeros(0)
        torch = self._torch
        with torch.no_grad():
            return self._forward(torch.from_numpy(clean(features)), latest=False).numpy().astype(np.float64)

    def contributions(self, features: np.ndarray, groups: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
        """Per group of columns (a signal), how much each row's score drops when that group is replaced
        by its running mean: the ranker's own account of what made a row score high."""
        named = [(name, list(cols)) for name, cols in groups.items() if cols]
        n = len(features)
        # the rows and each group's replaced copy scored in one forward pass (one call per group was
        # ten small passes per micro-batch)
        x = np.tile(features.astype(np.float32), (len(named) + 1, 1))
        for g, (_, cols) in enumerate(named, start=1):
            x[g * n : (g + 1) * n, cols] = self.mean[cols].astype(np.float32)
        scores = self.score(x)
        base = scores[:n]
        return {name: base - scores[g * n : (g + 1) * n] for g, (name, _) in enumerate(named, start=1)}

    # --- learning --------------------------------------------------------------------------------
    def step(self, examples: Sequence[Example]) -> float:
        """One Adam step of the listwise softmax loss over each example's candidates; returns the loss."""
        usable = [e for e in examples if len(e.features) >= 2]
        if not usable:
            return 0.0
        torch = self._torch
        self._update_scaling(np.concatenate([e.features for e in usable]).astype(np.float64))
        width = max(len(e.features) for e in usable)
        x = np.zeros((len(usable), width, len(self.columns)), np.float32)
        mask = np.zeros((len(usable), width), bool)
        for n, e in enumerate(usable):
            x[n, : len(e.features)] = clean(e.features)
            mask[n, : len(e.features)] = True
        weights = torch.tensor([e.weight for e in usable], dtype=torch.float32)
        scores = self._forward(torch.from_numpy(x))
        scores = scores.masked_fill(~torch.from_numpy(mask), float("-inf"))
        loss = -(torch.log_softmax(scores, dim=1)[:, 0] * weights).sum() / weights.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        if self.averaged is not None:
            # the usual warm-up: early on the average follows the weights closely
            decay = min(self.params.average, (1 + self.steps) / (10 + self.steps))
            with torch.no_grad():
                latest = self._parameters((self.linear, self.mlp))
                for avg, now in zip(self._parameters(self.averaged), latest, strict=True):
                    avg.mul_(decay).add_(now, alpha=1 - decay)
        self.examples += len(usable)
        return float(loss.detach())

    def _update_scaling(self, rows: np.ndarray) -> None:
        """Running mean and variance of each column over every training row (Chan's parallel update)."""
        n, m = float(len(rows)), rows.mean(axis=0)
        v = rows.var(axis=0)
        total = self.seen_rows + n
        delta = m - self.mean
        if self.seen_rows == 0:
            self.mean, self.var = m, v
        else:
            self.var = (self.seen_rows * self.var + n * v + delta**2 * self.seen_rows * n / total) / total
            self.mean = self.mean + delta * n / total
        self.seen_rows = total

    @staticmethod
    def _parameters(modules: tuple[Any, Any]) -> list[Any]:
        return [*modules[0].parameters(), *modules[1].parameters()]

    # --- state -----------------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        weights = sum(p.numel() * 4 for p in [*self.linear.parameters(), *self.mlp.parameters()])
        return (3 + (self.averaged is not None)) * weights + 16 * len(self.columns)

    def snapshot(self) -> bytes:
        arrays = {f"linear.{k}": v.numpy().copy() for k, v in self.linear.state_dict().items()}
        arrays |= {f"mlp.{k}": v.numpy().copy() for k, v in self.mlp.state_dict().items()}
        if self.averaged is not None:
            arrays |= {f"avg_linear.{k}": v.numpy().copy() for k, v in self.averaged[0].state_dict().items()}
            arrays |= {f"avg_mlp.{k}": v.numpy().copy() for k, v in self.averaged[1].state_dict().items()}
        steps, moments = adam_state(self.optimizer)
        arrays |= moments
        meta = {
            "columns": list(self.columns),
            "steps": self.steps,
            "examples": self.examples,
            "seen_rows": self.seen_rows,
            "adam_steps": steps,
        }
        return encode_snapshot(self.name, self.version, meta, {**arrays, "mean": self.mean, "var": self.var})

    def restore(self, data: bytes) -> None:
        torch = self._torch
        meta, arrays = decode_snapshot(data, self.name, self.version)
        if tuple(meta["columns"]) != self.columns:
            raise ValueError(f"the snapshot ranks columns {meta['columns']}, this ranker {list(self.columns)}")
        self.linear.load_state_dict({k[7:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("linear.")})
        self.mlp.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("mlp.")})
        if self.averaged is not None:
            for prefix, module in (("avg_linear.", self.averaged[0]), ("avg_mlp.", self.averaged[1])):
                module.load_state_dict(
                    {k[len(prefix) :]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)}
                )
        load_adam_state(self.optimizer, meta["adam_steps"], arrays)
        self.mean, self.var = arrays["mean"], arrays["var"]
        self.steps, self.examples, self.seen_rows = int(meta["steps"]), int(meta["examples"]), float(meta["seen_rows"])


def clean(features: np.ndarray) -> np.ndarray:
    """float32, with NaN and infinities (an empty signal's edge cases) replaced by finite values."""
    return np.nan_to_num(np.asarray(features, np.float32), nan=0.0, posinf=1e6, neginf=-1e6)
