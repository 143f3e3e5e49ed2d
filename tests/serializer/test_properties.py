"""Property tests: the selected codec against msgpack-python in both directions, and the two
implementations against each other when the compiled one is built."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from pyqcore.errors import DeserializationError
from pyqcore.serializer import _pure, dumps, loads
from tests.serializer.support import CYTHON, canon, needs_cython, scalars, values

# msgpack-python cannot decode maps with array keys, so round trips use scalar keys only.
round_trippable = values(keys=scalars)
encodable = values(keys=scalars | st.lists(scalars, max_size=3).map(tuple))


@given(encodable)
def test_dumps_is_byte_identical_to_msgpack(value: Any) -> None:
    assert dumps(value) == msgpack.packb(value, use_bin_type=True)


@given(round_trippable)
def test_msgpack_decodes_our_bytes_to_the_value(value: Any) -> None:
    decoded = msgpack.unpackb(dumps(value), raw=False, strict_map_key=False)
    assert canon(decoded) == canon(value)


@given(round_trippable)
def test_loads_decodes_msgpack_bytes_to_the_value(value: Any) -> None:
    assert canon(loads(msgpack.packb(value, use_bin_type=True))) == canon(value)


@given(st.floats(width=32))
def test_float32_decodes_like_msgpack(value: float) -> None:
    packed = msgpack.packb(value, use_single_float=True)
    assert canon(loads(packed)) == canon(msgpack.unpackb(packed))


@needs_cython
@given(encodable)
def test_implementations_encode_identically(value: Any) -> None:
    assert CYTHON is not None
    assert CYTHON.dumps(value) == _pure.dumps(value)


@needs_cython
@given(st.binary(max_size=64) | round_trippable.map(_pure.dumps))
def test_implementations_decode_identically(data: bytes) -> None:
    assert CYTHON is not None
    assert outcome(CYTHON.loads, data) == outcome(_pure.loads, data)


def outcome(decode: Any, data: bytes) -> tuple[str, object]:
    """What decoding ``data`` gives: the value in canonical form, or the error message."""
    try:
        return "value", canon(decode(data))
    except DeserializationError as exc:
        return "error", str(exc)
