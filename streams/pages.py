"""The worker's web views: /ready, /health, /metrics, /stats, /search, /recommendations, /state."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from streams import metrics
from streams.roles.services import Services
from streams.schemas import Feed, RejectedEvent
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.model_updates import ModelUpdates

USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


def register_pages(
    app: Any,
    s: Settings,
    services: Services,
    user_state: Any,
    updates: ModelUpdates | None,
    input_topics: tuple[str, ...],
) -> None:
    @app.page("/ready")
    async def ready_view(web: Any, request: Any) -> Any:
        """Readiness: models loaded, broker reachable with the input topics, Milvus answering; 200 or 503."""
        ready, body = await metrics.readiness(app, services, s, input_topics)
        if updates is not None:  # with a trainer: its latest snapshot is served (when there is one)
            body["checks"]["trainer_models"] = {"ok": updates.ready, **updates.status()}  # same shape as the others
            ready = ready and updates.ready
            body["status"] = "ready" if ready else "not_ready"
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/health")
    async def health_view(web: Any, request: Any) -> Any:
        error = services.dependency_error()
        healthy = services.ready and error is None
        status = "ok" if healthy else ("degraded" if error else "loading")
        body = {"status": status, "models_loaded": services.ready, "error": error}
        return web.json(body, status=200 if healthy else 503)

    @app.page("/stats")
    async def stats_view(web: Any, request: Any) -> Any:
        """Counters the demo and tests poll to know the worker caught up."""
        samples = {
            family.name: sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
            for m in (
                metrics.ITEMS_INDEXED,
                metrics.RECOMMENDATIONS,
                metrics.DEAD_LETTERS,
                metrics.EVENTS_CONSUMED,
                metrics.LIVE_REFRESHES,
            )
            for family in m.collect()
        }
        local = services.local_index_items()
        extra = {} if local is None else {"local_index_items": local}
        if updates is not None:
            extra["trainer_models"] = updates.status()
        return web.json({"ready": services.ready, "users": len(user_state), **samples, **extra})

    async def page_call(pool: ThreadPoolExecutor, method: str, *args: Any) -> tuple[bool, Any]:
        """One attempt at a page's blocking call, without run_in's retry loop: a request must not hang
        while Milvus or the model is down. (False, (message, status)): 400 for bad input, 503 otherwise."""
        if not services.ready:
            return False, ("models are loading or failing to load; see /health", 503)
        handlers = await services.handlers()
        try:
            fn = getattr(handlers, method)
            result = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, fn, *args), 30.0)
        except RejectedEvent as exc:
            return False, (str(exc), 400)
        except Exception as exc:
            return False, (f"{method} failed: {type(exc).__name__}: {exc}"[:300], 503)
        return True, result

    @app.page("/search")
    async def search_view(web: Any, request: Any) -> Any:
        """GET /search?q=...&feed=short_video|live|creators&limit=10: best-matching items (or creators, by their
        vectors) for a text query."""
        query = request.query.get("q", "")
        feed_name = request.query.get("feed", "short_video")
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            limit = -1
        if (
            feed_name not in ("short_video", "live", "creators")
            or not 1 <= limit <= 100
            or not 0 < len(query.strip()) <= 500
        ):
            return web.json({"error": "need q (1-500 chars), feed short_video|live|creators, limit 1-100"}, status=400)
        ok, results = await page_call(services.encoder_pool, "search", query, Feed(feed_name), limit)
        if not ok:
            return web.json({"error": results[0]}, status=results[1])
        return web.json({"query": query, "feed": feed_name, "results": results})

    @app.page("/recommendations/{user_id}")
    async def recommendations_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /recommendations/{user_id}?feed=short_video|live|creators: the current list from the latest
        state (creators: creator ids to follow); a user this worker has no state for gets what is trending
        in that feed (cold start; creators: the most followed)."""
        feed_name = request.query.get("feed", "short_video")
        if feed_name not in ("short_video", "live", "creators") or not USER_ID.fullmatch(user_id):
            return web.json({"error": "need a valid user id and feed short_video|live|creators"}, status=400)
        state = user_state.get(user_id)
        ok, rec = await page_call(services.index_pool, "recommend_now", user_id, state, Feed(feed_name))
        if not ok:
            return web.json({"error": rec[0]}, status=rec[1])
        return web.json(json.loads(rec.model_dump_json()))

    @app.page("/state/{user_id}")
    async def state_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /state/{user_id}: the user's table value (ids follow the event schema's Id format)."""
        if not USER_ID.fullmatch(user_id):
            return web.json({"error": "need a valid user id (1-128 of A-Z a-z 0-9 _ . : @ -)"}, status=400)
        state = user_state.get(user_id)
        if state is None:
            return web.json({"error": f"unknown user {user_id!r} on this worker"}, status=404)
        return web.json(json.loads(json.dumps(state)))
