"""A real worker against a real Milvus server (standalone, PyPI ``milvus``) instead of Milvus Lite.

The in-process search tier is off, so every search and item lookup the worker makes goes to the server
over gRPC; content goes in through the content agent. The server process must be gone after the stack.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.local import LocalStack
from streams.milvus_server import MilvusServer, running_standalone
from streams.replay import publish_raw
from streams.schemas import ContentEvent, LiveStatusEvent
from tests.conftest import base_settings
from tests.integration.test_pipeline import LIVE, SHORT, Inbox, interact

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    other = running_standalone()
    if other is not None:  # Milvus 2.3 runs one standalone server per machine
        pytest.skip(f"a Milvus standalone server already runs on this machine (pid {other})")
    root: Path = tmp_path_factory.mktemp("milvus-server")
    settings = base_settings(root, embedded_milvus="server", local_search=False, trainer=False)
    with LocalStack(settings, root) as local:
        assert isinstance(local.milvus, MilvusServer)
        pid = local.milvus.pid
        yield local
    assert pid is not None and not alive(pid), "the Milvus server outlived its stack"


@pytest.fixture(scope="module")
def inbox(server_stack: Any) -> Iterator[Inbox]:
    s = server_stack.settings
    for item_id, title in SHORT.items():
        ev = ContentEvent(item_id=item_id, kind="short_video", title=title)
        publish_raw(s, s.topic_content, item_id, ev.model_dump_json())
    for item_id, title in LIVE.items():
        ev = ContentEvent(item_id=item_id, kind="live_stream", title=title)
        publish_raw(s, s.topic_content, item_id, ev.model_dump_json())
    server_stack.worker.wait_for("livelens_items_indexed", len(SHORT) + len(LIVE), timeout=120)
    box = Inbox(server_stack)
    yield box
    box.reader.close()


def test_the_worker_indexes_into_the_server(server_stack: Any, inbox: Inbox) -> None:
    from pymilvus import MilvusClient

    s = server_stack.settings
    assert s.milvus_uri == server_stack.milvus.uri and s.milvus_uri.startswith("http://")
    client = MilvusClient(s.milvus_uri)
    try:
        assert client.get_server_version().startswith("v2.3")  # the standalone server, not Milvus Lite
        rows = client.query(s.milvus_collection, filter="", output_fields=["count(*)"])
        assert rows[0]["count(*)"] == len(SHORT) + len(LIVE)
    finally:
        client.close()
    assert not server_stack.worker.get("/stats").get("local_index_items")  # the in-process tier is off


def test_search_is_answered_by_the_server(server_stack: Any, inbox: Inbox) -> None:
    results = server_stack.worker.get("/search?q=football+goals&feed=short_video&limit=3")["results"]
    assert len(results) == 3 and all(r["item_id"].startswith("v_ball") for r in results), results
    assert results[0]["score"] >= results[-1]["score"]
    live = server_stack.worker.get("/search?q=dumplings&feed=live&limit=2")["results"]
    assert live[0]["item_id"] == "l_cook1"


def test_recommendations_come_from_the_server(server_stack: Any, inbox: Inbox) -> None:
    interact(server_stack, "ms1", "alice", "v_cook1", "like")
    topic, rec = inbox.recommendation("ms1", timeout=90)
    assert topic == server_stack.settings.topic_recs_short_video
    ids = [i.item_id for i in rec.items]
    assert ids and set(ids) <= set(SHORT) and "v_cook1" not in ids
    assert ids[0].startswith("v_cook"), ids
    served = server_stack.worker.get("/recommendations/alice?feed=short_video")
    assert served["items"] and served["items"][0]["item_id"].startswith("v_cook")


def test_an_ended_stream_leaves_live_search_at_once(server_stack: Any, inbox: Inbox) -> None:
    s = server_stack.settings
    ended = LiveStatusEvent(item_id="l_cook1", status="ended").model_dump_json()
    publish_raw(s, s.topic_live_status, "l_cook1", ended)
    deadline = time.monotonic() + 30
    while "livelens_live_streams 2.0" not in server_stack.worker.get_text("/metrics"):
        assert time.monotonic() < deadline, "live-status event not applied"
        time.sleep(0.1)
    live = server_stack.worker.get("/search?q=dumplings&feed=live&limit=5")["results"]
    assert live and "l_cook1" not in [r["item_id"] for r in live]  # Strong consistency on the server


def test_the_worker_logged_no_traceback(server_stack: Any, inbox: Inbox) -> None:
    assert "Traceback" not in server_stack.worker.log_path.read_text(errors="replace")
