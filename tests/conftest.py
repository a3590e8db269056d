"""Shared fixtures: the real datasets (skip cleanly without ../shared) and a local LiveLens stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings, default_datasets_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    path = Path(os.environ.get("LIVELENS_DATASETS_DIR", default_datasets_dir()))
    if not (path / "microlens-50k").is_dir():
        pytest.skip(f"real datasets not found under {path} (../shared/datasets)")
    return path


def base_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings isolated from the environment: embedded services, small partitions, a tmp data dir."""
    values: dict[str, object] = {
        "kafka_broker": None,
        "milvus_uri": None,
        "data_dir": tmp,
        "partitions": 2,
        "log_level": "info",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Embedded broker + Milvus Lite server + one real worker (MiniLM weights), per test module."""
    from streams.local import LocalStack

    root = tmp_path_factory.mktemp("stack")
    with LocalStack(base_settings(root), root) as local:
        yield local
