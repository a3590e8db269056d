"""An online next-item model: item ID embeddings learned incrementally from the interaction stream.

Why this model. Co-engagement counts only pairs that were actually observed; on a sparse catalogue most
(recent item, next item) pairs never were. Learning a small embedding per item from the same stream
generalises across them: items watched in similar contexts end up close. The shape is the simplest one
that serves online (a "recent-items average" next-item model, as in two-tower retrieval): a user's
context is the recency-weighted mean of the *input* embeddings of their last few items; the score of
a candidate is the dot product with its *output* embedding plus a bias. Each positive interaction is
one SGD step on a sampled-softmax loss against negatives drawn from popularity, so learning is
O(window + negatives) per event, happens as events arrive (``learn_many`` takes a micro-batch, as the
agent has one), and never needs a training job. New items start from their content vector through a
fixed projection, so a brand-new item is not a random point: content is the prior, co-watching
refines it.

Bounded: embeddings exist only for items that were interacted with (at most ``max_items``, the least
recently used dropped); memory is ``max_items x 2 x dim`` floats.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ranking.signal import looked_up

NEG_TABLE_EVERY = 2_000
NOISE_ALONE = 0.1
NOISE_WITH_CONTENT = 0.01


@dataclass(frozen=True)
class NextItemParams:
    dim: int = 64
    window: int = 3  # recent items in the context (3 beat 5 on the validation items)
    recency_decay: float = 0.7  # weight per step back in the context
    negatives: int = 32
    learning_rate: float = 0.1
    l2: float = 1e-5
    content_scale: float = 0.3  # how strongly an item's content vector seeds its embeddings
    max_items: int = 500_000
    seed: int = 7


HEAD_RANKS = 512  # about this many of a context's best items get an exact rank (and hold its top-k)
RANK_SAMPLE = 2048  # about this many of its logits, evenly strided, rank the items below them


class ContextScores:
    """One context's logits over the known items, computed once: z-scores, log-softmax and ranks of
    candidates, and the model's own top items.

    Standardising makes one ranking weight mean the same as the model grows; an item the model has
    never seen gets the lowest logit (no evidence it comes next). Ranks and the top items come from the
    *head*: every item at or above a threshold read off a strided sample of the sorted logits, about
    ``HEAD_RANKS`` of them. Why: sorting all 19,220 logits per user cost 0.4 ms and ``argpartition``
    0.2 ms, more than the rest of the model. Within the head, ranks and the top-k are exact (every item
    above a head item is in the head); below it a rank is the head's size plus the sample's count above,
    times its stride: 1/(1 + rank) is then below 1/``HEAD_RANKS`` and its error is the sample's. With
    at most ``RANK_SAMPLE`` items the sample is every item and every rank is exact. Use it before the
    model learns again: it reads the model's rows.
    """

    def __init__(
        self,
        row: Mapping[str, int],
        by_row: np.ndarray,
        ids: list[str],
        logits: np.ndarray,
        stats: tuple[float, float, float] | None = None,
    ) -> None:
        self._row = row
        self._by_row = by_row  # logit per embedding row (rows of no item included, never read)
        self.ids, self.logits = ids, logits  # the known items and their logits, in one order
        # ``lse``: log of the softmax's denominator over the known items
        self.mean, std, self.lse = stats if stats is not None else logit_stats(logits[None, :])[0]
        self.std = std or 1.0
        self._head: tuple[np.ndarray, np.ndarray, np.ndarray, float, int] | None = None

    def z(self, candidates: Sequence[str]) -> dict[str, float]:
        return dict(zip(candidates, ((self.logits_of(candidates) - self.mean) / self.std).tolist(), strict=True))

    def logits_of(self, candidates: Sequence[str]) -> np.ndarray:
        """Each candidate's logit; an item the model does not know gets the lowest known logit."""
        return self.logits_at(self.rows(candidates))

    def rows(self, candidates: Sequence[str]) -> np.ndarray:
        """Each candidate's embedding row, -1 for an item the model does not know (the same for every
        context of one batch: look them up once, then ``logits_at``)."""
        return looked_up(self._row, candidates, np.int64, default=-1)

    def logits_at(self, rows: np.ndarray) -> np.ndarray:
        """``logits_of`` for rows from ``rows``."""
        floor = float(self.logits.min())
        out = np.full(len(rows), floor, np.float64)
        known = rows >= 0
        out[known] = self._by_row[rows[known]]
        return out

    def head(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
        """(head positions best first, their logits ascending, the sorted sample, threshold, stride)."""
        if self._head is None:
            x = self.logits
            stride = max(1, len(x) // RANK_SAMPLE)
            sample = np.sort(x[::stride])
            threshold = float(sample[max(0, len(sample) - 1 - -(-HEAD_RANKS // stride))])
            at = np.flatnonzero(x >= threshold)
            at = at[np.argsort(-x[at], kind="stable")]
            self._head = at, x[at][::-1].copy(), sample, threshold, stride
        return self._head

    def above(self, logits: np.ndarray) -> np.ndarray:
        """How many known items have a higher logit than each of ``logits``: exact in the head, from the
        strided sample below it (never less than the head's size)."""
        at, head_up, sample, threshold, stride = self.head()
        exact = len(at) - np.searchsorted(head_up, logits, side="right")
        sampled = np.searchsorted(sample, threshold, side="left") - np.searchsorted(sample, logits, side="right")
        below = len(at) + stride * sampled
        return np.where(logits >= threshold, exact, np.maximum(below, len(at)))

    def top(self, n: int) -> list[str]:
        k = min(n, len(self.ids))
        if k <= 0:
            return []
        at = self.head()[0]
        if len(at) < k:  # a head smaller than asked for (many ties, or n beyond it): select from all
            best = np.argpartition(-self.logits, k - 1)[:k]
            at = best[np.argsort(-self.logits[best], kind="stable")]
        return [self.ids[j] for j in at[:k]]


def logit_stats(known: np.ndarray) -> list[tuple[float, float, float]]:
    """(mean, standard deviation, log-sum-exp) of each row of known items' logits, for a whole batch."""
    top = known.max(axis=1)
    lse = top + np.log(np.exp(known - top[:, None]).sum(axis=1))
    return list(zip(known.mean(axis=1).tolist(), known.std(axis=1).tolist(), lse.tolist(), strict=True))


def known_rows(row: Mapping[str, int]) -> tuple[list[str], np.ndarray]:
    """Every known item and its row, in one order: built once for a batch of users' ``ContextScores``
    (an ``ItemRows`` keeps it until it changes: a serving worker's model changes about once a second)."""
    if isinstance(row, ItemRows):
        return row.known()
    ids = list(row)
    return ids, np.fromiter(row.values(), np.int64, count=len(ids))


def batch_scores(
    row: Mapping[str, int], n_contexts: int, scored: Sequence[int], logits: np.ndarray
) -> list[ContextScores | None]:
    """One ``ContextScores`` per scored context (``logits``: one row of per-embedding-row logits each,
    for rows 0 up to at least every known row), ``None`` for the others: what both models'
    ``context_scores_many`` return. The known items' logits and their statistics are taken for the
    whole batch at once: a slice when the known items fill a range of rows (no gather), else a gather."""
    out: list[ContextScores | None] = [None] * n_contexts
    if not len(scored):
        return out
    dense = row.dense() if isinstance(row, ItemRows) else None
    if dense is not None:
        first, ids = dense
        known = logits[:, first : first + len(ids)]
    else:
        ids, rows = known_rows(row)
        known = logits[:, rows]
    for n, by_row, mine, st in zip(scored, logits, known, logit_stats(known), strict=True):
        out[n] = ContextScores(row, by_row, ids, mine, st)
    return out


class ItemRows(OrderedDict[str, int]):
    """Item id -> embedding row, least recently used first; at ``max_items`` the oldest item's row is
    reused, so a model's memory stays bounded. Rows are handed out from ``first`` up (a model may keep
    rows below it, e.g. padding)."""

    def __init__(self, max_items: int, first: int = 0) -> None:
        super().__init__()
        self.max_items = max_items
        self.next_row = first  # rows below this have been handed out
        self._known: tuple[list[str], np.ndarray] | None = None
        self._dense: tuple[int, list[str]] | bool | None = False  # False: not worked out since a change

    def dense(self) -> tuple[int, list[str]] | None:
        """(first row, ids by row) when the known items hold exactly the rows from ``first`` up to
        ``next_row`` (no row freed by ``forget``), else None; kept until the content changes (not the order)."""
        if self._dense is False:
            ids, rows = self.known()
            lo = self.next_row - len(ids)
            if len(ids) and int(rows.min()) == lo and int(rows.max()) == self.next_row - 1:
                by_row = np.empty(len(ids), object)
                by_row[rows - lo] = ids
                self._dense = lo, by_row.tolist()
            else:
                self._dense = None
        return self._dense  # type: ignore[return-value]

    def known(self) -> tuple[list[str], np.ndarray]:
        """(ids, rows) in iteration order, kept until the mapping or its order changes."""
        if self._known is None:
            ids = list(self)
            self._known = ids, np.fromiter(self.values(), np.int64, count=len(ids))
        return self._known

    # every change of content or order drops the kept ``known`` (of content: ``dense`` too)
    def __setitem__(self, key: str, value: int) -> None:
        self._known, self._dense = None, False
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._known, self._dense = None, False
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        self._known, self._dense = None, False
        return super().pop(key, *default)

    def popitem(self, last: bool = True) -> tuple[str, int]:
        self._known, self._dense = None, False
        return super().popitem(last)

    def move_to_end(self, key: str, last: bool = True) -> None:
        self._known = None
        super().move_to_end(key, last)

    def clear(self) -> None:
        self._known, self._dense = None, False
        super().clear()

    def touch(self, item: str) -> int | None:
        """The item's row (now the most recently used), or None for an unknown item."""
        r = self.get(item)
        if r is not None:
            self.move_to_end(item)
        return r

    def allocate(self, item: str) -> int:
        """A row for an item not known yet: the least recently used item's when full, else a new one."""
        if len(self) >= self.max_items:
            _, r = self.popitem(last=False)
        else:
            r, self.next_row = self.next_row, self.next_row + 1
        self[item] = r
        return r


class ContentPrior:
    """A fixed, seeded projection of content vectors into the embedding space, scaled: every worker
    derives the same starting point for the same item, and items with similar content start close."""

    def __init__(self, dim: int, seed: int, scale: float) -> None:
        self.dim, self.seed, self.scale = dim, seed, scale
        self._matrix: np.ndarray | None = None

    def __call__(self, content: np.ndarray) -> np.ndarray:
        vec = np.asarray(content, np.float32).reshape(-1)
        if self._matrix is None or self._matrix.shape[0] != vec.size:
            rng = np.random.default_rng(self.seed + vec.size)
            self._matrix = (rng.standard_normal((vec.size, self.dim)) / np.sqrt(self.dim)).astype(np.float32)
        return self.scale * (vec @ self._matrix)


class NextItemLearner(Protocol):
    """What the ranker and the evaluation need from a next-item model (this file's, or the transformer)."""

    learned: int
    params: Any  # a frozen dataclass of the model's hyper-parameters (recorded by the evaluation)

    @property
    def window(self) -> int: ...
    def __len__(self) -> int: ...
    def note(self, item: str, content: np.ndarray | None) -> None: ...
    def learn_many(
        self, examples: Sequence[tuple[Sequence[str], str]], weights: Sequence[float] | None = None
    ) -> int: ...
    def flush(self) -> None: ...
    def confidence(self, warmup: int) -> float: ...
    def context_scores(self, context: Sequence[str]) -> ContextScores | None: ...
    def context_scores_many(self, contexts: Sequence[Sequence[str]]) -> list[ContextScores | None]: ...
    def forget(self, item: str) -> None: ...
    def memory_bytes(self) -> int: ...
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...
    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None: ...


def rows_state(row: ItemRows) -> dict[str, np.ndarray]:
    """An ``ItemRows`` as arrays (least recently used first), for snapshots."""
    return {
        "row_ids": np.array(list(row), dtype=np.str_) if len(row) else np.zeros(0, "<U1"),
        "rows": np.fromiter(row.values(), np.int64, count=len(row)),
    }


def load_rows(row: ItemRows, arrays: Mapping[str, np.ndarray], next_row: int) -> None:
    row.clear()
    for item, r in zip(arrays["row_ids"].tolist(), arrays["rows"].tolist(), strict=True):
        row[item] = int(r)
    row.next_row = next_row


class NextItemModel:
    """``learn_many([(context_items, next_item), ...])`` and ``scores(context, candidates)``."""

    def __init__(self, params: NextItemParams | None = None, content: Callable[[str], np.ndarray | None] | None = None):
        self.params = params or NextItemParams()
        self.content = content
        p = self.params
        self._rng = np.random.default_rng(p.seed)
        cap = 1024
        self.e_in = np.zeros((cap, p.dim), np.float32)
        self.e_out = np.zeros((cap, p.dim), np.float32)
        self.bias = np.zeros(cap, np.float32)
        self.count = np.zeros(cap, np.float64)
        self.row = ItemRows(p.max_items)
        self._prior = ContentPrior(p.dim, p.seed, p.content_scale)
        self.learned = 0  # SGD steps taken so far: how much the model's opinion is worth (``confidence``)
        self._table_rows: np.ndarray | None = None
        self._table_cum = np.zeros(0)
        self._table_age = 0

    # --- rows ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.row)

    @property
    def window(self) -> int:
        return self.params.window

    def _seed_vector(self, item: str) -> np.ndarray:
        p = self.params
        noise = self._rng.standard_normal(p.dim).astype(np.float32)
        vec = self.content(item) if self.content is not None else None
        if vec is None:
            return noise * NOISE_ALONE  # large enough to break symmetry: both towers start here
        return self._prior(vec) + noise * NOISE_WITH_CONTENT

    def _index(self, item: str) -> int:
        r = self.row.touch(item)
        if r is not None:
            return r
        r = self.row.allocate(item)
        if r >= len(self.bias):
            self._grow()
        seed = self._seed_vector(item)
        self.e_in[r] = seed
        self.e_out[r] = seed
        self.bias[r] = 0.0
        self.count[r] = 0.0
        return r

    def _grow(self) -> None:
        n = len(self.bias) * 2
        self.e_in = np.resize(self.e_in, (n, self.params.dim))
        self.e_out = np.resize(self.e_out, (n, self.params.dim))
        self.bias = np.resize(self.bias, n)
        self.count = np.resize(self.count, n)

    def note(self, item: str, content: np.ndarray | None) -> None:
        """Seed an item's embeddings from its content vector before it is first learned (no-op after)."""
        if item in self.row or content is None:
            return
        saved, self.content = self.content, (lambda _: content)
        try:
            self._index(item)
        finally:
            self.content = saved

    # --- learning --------------------------------------------------------------------------------
    def _context(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        rows = list(rows)[-p.window :]
        w = np.array([p.recency_decay**d for d in range(len(rows) - 1, -1, -1)], np.float32)
        w /= w.sum()
        return w, np.asarray(rows, np.int64)

    def learn_many(self, examples: Sequence[tuple[Sequence[str], str]], weights: Sequence[float] | None = None) -> int:
        """One SGD step per example (context items oldest first, the item that came next).

        Examples with an empty context only count the item (popularity for negatives and the bias).
        Returns how many examples updated the embeddings.
        """
        p = self.params
        learned = 0
        for n, (context, item) in enumerate(examples):
            weight = 1.0 if weights is None else float(weights[n])
            if weight <= 0:
                continue
            pos = self._index(item)
            self.count[pos] += weight
            ctx_items = [c for c in context[-p.window :] if c != item]
            if not ctx_items:
                continue
            ctx_rows = [self._index(c) for c in ctx_items]
            w, rows = self._context(ctx_rows)
            negs = self._negatives(pos)
            cand = np.concatenate(([pos], negs))
            user = w @ self.e_in[rows]
            logits = self.e_out[cand] @ user + self.bias[cand]
            logits -= logits.max()
            prob = np.exp(logits)
            prob /= prob.sum()
            grad = prob.copy()
            grad[0] -= 1.0  # d(-log softmax_0)/d logits
            grad *= weight
            lr = p.learning_rate
            g_user = grad @ self.e_out[cand]
            np.subtract.at(self.e_out, cand, lr * (np.outer(grad, user) + p.l2 * self.e_out[cand]))
            np.subtract.at(self.bias, cand, lr * grad)
            np.subtract.at(self.e_in, rows, lr * (np.outer(w, g_user) + p.l2 * self.e_in[rows]))
            learned += 1
        self.learned += learned
        return learned

    def flush(self) -> None:
        """Nothing is buffered: every example is learned when it arrives."""

    def _negatives(self, pos: int) -> np.ndarray:
        """Popularity^0.75 negatives from a table rebuilt every ``NEG_TABLE_EVERY`` draws or 10 % more items."""
        stale = self._table_rows is None or len(self.row) > 1.1 * len(self._table_rows) + 1
        if self._table_age <= 0 or stale:
            rows = np.fromiter(self.row.values(), np.int64, count=len(self.row))
            weights = np.maximum(self.count[rows], 1e-3) ** 0.75
            self._table_rows, self._table_cum = rows, np.cumsum(weights)
            self._table_age = NEG_TABLE_EVERY
        self._table_age -= 1
        if self._table_rows is None or len(self._table_rows) <= 1:
            return np.zeros(0, np.int64)
        draws = self._rng.random(self.params.negatives) * self._table_cum[-1]
        picks = self._table_rows[np.minimum(np.searchsorted(self._table_cum, draws), len(self._table_rows) - 1)]
        # a row freed and reused since the table was built is just another item: harmless
        return picks[picks != pos]

    def confidence(self, warmup: int) -> float:
        """0 for a model that has learned nothing, 1 after ``warmup`` steps: on little data its z-scores
        are mostly initialisation noise, so a ranker scales its weight by this."""
        return 1.0 if warmup <= 0 else min(1.0, self.learned / warmup)

    # --- prediction ------------------------------------------------------------------------------
    def user_vector(self, context: Sequence[str]) -> np.ndarray | None:
        rows = [self.row[c] for c in context[-self.params.window :] if c in self.row]
        if not rows:
            return None
        w, r = self._context(rows)
        return w @ self.e_in[r]

    def scores(self, context: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Logits of each candidate coming next (0 for items the model has never seen)."""
        user = self.user_vector(context)
        out = np.zeros(len(candidates), np.float32)
        if user is None:
            return out
        for n, item in enumerate(candidates):
            r = self.row.get(item)
            if r is not None:
                out[n] = float(self.e_out[r] @ user + self.bias[r])
        return out

    def context_scores(self, context: Sequence[str]) -> ContextScores | None:
        """Logits of every known item for one context, computed once; ``None`` without a usable context."""
        return self.context_scores_many([context])[0]

    def context_scores_many(self, contexts: Sequence[Sequence[str]]) -> list[ContextScores | None]:
        """``context_scores`` for a batch of users, with one matrix product for all of them."""
        users = {n: self.user_vector(c) for n, c in enumerate(contexts)} if len(self.row) >= 2 else {}
        scored = [n for n, u in users.items() if u is not None]
        if not scored:
            return [None] * len(contexts)
        used = self.row.next_row  # rows at or above it hold no item
        logits = np.stack([users[n] for n in scored]) @ self.e_out[:used].T + self.bias[:used]  # type: ignore[misc]
        return batch_scores(self.row, len(contexts), scored, logits)

    def forget(self, item: str) -> None:
        """The item is unknown from now on (its row stays allocated until the model is rebuilt)."""
        self.row.pop(item, None)
        self._table_rows = None

    def memory_bytes(self) -> int:
        return self.e_in.nbytes + self.e_out.nbytes + self.bias.nbytes + self.count.nbytes + len(self.row) * 150

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        table = self._table_rows is not None
        meta = {
            "learned": self.learned,
            "next_row": self.row.next_row,
            "rng": self._rng.bit_generator.state,
            "table_age": self._table_age if table else None,
        }
        arrays = {
            "e_in": self.e_in,
            "e_out": self.e_out,
            "bias": self.bias,
            "count": self.count,
            **rows_state(self.row),
        }
        if self._table_rows is not None:
            arrays |= {"table_rows": self._table_rows, "table_cum": self._table_cum}
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.e_in, self.e_out = arrays["e_in"].copy(), arrays["e_out"].copy()
        self.bias, self.count = arrays["bias"].copy(), arrays["count"].copy()
        load_rows(self.row, arrays, int(meta["next_row"]))
        self.learned = int(meta["learned"])
        self._rng.bit_generator.state = meta["rng"]
        self._table_rows, self._table_age = None, 0
        if meta["table_age"] is not None:
            self._table_rows, self._table_cum = arrays["table_rows"].copy(), arrays["table_cum"].copy()
            self._table_age = int(meta["table_age"])

    def all_scores(self, context: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Logits of every known item (offline full ranking, candidate generation)."""
        ids = list(self.row)
        rows = np.fromiter(self.row.values(), np.int64, count=len(ids))
        user = self.user_vector(context)
        if user is None:
            return ids, np.zeros(len(ids), np.float32)
        return ids, self.e_out[rows] @ user + self.bias[rows]
