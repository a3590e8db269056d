"""When shared models train: one deterministic, event-count schedule for the worker and the evaluation.

Why a schedule on counts: training that runs "as CPU allows" or on a timer gives a different model on
every run and in every process, so the offline figures would not be what a worker serves. Here every
decision depends only on the sequence of events: which events are labelled (a stable hash of the
event id), a ranker step every ``ranker_batch`` labelled examples (each step also rehearses as many
examples drawn from a bounded buffer of past ones), and every ``rehearse_every`` events a burst of
next-item rehearsal over that model's bounded buffer. The same object runs in the worker and in
``livelens eval``, and the trainer role will run it out of the worker.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.ranker import Example, Ranker


@dataclass(frozen=True)
class ScheduleParams:
    label_one_in: int = 2  # events labelled for the ranker: crc32(event id) % label_one_in == 0
    negatives: int = 63  # candidates kept per labelled example beside the positive (seeded sample)
    ranker_batch: int = 32  # labelled examples per ranker step
    ranker_buffer: int = 8_192  # past examples kept for rehearsal
    ranker_rehearse: int = 32  # past examples rehearsed with each step
    rehearse_every: int = 2_048  # events between next-item rehearsal bursts
    rehearse_ratio: float = 3.0  # next-item examples rehearsed per event
    seed: int = 13


class Rehearsable:
    """What the scheduler rehearses beside the ranker (``NextItemSignal``)."""

    def rehearse(self, count: int, seed: int) -> None: ...


class TrainingScheduler:
    def __init__(
        self,
        ranker: Ranker,
        rehearsed: Sequence[Rehearsable] = (),
        params: ScheduleParams | None = None,
        shadows: Mapping[str, Ranker] | None = None,
    ):
        self.ranker = ranker
        # evaluation only: other rankers taught the very same steps, so alternatives are compared paired,
        # in one pass, on identical examples (``livelens eval --compare-rankers``); a worker has none
        self.shadows: dict[str, Ranker] = dict(shadows or {})
        self.rehearsed = list(rehearsed)
        self.params = p = params or ScheduleParams()
        self.pending: list[Example] = []
        self.buffer: deque[Example] = deque(maxlen=p.ranker_buffer)
        self.events = 0
        self.bursts = 0

    def wants_label(self, event_id: str) -> bool:
        return zlib.crc32(event_id.encode()) % self.params.label_one_in == 0

    def add(self, examples: Sequence[Example], events: int) -> None:
        """Labelled examples and the count of applied events, in stream order; trains on schedule.

        However the stream is cut into calls, the same sequence gives the same steps in the same order.
        """
        p = self.params
        for e in examples:
            self.pending.append(e)
            if len(self.pending) >= p.ranker_batch:
                self._ranker_step()
        for _ in range(events):
            self.events += 1
            if self.events % p.rehearse_every == 0:
                self.bursts += 1
                count = int(p.rehearse_every * p.rehearse_ratio)
                for n, model in enumerate(self.rehearsed):
                    model.rehearse(count, p.seed * 1_000_003 + self.bursts * 101 + n)

    def _ranker_step(self) -> None:
        p = self.params
        batch, self.pending = self.pending, []
        past: list[Example] = []
        if self.buffer and p.ranker_rehearse:
            rng = np.random.default_rng(p.seed + self.ranker.steps)
            picks = rng.integers(0, len(self.buffer), size=min(p.ranker_rehearse, len(self.buffer)))
            past = [self.buffer[int(i)] for i in picks]
        self.ranker.step(batch + past)
        for shadow in self.shadows.values():
            shadow.step(batch + past)
        self.buffer.extend(batch)
