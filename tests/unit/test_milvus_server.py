"""What the real Milvus server path needs without starting one: hit ids from a 2.3 server, its settings."""

from __future__ import annotations

from pathlib import Path

from storage.milvus import hit_id
from streams.milvus_server import MilvusServer
from streams.settings import Settings


def test_a_hit_names_its_item_by_field_or_by_id() -> None:
    assert hit_id({"item_id": "v1", "distance": 0.5, "entity": {}}) == "v1"  # Milvus Lite, Milvus >= 2.4
    assert hit_id({"id": "v2", "distance": 0.5, "entity": {}}) == "v2"  # Milvus 2.3: primary field unnamed


def test_server_settings_have_one_home_and_default(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.embedded_milvus == "lite" and s.milvus_server_port == 19530
    assert s.resolved_milvus_server_dir() == tmp_path / "milvus-server"
    assert Settings(milvus_server_dir=tmp_path / "m").resolved_milvus_server_dir() == tmp_path / "m"


def test_stopping_a_server_never_started_is_a_no_op(tmp_path: Path) -> None:
    server = MilvusServer(tmp_path)
    assert server.stop() is None and not server.is_running() and server.pid is None
