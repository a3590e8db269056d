"""A real worker process configured with a SASL password never writes it to its log or its pages.

The embedded broker speaks no SASL, so the worker's authentication fails: exactly the path where
clients log their connection settings and errors, at debug level here to catch the most output.
"""

from __future__ import annotations

import time
import urllib.error
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.local import WorkerProcess
from streams.ports import free_port
from tests.conftest import base_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD = "pw-Zq8!never-log-me"
MILVUS_TOKEN = "milvus-Tok3n-secret"


class UnreadyWorker(WorkerProcess):
    def wait_ready(self, timeout: float) -> None:
        """Its broker login cannot succeed: just let it run and log for a while."""


def test_sasl_password_never_appears_in_worker_output(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        s = base_settings(
            tmp_path,
            kafka_broker=broker.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="livelens-svc",
            kafka_sasl_password=PASSWORD,
            milvus_uri=str(tmp_path / "milvus.db"),
            milvus_token=MILVUS_TOKEN,
            text_encoder="hash",
            web_port=free_port(),
            log_level="debug",
        )
        worker = UnreadyWorker(s, tmp_path / "worker.log").start()
        pages: list[str] = []
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and worker.proc is not None and worker.proc.poll() is None:
                for path in ("/health", "/ready"):
                    try:
                        pages.append(worker.get_text(path))
                    except urllib.error.HTTPError as err:
                        pages.append(err.read().decode(errors="replace"))
                    except (urllib.error.URLError, ConnectionError, TimeoutError):
                        pass
                time.sleep(2.0)
        finally:
            worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert len(log) > 500, "the worker logged almost nothing: the check below would mean little"
    assert "livelens-svc" in log or "SASL" in log or "sasl" in log, "no trace of the SASL attempt in the log"
    for secret in (PASSWORD, MILVUS_TOKEN):
        assert secret not in log, f"secret in worker log: {log[log.index(secret) - 300 :][:400]}"
        assert not any(secret in page for page in pages)
    print(f"\nworker log {len(log)} chars, {len(pages)} page reads, no secret in any")


def test_faust_app_failing_sasl_login_logs_no_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The worker above stops at topic creation (confluent-kafka); this drives the Faust/aiokafka side:
    the app's producer tries the SASL login against the broker, with every logger at DEBUG."""
    import asyncio
    import logging

    from streams.app import build_app

    caplog.set_level(logging.DEBUG)
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        s = base_settings(
            tmp_path,
            kafka_broker=broker.bootstrap,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="livelens-svc",
            kafka_sasl_password=PASSWORD,
            table_store="memory://",
        )
        app = build_app(s)

        async def login() -> str:
            try:
                await asyncio.wait_for(app.producer.start(), 20)
                return "started"
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            finally:
                await app.producer.stop()

        outcome = asyncio.run(login())
    text = caplog.text + outcome + repr(app.conf.broker_credentials)
    assert "sasl" in caplog.text.lower(), f"no SASL attempt in the log: {outcome}"
    assert PASSWORD not in text
    print(f"\nfaust producer with SASL against a non-SASL broker: {outcome[:120]}; {len(caplog.text)} log chars")
