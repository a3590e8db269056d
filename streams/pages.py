"""The worker's web views: /ready, /health, /metrics, /stats, /search, /recommendations, /playlist, /state."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from streams import metrics
from streams.music import MAX_PLAYLIST_LENGTH
from streams.roles.services import Services
from streams.schemas import Feed, RejectedEvent
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.model_updates import ModelUpdates

USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
FEEDS = tuple(feed.value for feed in Feed)
DEFAULT_PLAYLIST_LENGTH = 20


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
        """GET /search?q=...&feed=short_video|live|music|creators&limit=10: best-matching items for a text query
        (music: words of the vocabulary in docs/music.md match descriptors, the rest the text; creators: creators
        by their vectors)."""
        query = request.query.get("q", "")
        feed_name = request.query.get("feed", "short_video")
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            limit = -1
        if feed_name not in FEEDS or not 1 <= limit <= 100 or not 0 < len(query.strip()) <= 500:
            return web.json({"error": f"need q (1-500 chars), feed {'|'.join(FEEDS)}, limit 1-100"}, status=400)
        ok, results = await page_call(services.encoder_pool, "search", query, Feed(feed_name), limit)
        if not ok:
            return web.json({"error": results[0]}, status=results[1])
        return web.json({"query": query, "feed": feed_name, "results": results})

    @app.page("/recommendations/{user_id}")
    async def recommendations_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /recommendations/{user_id}?feed=short_video|live|music|creators: the current list from the latest
        state (creators: creator ids to follow); a user this worker has no state for gets what is trending
        in that feed (cold start; creators: the most followed)."""
        feed_name = request.query.get("feed", "short_video")
        if feed_name not in FEEDS or not USER_ID.fullmatch(user_id):
            return web.json({"error": f"need a valid user id and feed {'|'.join(FEEDS)}"}, status=400)
        state = user_state.get(user_id)
        ok, rec = await page_call(services.index_pool, "recommend_now", user_id, state, Feed(feed_name))
        if not ok:
            return web.json({"error": rec[0]}, status=rec[1])
        return web.json(json.loads(rec.model_dump_json()))

    @app.page("/playlist/{user_id}")
    async def playlist_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /playlist/{user_id}?length=N&seed_item=ID: an ordered, explained playlist (docs/music.md);
        400 with the reason for a bad length (1-200), an unknown seed or an invalid user id."""
        if not USER_ID.fullmatch(user_id):
            return web.json({"error": "invalid user id: need 1-128 of A-Z a-z 0-9 _ . : @ -"}, status=400)
        raw_length = request.query.get("length", str(DEFAULT_PLAYLIST_LENGTH))
        try:
            length = int(raw_length)
        except ValueError:
            return web.json(
                {"error": f"bad length {raw_length[:20]!r}: need a whole number 1-{MAX_PLAYLIST_LENGTH}"}, status=400
            )
        if not 1 <= length <= MAX_PLAYLIST_LENGTH:
            return web.json({"error": f"bad length {length}: need 1-{MAX_PLAYLIST_LENGTH}"}, status=400)
        seed = request.query.get("seed_item") or None
        if seed is not None and not USER_ID.fullmatch(seed):
            return web.json({"error": "unknown seed_item: not a valid item id"}, status=400)
        state = user_state.get(user_id)
        ok, result = await page_call(services.index_pool, "playlist", user_id, state, length, seed)
        if not ok:
            return web.json({"error": result[0]}, status=result[1])
        return web.json(result)

    @app.page("/state/{user_id}")
    async def state_view(web: Any, request: Any, user_id: str) -> Any:
        """GET /state/{user_id}: the user's table value (ids follow the event schema's Id format)."""
        if not USER_ID.fullmatch(user_id):
            return web.json({"error": "need a valid user id (1-128 of A-Z a-z 0-9 _ . : @ -)"}, status=400)
        state = user_state.get(user_id)
        if state is None:
            return web.json({"error": f"unknown user {user_id!r} on this worker"}, status=404)
        return web.json(json.loads(json.dumps(state)))
