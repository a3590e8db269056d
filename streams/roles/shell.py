"""What every role's agent bodies share, and the waits that keep a batch's offsets from committing early.

Faust acks a micro-batch's events when the agent's body for it returns and commits acked offsets later,
so a body returns only once the broker holds what the batch produced that recovery depends on: the
state written to the changelog (:func:`until_written`) and the training records (:func:`until_sent`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from faust.types import EventT

from streams import metrics
from streams.faust_internals import write_states
from streams.roles.services import Services
from streams.schemas import DeadLetter, RejectedEvent
from streams.settings import Settings

log = logging.getLogger("streams.app")


@dataclass
class Worker:
    """What the agent bodies of every role need.

    ``topics``: output topics by name (anything with Faust's ``async send(key=, value=)`` returning the
    record's future); ``services``: the lazily built handlers and their thread pools; ``log``: where
    retried failures are logged (the Faust app's logger in a worker).
    """

    settings: Settings
    services: Services
    topics: Mapping[str, Any]
    log: Any = field(default=log)

    async def send_dead(self, letters: Sequence[DeadLetter]) -> None:
        dlq = self.topics[self.settings.topic_dead_letter]
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.source_topic, letter.reason).inc()
            await dlq.send(value=letter.model_dump_json().encode())

    async def run_in(self, pool: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        """Run blocking work off the loop; retry failures (Milvus down, encoder error) with backoff.

        The batch is neither skipped nor acked while it fails, so no event is lost; the failure shows
        in /health and in livelens_processing_errors_total until a retry succeeds.
        """
        services = self.services
        delay = 0.5
        while True:
            try:
                result = await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            except RejectedEvent:
                raise
            except Exception as exc:
                name = getattr(fn, "__name__", "work")
                metrics.PROCESSING_ERRORS.labels(name, type(exc).__name__).inc()
                services.last_error = f"{name}: {type(exc).__name__}: {exc}"[:500]
                self.log.exception("%s failed; retrying in %.1fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            services.last_error = None
            return result


async def until_written(
    table: Any,
    writes: dict[str, tuple[EventT, Any]],
    futures: dict[str, asyncio.Future[Any]],
    *,
    retry_delay_s: float = 0.5,
) -> None:
    """Return once the broker holds the changelog record of every write in ``writes``.

    Why: Faust acks a micro-batch's events when the agent's body for it returns (``take_events``), and
    commits acked offsets every ``broker_commit_interval``. Its only barrier before that commit is
    ``producer.flush()``, which does not wait for the changelog: ``ProducerBuffer.flush_atmost``
    gives up as soon as one record takes more than 0.1 s to be handed to the client (each changelog
    record is its own batch here, one request in flight per broker, so a loaded broker or event loop
    is enough), and the record being handed over is not counted at all. The commit then covered events
    whose state had not reached the changelog; after a SIGKILL, state recovered from the changelog
    alone lacked that micro-batch (README "Known limits", docs/reliability.md).

    A record that fails is written again (the same state, same partition) after a growing delay,
    like ``run_in``: the batch is not acked meanwhile, so no event is committed without its state.
    """
    delay = retry_delay_s
    while futures:
        await asyncio.wait(futures.values())
        failed = [user for user, f in futures.items() if f.cancelled() or f.exception() is not None]
        if not failed:
            return
        first = futures[failed[0]]
        name = "CancelledError" if first.cancelled() else type(first.exception()).__name__
        metrics.PROCESSING_ERRORS.labels("changelog", name).inc()
        log.warning("%d changelog writes failed (%s); writing them again in %.1fs", len(failed), name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
        futures = write_states(table, {user: writes[user] for user in failed})


async def until_sent(
    topic: Any, records: list[tuple[bytes, bytes]], futures: list[Any], *, retry_delay_s: float = 0.5
) -> None:
    """Return once the broker holds every record (``futures``: their first sends); failed ones are sent
    again with a growing delay, as in :func:`until_written`, so the batch is never acked without them."""
    delay = retry_delay_s
    while futures:
        results = await asyncio.gather(*futures, return_exceptions=True)
        records = [r for r, res in zip(records, results, strict=True) if isinstance(res, BaseException)]
        if not records:
            return
        name = type(next(res for res in results if isinstance(res, BaseException))).__name__
        metrics.PROCESSING_ERRORS.labels("training_log", name).inc()
        log.warning("%d training records failed (%s); sending them again in %.1fs", len(records), name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
        futures = [await topic.send(key=k, value=v) for k, v in records]
