"""Dead letters stay small enough to publish, whatever the rejected payload was."""

from __future__ import annotations

import base64

import pytest

from streams.handlers import DLQ_PAYLOAD_MAX_BYTES, DLQ_PAYLOAD_MAX_JSON_BYTES, dead_letter
from streams.schemas import RejectedEvent

PRODUCER_MAX_REQUEST_BYTES = 1_048_576  # Faust/aiokafka default max_request_size


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01" * (300 * 1024),  # control characters: 6 bytes each once JSON-escaped
        b'"' * (300 * 1024),  # quotes: 2 bytes each
        b"\xff" * (300 * 1024),  # not UTF-8: base64
        "\U0001f600".encode() * (80 * 1024),  # 4-byte characters
    ],
)
def test_a_letter_for_any_payload_fits_the_producer_request_limit(raw: bytes) -> None:
    letter = dead_letter("t", raw, RejectedEvent("oversized", "too big"))
    size = len(letter.model_dump_json().encode())
    assert size <= DLQ_PAYLOAD_MAX_JSON_BYTES + 4_096 < PRODUCER_MAX_REQUEST_BYTES
    assert "payload cut from" in letter.error
    kept = base64.b64decode(letter.payload) if letter.payload_encoding == "base64" else letter.payload.encode()
    assert raw.startswith(kept) and 0 < len(kept) <= DLQ_PAYLOAD_MAX_BYTES


def test_a_small_payload_is_kept_whole() -> None:
    raw = '{"title": "caf\u00e9 \x01"}'.encode()
    letter = dead_letter("t", raw, RejectedEvent("schema", "x"))
    assert letter.payload.encode() == raw and letter.payload_encoding == "utf-8"
    assert "cut" not in letter.error
