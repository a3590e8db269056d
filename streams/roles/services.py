"""Encoder and index, created on first use inside the worker (model loading takes seconds)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from streams import metrics
from streams.handlers import Handlers
from streams.params import (
    arm_split_from_settings,
    encoder_params_from_settings,
    live_windows_from_settings,
    music_params_from_settings,
    online_arms_from_settings,
    playlist_params_from_settings,
    ranking_params_from_settings,
    search_tier_params_from_settings,
)
from streams.schemas import Feed
from streams.settings import Settings

if TYPE_CHECKING:
    from ranking.local_tier import LocalSearchTier

log = logging.getLogger("streams.app")


class Services:
    """Encoder and index, created on first use inside the worker (model loading takes seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.encoder_pool = ThreadPoolExecutor(1, thread_name_prefix="livelens-encoder")
        self.index_pool = ThreadPoolExecutor(1, thread_name_prefix="livelens-index")
        self.sink_pool = ThreadPoolExecutor(1, thread_name_prefix="livelens-recs")
        self._handlers: Handlers | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self.search_tier: LocalSearchTier | None = None  # set when settings.local_search is on
        self._early: Future[Handlers] | None = None

    def start_loading(self, then: Callable[[Handlers], None] | None = None) -> None:
        """Begin building the handlers now, in the index thread, without an event loop: ``livelens worker``
        calls it before Faust starts, so loading the models, connecting to Milvus and filling the search
        tier overlap the consumer group's join (seconds; after a SIGKILL it also waits out the dead
        member's session) instead of following it. ``then`` runs in that thread with the handlers (the
        worker starts reading the trainer's models there). A failure here is retried by ``handlers``."""
        if self._early is not None or self._handlers is not None:
            return

        def build() -> Handlers:
            handlers = self._build()
            if then is not None:
                try:
                    then(handlers)
                except Exception:  # the handlers stand; the worker then serves the snapshot on first use
                    log.exception("serving the trainer's snapshot before start-up failed")
            return handlers

        self._early = self.index_pool.submit(build)

    async def handlers(self) -> Handlers:
        """The handlers, built on first use; a failed build (model missing, Milvus down) is retried.

        Raising here would crash the calling agent with a micro-batch already taken, so failures
        back off like ``run_in`` and show in /health and livelens_processing_errors_total{step="load"}.
        """
        async with self._lock:
            delay = 0.5
            while self._handlers is None:
                try:
                    early, self._early = self._early, None
                    if early is not None:  # started before the event loop (start_loading): wait for it
                        self._handlers = await asyncio.wrap_future(early)
                    else:
                        self._handlers = await asyncio.get_running_loop().run_in_executor(self.index_pool, self._build)
                    self.last_error = None
                    # what loading built (models, the search tier's items, the encoder) lives as long as
                    # the worker: frozen out of the cyclic collector, whose full passes over it took
                    # about 1 s each, once every ~80 micro-batches (bench.serving_path)
                    gc.freeze()
                except Exception as exc:
                    metrics.PROCESSING_ERRORS.labels("load", type(exc).__name__).inc()
                    self.last_error = f"load: {type(exc).__name__}: {exc}"[:500]
                    log.exception("loading the encoder or connecting to Milvus failed; retrying in %.1fs", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
        return self._handlers

    def _build(self) -> Handlers:
        from encoders.pipeline import MediaPipeline
        from encoders.text import build_text_encoder
        from storage.milvus import MilvusIndex
        from storage.modalities import MilvusModalityStore
        from storage.tracks import MilvusTrackStore
        from streams.music import MusicHandlers

        s = self.settings
        encoder_params = encoder_params_from_settings(s)
        if s.blas_threads is not None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=s.blas_threads, user_api="blas")  # process-wide; torch has its own pool
            if s.local_search and s.local_search_tier == "ann":
                import faiss  # the tier's IVF searches a batch of queries on OpenMP threads: same limit

                faiss.omp_set_num_threads(s.blas_threads)
        encoder = metrics.TimedEncoder(build_text_encoder(encoder_params), modality="text")
        milvus: Any = MilvusIndex(
            s.resolved_milvus_uri(),
            s.milvus_collection,
            encoder.dim,
            token=s.milvus_token,
            timeout=s.milvus_timeout_s,
            index_type=s.milvus_index_type,
            index_params=s.milvus_index_params,
            search_params=s.milvus_search_params,
        )
        if s.local_search:
            from ranking.local_tier import LocalSearchTier
            from storage.catalog import MilvusCatalog

            catalog = MilvusCatalog(
                s.resolved_milvus_uri(), s.milvus_collection, token=s.milvus_token, timeout=s.milvus_timeout_s
            )
            milvus = LocalSearchTier(
                milvus,
                catalog,
                encoder.dim,
                refresh_s=s.local_search_refresh_s,
                lookback_s=s.local_search_lookback_s,
                search=search_tier_params_from_settings(s),
            )
            self.search_tier = milvus
        index = metrics.TimedIndex(milvus)
        arms = online_arms_from_settings(s)
        metrics.MODEL_INFO.info({"text_encoder": encoder.name, "dim": str(encoder.dim), "device": encoder.device})
        metrics.record_arms(arms, [feed.value for feed in Feed], describe=True)
        music = MusicHandlers(
            index,
            MilvusTrackStore(
                s.resolved_milvus_uri(),
                f"{s.milvus_collection}_tracks",
                encoder.dim,
                token=s.milvus_token,
                timeout=s.milvus_timeout_s,
            ),
            media_roots=s.media_roots,
            params=music_params_from_settings(s),
            playlist=playlist_params_from_settings(s),
            scan_limit=s.music_tracks_scanned,
        )
        return Handlers(
            index=index,
            encoder=encoder,
            user_model=arms["a"].user_model,
            ranking=ranking_params_from_settings(s),
            candidates=s.candidates,
            topics={"interactions": s.topic_interactions, "content": s.topic_content},
            media=MediaPipeline(encoder_params),
            modalities=MilvusModalityStore(
                s.resolved_milvus_uri(),
                f"{s.milvus_collection}_modalities",
                encoder.dim,
                token=s.milvus_token,
                timeout=s.milvus_timeout_s,
            ),
            live_windows=live_windows_from_settings(s),
            fusion_weights=s.fusion_weights,
            live_refresh_alpha=s.live_refresh_alpha,
            models=arms["a"],
            variant=arms.get("b"),
            split=arm_split_from_settings(s),
            online_lists=s.online_metric_lists,
            log_training=s.trainer,
            music=music,
        )

    def dependency_error(self) -> str | None:
        """What is failing now: a batch being retried, or the search tier's polls of Milvus (it keeps
        serving from memory meanwhile, but new items and other workers' writes stop arriving)."""
        if self.last_error is not None:
            return self.last_error
        tier_error = self.search_tier.last_refresh_error if self.search_tier is not None else None
        return f"search tier refresh: {tier_error}" if tier_error else None

    def local_index_items(self) -> int | None:
        """Items in the in-process search tier (None without one): benchmarks wait on it."""
        return self.search_tier.count() if self.search_tier is not None else None

    @property
    def ready(self) -> bool:
        return self._handlers is not None
