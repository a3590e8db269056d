"""Shared fixtures: the real datasets (skip cleanly without ../shared) and a local LiveLens stack."""

from __future__ import annotations

import contextlib
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


def _descendants(root: int) -> dict[int, str]:
    """Live (not zombie) processes below ``root``, pid -> command line, read from /proc (Linux)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":\t", 1) for line in (entry / "status").read_text().splitlines() if ":\t" in line)
            if fields.get("State", "").startswith("Z"):
                continue
            parent[int(entry.name)] = int(fields["PPid"])
        except (OSError, KeyError, ValueError):
            continue  # exited while we looked
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                try:
                    cmd = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    cmd = "?"
                found[child] = cmd.strip()
                frontier.append(child)
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No process a test started may outlive the session (workers, brokers, Milvus servers): fail the run
    and end them, so a leak is seen in CI instead of piling up on the machine."""
    if not Path("/proc/self/status").exists():
        return
    import signal
    import time

    deadline = time.monotonic() + 10.0  # a stop in flight may still be exiting
    left = _descendants(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _descendants(os.getpid())
    if not left:
        return
    for pid in left:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)
    listing = "\n".join(f"  {pid}: {cmd}" for pid, cmd in left.items())
    print(f"\nprocesses started by the tests were still running at the end (now killed):\n{listing}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
