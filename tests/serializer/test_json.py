"""The JSON serializer: compact UTF-8 records, with errors mapped to pyqcore's types."""

from __future__ import annotations

from typing import Any

import pytest

from pyqcore.errors import DeserializationError, SerializationError
from pyqcore.serializer import JSON, MSGPACK, Serializer
from tests.serializer.test_codec import REFERENCE_JOB


def test_records_are_compact_utf8() -> None:
    assert JSON.dumps({"a": [1, 2.5, None, True], "é": "€"}) == (
        '{"a":[1,2.5,null,true],"é":"€"}'.encode()
    )


def test_round_trip() -> None:
    assert JSON.loads(JSON.dumps(REFERENCE_JOB)) == REFERENCE_JOB


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", {(1, 2): 3}, "\ud800", object()], ids=repr)
def test_unencodable_values_raise_serialization_error(value: object) -> None:
    with pytest.raises(SerializationError, match="cannot serialize as JSON"):
        JSON.dumps(value)


def test_circular_and_deep_values_raise_serialization_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (loop, deep):
        with pytest.raises(SerializationError):
            JSON.dumps(value)


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[1,]", b"\xff", b'"\xed\xa0\x80"', b"[" * 100_000, "[1]", None]
)
def test_malformed_records_raise_deserialization_error(data: Any) -> None:
    with pytest.raises(DeserializationError, match="invalid JSON record"):
        JSON.loads(data)


def test_both_builtin_serializers_satisfy_the_protocol() -> None:
    serializers: list[Serializer] = [MSGPACK, JSON]
    assert [repr(s) for s in serializers] == [
        "<pyqcore.serializer msgpack>",
        "<pyqcore.serializer json>",
    ]
