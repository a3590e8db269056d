"""The log filter drops exactly Milvus Lite's expected AllocTimestamp traceback and keeps every other record."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from pymilvus.grpc_gen.milvus_pb2_grpc import MilvusServiceServicer

from storage.milvus import GRPC_SERVER_LOGGER, AllocTimestampUnimplemented, quiet_alloc_timestamp_unimplemented


def logged(call: Callable[[], Any], name: str = GRPC_SERVER_LOGGER) -> logging.LogRecord:
    """The record grpc's server logs when a servicer method raises (``logger.exception``)."""
    try:
        call()
    except Exception:
        exc_info = sys.exc_info()
    else:  # pragma: no cover - every call here raises
        raise AssertionError("expected the call to raise")
    return logging.LogRecord(
        name, logging.ERROR, __file__, 1, "Exception calling application: %s", (exc_info[1],), exc_info
    )


def alloc_timestamp() -> None:
    MilvusServiceServicer().AllocTimestamp(None, mock.Mock())  # the servicer method Milvus Lite inherits


def search() -> None:
    MilvusServiceServicer().Search(None, mock.Mock())


def test_drops_the_unimplemented_alloc_timestamp_traceback() -> None:
    assert not AllocTimestampUnimplemented().filter(logged(alloc_timestamp))


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(lambda: logged(search), id="another unimplemented method"),
        pytest.param(lambda: logged(lambda: 1 / 0), id="another error"),
        pytest.param(lambda: logged(alloc_timestamp, name="pymilvus.decorators"), id="another logger"),
        pytest.param(
            lambda: logging.LogRecord(GRPC_SERVER_LOGGER, logging.ERROR, __file__, 1, "AllocTimestamp", (), None),
            id="no exception",
        ),
    ],
)
def test_keeps_every_other_record(record: Callable[[], logging.LogRecord]) -> None:
    assert AllocTimestampUnimplemented().filter(record())


def test_installed_once_on_grpcs_server_logger(caplog: pytest.LogCaptureFixture) -> None:
    quiet_alloc_timestamp_unimplemented()
    quiet_alloc_timestamp_unimplemented()
    logger = logging.getLogger(GRPC_SERVER_LOGGER)
    assert sum(isinstance(f, AllocTimestampUnimplemented) for f in logger.filters) == 1
    with caplog.at_level(logging.ERROR, logger=GRPC_SERVER_LOGGER):
        for call in (alloc_timestamp, search):
            logger.handle(logged(call))
    assert len(caplog.records) == 1
    assert "Search" in caplog.text and "AllocTimestamp" not in caplog.text
