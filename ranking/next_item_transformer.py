"""A sequential next-item model: a small self-attentive encoder over the user's last items (SASRec's shape).

Why, beside ``ranking/next_item.py``. The embedding model scores a candidate against a fixed,
recency-weighted mean of the last few items: it cannot learn that *order* matters (what follows
"a then b" differs from "b then a") or that one item in the context should dominate. Self-attention
over the last ``window`` items learns both, and on MicroLens this is where most of the remaining
sequential signal is (the issue's reference: an ID-only SASRec beats co-occurrence by a wide margin).

How it stays online. ``learn_many`` buffers (context, next item) examples as events arrive and takes
one Adam step per ``batch`` buffered examples (Monolith-style incremental training, no training job);
``flush`` applies what is buffered. Item embeddings are tied (input = output, as in SASRec); a new item
is seeded from its content vector through a fixed projection, so content is the prior and co-watching
refines it. Scoring is one forward pass over a micro-batch's users plus one matrix product with the
known items (``context_scores_many``); one user alone took about 4 ms on this 2-core box with 19k items.

Bounded: at most ``max_items`` item rows (least recently used reused); memory is
``max_items x dim`` floats four times over (weights, gradients and Adam's two moments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ranking.next_item import ContentPrior, ContextScores, ItemRows, batch_scores, load_rows, rows_state
from ranking.torch_state import adam_state, load_adam_state

PAD = 0  # row 0 is padding; items use rows 1..max_items
INITIAL_ROWS = 1024  # item rows double as needed: a step costs what the known items cost, not max_items


@dataclass(frozen=True)
class TransformerParams:
    dim: int = 64
    window: int = 10  # last items the encoder attends over
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch: int = 128  # buffered examples per optimiser step
    content_scale: float = 0.3
    max_items: int = 100_000
    seed: int = 7


def _network(p: TransformerParams, rows: int) -> Any:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.Embedding(rows, p.dim, padding_idx=PAD)
            self.bias = nn.Parameter(torch.zeros(rows))
            self.positions = nn.Embedding(p.window, p.dim)
            layer = nn.TransformerEncoderLayer(
                p.dim, p.heads, 2 * p.dim, p.dropout, batch_first=True, norm_first=True, activation="gelu"
            )
            self.blocks = nn.TransformerEncoder(layer, p.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(p.dim)
            self.drop = nn.Dropout(p.dropout)
            nn.init.normal_(self.items.weight, std=0.05)
            with torch.no_grad():
                self.items.weight[PAD].zero_()
            causal = torch.triu(torch.full((p.window, p.window), float("-inf")), diagonal=1)
            self.register_buffer("causal", causal, persistent=False)
            self.register_buffer("eye", torch.eye(p.window, dtype=torch.bool), persistent=False)

        def forward(self, ctx: torch.Tensor) -> torch.Tensor:
            """``ctx``: (batch, window) rows, left-padded; returns the last position's state (batch, dim)."""
            x = self.items(ctx) * (p.dim**0.5) + self.positions.weight[None, :, :]
            # causal, and padding hidden from every position but itself (a row with no key at all
            # would turn into NaN and poison the next layer's values)
            hide_pad = (ctx == PAD)[:, None, :] & ~self.eye
            mask = self.causal[None] + torch.where(hide_pad, float("-inf"), 0.0)
            mask = mask.repeat_interleave(p.heads, dim=0)
            x = self.blocks(self.drop(x), mask=mask)
            return self.norm(x[:, -1, :])

    return Encoder()


class TransformerNextItem:
    """``learn_many([(context_items, next_item), ...])``, ``flush()`` and ``context_scores(context)``."""

    def __init__(self, params: TransformerParams | None = None) -> None:
        import torch

        self.params = p = params or TransformerParams()
        self._torch = torch
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(p.seed)
        self.net = _network(p, min(p.max_items, INITIAL_ROWS) + 1)
        torch.random.set_rng_state(generator_state)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=p.learning_rate)
        self.row = ItemRows(p.max_items, first=PAD + 1)  # rows below row.next_row: the softmax runs over these
        self._prior = ContentPrior(p.dim, p.seed, p.content_scale)
        self._buffer: list[tuple[list[int], int, float]] = []
        self.learned = 0  # examples trained on so far (``confidence``)

    # --- rows ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.row)

    @property
    def window(self) -> int:
        return self.params.window

    def _index(self, item: str, content: np.ndarray | None = None) -> int:
        r = self.row.touch(item)
        if r is not None:
            return r
        r = self.row.allocate(item)
        if r >= self.net.items.weight.shape[0]:
            self._grow()
        with self._torch.no_grad():
            self.net.items.weight[r] = self._torch.from_numpy(self._seed_vector(content))
            self.net.bias[r] = 0.0
        return r

    def _grow(self) -> None:
        """Double the item rows (up to ``max_items``); Adam's moments for the old rows carry over."""
        torch = self._torch
        rows = min(2 * self.net.items.weight.shape[0], self.params.max_items + 1)
        params = self.optimizer.param_groups[0]["params"]
        for owner, name in ((self.net.items, "weight"), (self.net, "bias")):
            old = getattr(owner, name)
            grown = torch.nn.Parameter(torch.zeros((rows, *old.shape[1:]), dtype=old.dtype))
            with torch.no_grad():
                grown[: old.shape[0]] = old
            state = self.optimizer.state.pop(old, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    padded = torch.zeros_like(grown)
                    padded[: old.shape[0]] = state[key]
                    state[key] = padded
                self.optimizer.state[grown] = state
            params[next(n for n, q in enumerate(params) if q is old)] = grown
            setattr(owner, name, grown)

    def _seed_vector(self, content: np.ndarray | None) -> np.ndarray:
        p = self.params
        noise = np.random.default_rng(p.seed + self.row.next_row).standard_normal(p.dim).astype(np.float32) * 0.05
        return noise if content is None else self._prior(content) + noise * 0.2

    def note(self, item: str, content: np.ndarray | None) -> None:
        """Seed an item's embedding from its content vector before it is first learned (no-op after)."""
        if item not in self.row and content is not None:
            self._index(item, content)

    # --- learning --------------------------------------------------------------------------------
    def learn_many(self, examples: Sequence[tuple[Sequence[str], str]], weights: Sequence[float] | None = None) -> int:
        """Buffer examples (context oldest first, the item that came next); step every ``batch`` of them.

        Examples with a non-positive weight or an empty context are skipped. Returns how many were
        buffered.
        """
        p = self.params
        taken = 0
        for n, (context, item) in enumerate(examples):
            weight = 1.0 if weights is None else float(weights[n])
            if weight <= 0:
                continue
            ctx = [c for c in context[-p.window :] if c != item]
            if not ctx:
                continue
            rows = [self._index(c) for c in ctx]
            self._buffer.append((rows, self._index(item), weight))
            taken += 1
            if len(self._buffer) >= p.batch:
                self.flush()
        return taken

    def flush(self) -> None:
        """One optimiser step on the buffered examples (no-op when none)."""
        if not self._buffer:
            return
        torch = self._torch
        batch, self._buffer = self._buffer, []
        ctx = torch.from_numpy(self._padded([rows for rows, _, _ in batch]))
        target = torch.tensor([t for _, t, _ in batch])
        weight = torch.tensor([w for _, _, w in batch], dtype=torch.float32)
        self.net.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params.seed + self.learned)  # dropout: the same masks in every run
            state = self.net(ctx)
        logits = state @ self.net.items.weight[: self.row.next_row].T + self.net.bias[: self.row.next_row]
        logits[:, PAD] = float("-inf")
        loss = (torch.nn.functional.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.net.items.weight[PAD].zero_()
        self.learned += len(batch)

    def _padded(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        w = self.params.window
        out = np.full((len(contexts), w), PAD, np.int64)
        for n, rows in enumerate(contexts):
            rows = list(rows)[-w:]
            out[n, w - len(rows) :] = rows
        return out

    def confidence(self, warmup: int) -> float:
        """0 for a model that has learned nothing, 1 after ``warmup`` examples (see NextItemModel)."""
        return 1.0 if warmup <= 0 else min(1.0, self.learned / warmup)

    # --- state -----------------------------------------------------------------------------------
    def forget(self, item: str) -> None:
        """The item is unknown from now on (its row stays allocated until reused)."""
        self.row.pop(item, None)

    def memory_bytes(self) -> int:
        weights = sum(p.numel() * p.element_size() for p in self.net.parameters())
        return 3 * weights + len(self.row) * 150  # the weights and Adam's two moments

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Weights, Adam's moments, the item rows and what is buffered: enough to continue identically."""
        steps, arrays = adam_state(self.optimizer)
        arrays |= {f"net.{k}": v.detach().numpy().copy() for k, v in self.net.state_dict().items()}
        buffered = [[*rows, -1, t] for rows, t, _ in self._buffer]
        meta = {
            "learned": self.learned,
            "next_row": self.row.next_row,
            "rows_allocated": int(self.net.items.weight.shape[0]),
            "steps": steps,
            "buffer": buffered,
            "buffer_w": [w for _, _, w in self._buffer],
        }
        return meta, {**arrays, **rows_state(self.row)}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        torch = self._torch
        self.net = _network(self.params, int(meta["rows_allocated"]))
        self.net.load_state_dict({k[4:]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("net.")})
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.params.learning_rate)
        load_adam_state(self.optimizer, meta["steps"], arrays)
        load_rows(self.row, arrays, int(meta["next_row"]))
        self.learned = int(meta["learned"])
        self._buffer = []
        for entry, w in zip(meta["buffer"], meta["buffer_w"], strict=True):
            cut = entry.index(-1)
            self._buffer.append((entry[:cut], entry[cut + 1], float(w)))

    # --- prediction ------------------------------------------------------------------------------
    def context_scores(self, context: Sequence[str]) -> ContextScores | None:
        """Logits of every known item after ``context`` (oldest first); ``None`` without a known item."""
        return self.context_scores_many([context])[0]

    def context_scores_many(self, contexts: Sequence[Sequence[str]]) -> list[ContextScores | None]:
        """``context_scores`` for a batch of users: one forward pass and one matrix product for all."""
        window = self.params.window
        rows = {n: [self.row[c] for c in ctx[-window:] if c in self.row] for n, ctx in enumerate(contexts)}
        scored = [n for n, r in rows.items() if r] if len(self.row) >= 2 else []
        if not scored:
            return [None] * len(contexts)
        torch, used = self._torch, self.row.next_row
        self.net.eval()
        with torch.no_grad():
            state = self.net(torch.from_numpy(self._padded([rows[n] for n in scored])))
            logits = (state @ self.net.items.weight[:used].T + self.net.bias[:used]).numpy()
        return batch_scores(self.row, len(contexts), scored, logits)
