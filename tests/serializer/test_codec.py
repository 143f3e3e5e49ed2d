"""Example-based tests of the selected MessagePack codec (run under both implementations:
``PYQCORE_PUREPYTHON=1 pytest tests/serializer`` and plain ``pytest tests/serializer``)."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import math
from typing import Any, NamedTuple

import msgpack
import pytest

from pyqcore.errors import DeserializationError, SerializationError
from pyqcore.serializer import MAX_DEPTH, MSGPACK, dumps, loads
from tests.serializer.support import INT_EDGES, canon

REFERENCE_JOB = {
    "user_id": 123456,
    "email": "user123456@example.com",
    "template": "welcome",
    "vars": {"name": "User 123456", "plan": "pro", "tags": ["a", "b", "c"], "score": 0.75},
}


def packb(value: object) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def assert_same_as_msgpack(value: object) -> None:
    encoded = dumps(value)
    assert encoded == packb(value)
    assert canon(loads(encoded)) == canon(value)


# --------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0.0,
        -0.0,
        1.5,
        math.inf,
        -math.inf,
        math.nan,
        1e308,
        5e-324,
        "",
        b"",
        [],
        (),
        {},
        REFERENCE_JOB,
    ],
    ids=repr,
)
def test_scalars_and_empty_containers_match_msgpack(value: object) -> None:
    assert_same_as_msgpack(value)


@pytest.mark.parametrize("value", INT_EDGES, ids=str)
def test_every_int_size_class_edge_matches_msgpack(value: int) -> None:
    assert_same_as_msgpack(value)


@pytest.mark.parametrize("length", [0, 1, 31, 32, 255, 256, 65535, 65536])
@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_str_lengths_around_each_header_size(length: int, char: str) -> None:
    text = (char * length)[: max(0, length // len(char.encode()))]  # ~length UTF-8 bytes
    assert_same_as_msgpack(text)
    assert_same_as_msgpack("a" * length)


@pytest.mark.parametrize("length", [0, 1, 31, 32, 255, 256, 65535, 65536])
def test_bin_lengths_around_each_header_size(length: int) -> None:
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    for value in (data, bytearray(data), memoryview(data)):
        assert dumps(value) == packb(value)
    assert loads(dumps(data)) == data


@pytest.mark.parametrize("length", [0, 15, 16, 65535, 65536])
def test_array_and_map_lengths_around_each_header_size(length: int) -> None:
    assert_same_as_msgpack(list(range(length)))
    assert_same_as_msgpack({i: None for i in range(length)})


def test_float_is_always_float64() -> None:
    assert dumps(1.0) == bytes.fromhex("cb3ff0000000000000")
    assert loads(b"\xca\x3f\xc0\x00\x00") == 1.5  # float32 decodes to float
    assert type(loads(b"\xca\x3f\xc0\x00\x00")) is float


def test_map_keys_of_any_supported_type() -> None:
    value = {None: 1, True: 2, 3: 3, -4: 4, 2.5: 5, "s": 6, b"b": 7, (1, "x"): 8}
    assert dumps(value) == packb(value)
    without_tuple = {k: v for k, v in value.items() if not isinstance(k, tuple)}
    assert canon(loads(dumps(without_tuple))) == canon(without_tuple)


def test_decodes_to_plain_types() -> None:
    decoded = loads(dumps({"t": (1, 2), "b": bytearray(b"x"), "m": memoryview(b"y")}))
    assert decoded == {"t": [1, 2], "b": b"x", "m": b"y"}
    assert [type(v) for v in decoded.values()] == [list, bytes, bytes]


def test_memoryviews_pack_as_their_bytes_in_c_order() -> None:
    data = bytes(range(12))
    assert dumps(memoryview(data).cast("i")) == packb(data)
    assert dumps(memoryview(data)[::2]) == packb(data[::2])  # not contiguous: msgpack refuses


def test_msgpack_serializer_object_wraps_the_codec() -> None:
    assert MSGPACK.dumps(REFERENCE_JOB) == dumps(REFERENCE_JOB)
    assert MSGPACK.loads(packb(REFERENCE_JOB)) == REFERENCE_JOB


# --------------------------------------------------------------------------- subclasses


class Color(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    HAPPY = "happy"


class Point(NamedTuple):
    x: int
    y: int


class MyFloat(float):
    pass


class MyBytes(bytes):
    pass


def test_subclasses_pack_as_their_base_type() -> None:
    ordered = collections.OrderedDict([("a", 1), ("b", 2)])
    ordered.move_to_end("a")  # order of .items(), not of the underlying dict
    counts = collections.Counter("aab")
    for value in (
        Color.RED,
        Mood.HAPPY,
        Point(1, 2),
        MyFloat(2.5),
        MyBytes(b"xy"),
        ordered,
        counts,
        collections.defaultdict(int, {"k": 1}),
        [Color.RED, {Mood.HAPPY: 1}],
    ):
        assert dumps(value) == packb(value), value
    assert loads(dumps(ordered)) == {"b": 2, "a": 1}


class ResizingDict(dict[str, int]):
    """User code that runs mid-encode: its items() grows the list that holds it."""

    def __init__(self, victim: list[Any]) -> None:
        super().__init__()
        self.victim = victim

    def items(self) -> Any:
        self.victim.append(0)
        return super().items()


def test_a_list_resized_while_encoding_fails_rather_than_write_a_wrong_header() -> None:
    value: list[Any] = []
    value.append(ResizingDict(value))
    with pytest.raises(RuntimeError, match="list changed size during serialization"):
        dumps(value)


def test_bool_stays_bool() -> None:
    assert dumps(True) == b"\xc3"
    assert dumps([True, 1, False, 0]) == b"\x94\xc3\x01\xc2\x00"
    assert loads(b"\xc3") is True


# --------------------------------------------------------------------------- encode errors


def serialization_error(value: object) -> str:
    with pytest.raises(SerializationError) as caught:
        dumps(value)
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, "$: cannot serialize set"),
        (frozenset(), "$: cannot serialize frozenset"),
        (object(), "$: cannot serialize object"),
        (1j, "$: cannot serialize complex"),
        (decimal.Decimal(1), "$: cannot serialize decimal.Decimal"),
        (datetime.datetime(2024, 1, 1), "$: cannot serialize datetime.datetime"),
        ({"vars": {"tags": ["a", "b", {"c"}]}}, "$.vars.tags[2]: cannot serialize set"),
        ({"not an identifier": [None, Point]}, "$['not an identifier'][1]: cannot serialize type"),
        ({7: {b"k": print}}, "$[7][b'k']: cannot serialize builtin_function_or_method"),
        ({frozenset(): 1}, "$<key>: cannot serialize frozenset"),
        ([{(1, frozenset()): 0}], "$[0]<key>[1]: cannot serialize frozenset"),
        ((0, 1, 2**64), "$[2]: cannot serialize int of 65 bits"),
        ([INT_EDGES, -(2**63) - 1], "$[1]: cannot serialize int of 64 bits"),
        (2**1000, "$: cannot serialize int of 1001 bits"),
        ({"s": "ok\ud800"}, "$.s: cannot serialize str: surrogates not allowed at index 2"),
        ({"\udfff": 1}, "$<key>: cannot serialize str: surrogates not allowed at index 0"),
    ],
    ids=repr,
)
def test_encode_errors_name_the_path_and_the_type(value: object, message: str) -> None:
    assert serialization_error(value).startswith(message)


def test_encode_error_for_a_long_key_shortens_it() -> None:
    expected = "$['" + "x" * 36 + "...]: cannot serialize set"
    assert serialization_error({"x" * 100: set()}) == expected
    expected = "$[b'" + "y" * 35 + "...]: cannot serialize set"
    assert serialization_error({b"y" * 100: set()}) == expected


def test_nesting_up_to_max_depth_encodes_and_deeper_fails() -> None:
    assert loads(dumps(nested_lists(MAX_DEPTH))) == nested_lists(MAX_DEPTH)
    message = serialization_error(nested_lists(MAX_DEPTH + 1))
    assert message.endswith(f"nesting deeper than MAX_DEPTH={MAX_DEPTH}")
    assert message.startswith("$" + "[0]" * MAX_DEPTH + ": ")


def test_self_reference_and_huge_depth_are_serialization_errors() -> None:
    loop: list[Any] = []
    loop.append(loop)
    looped_dict: dict[str, Any] = {}
    looped_dict["me"] = looped_dict
    for value in (loop, looped_dict, nested_lists(100_000)):
        assert "MAX_DEPTH" in serialization_error(value)


def test_max_depth_is_a_documented_bound() -> None:
    assert MAX_DEPTH == 256


# --------------------------------------------------------------------------- decode errors


def deserialization_error(data: Any) -> str:
    with pytest.raises(DeserializationError) as caught:
        loads(data)
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated input: object at offset 0"),
        (b"\xcd\x01", "truncated input: object at offset 0"),
        (b"\xcb" + bytes(7), "truncated input"),
        (b"\x92\x01", "truncated input: object at offset 0"),
        (b"\x91\xa3ab", "truncated input: object at offset 1"),
        (b"\x81\xa1k", "truncated input: object at offset 3"),
        (b"\xdb\xff\xff\xff\xff" + b"x" * 10, "truncated input"),
        (b"\xc6\xff\xff\xff\xff" + b"x" * 10, "truncated input"),
        (b"\xdd\xff\xff\xff\xff" + b"\xc0" * 10, "truncated input"),
        (b"\xdf\xff\xff\xff\xff" + b"\xc0" * 10, "truncated input"),
        (b"\xdf\x00\x00\x00\x03\xc0\xc0\xc0\xc0\xc0", "truncated input"),
        (b"\xc1", "invalid type byte 0xc1 at offset 0"),
        (b"\x92\x01\xc1", "invalid type byte 0xc1 at offset 2"),
        (b"\xa2\xc3\x28", "invalid UTF-8 in str at offset 0"),
        (b"\xa3\xed\xa0\x80", "invalid UTF-8"),  # an encoded surrogate
        (b"\xa2\xc0\x80", "invalid UTF-8"),  # overlong NUL
        (b"\x81\xa1\xff\xc0", "invalid UTF-8 in str at offset 1"),  # in a map key
        (b"\xd9\x01\xff", "invalid UTF-8"),
        (b"\x81\x80\xc0", "unhashable map key (a map) at offset 1"),
        (b"\x81\x91\x80\xc0", "unhashable map key (a map in an array) at offset 1"),
        (b"\xc0\xc0", "1 trailing bytes after the object at offset 1"),
        (b"\x90" + bytes(5), "5 trailing bytes"),
    ],
    ids=repr,
)
def test_malformed_input_raises_deserialization_error(data: bytes, message: str) -> None:
    assert deserialization_error(data).startswith(message)
    assert deserialization_error(bytearray(data)).startswith(message)
    assert deserialization_error(memoryview(b"\x00" + data)[1:]).startswith(message)


@pytest.mark.parametrize(
    "data",
    [
        b"\xd4\x01\x00",
        b"\xd5\x01" + bytes(2),
        b"\xd6\xff" + bytes(4),
        b"\xd7\x01" + bytes(8),
        b"\xd8\x01" + bytes(16),
        b"\xc7\x01\x05\x00",
        b"\xc8\x00\x01\x05\x00",
        b"\xc9\x00\x00\x00\x01\x05\x00",
    ],
    ids=lambda data: data[:1].hex(),
)
def test_ext_types_are_rejected(data: bytes) -> None:
    assert deserialization_error(data).startswith(f"unsupported ext type 0x{data[0]:02x}")
    assert deserialization_error(b"\x91" + data).endswith("at offset 1")


@pytest.mark.parametrize("opener", [b"\x91", b"\xdc\x00\x01", b"\x81\xc0", b"\xde\x00\x01\xc0"])
def test_decode_nesting_is_bounded(opener: bytes) -> None:
    assert loads(opener * MAX_DEPTH + b"\xc0") is not None
    message = deserialization_error(opener * (MAX_DEPTH + 1) + b"\xc0")
    assert message == (
        f"nesting deeper than MAX_DEPTH={MAX_DEPTH} at offset {len(opener) * MAX_DEPTH}"
    )
    assert "MAX_DEPTH" in deserialization_error(opener * 100_000)


@pytest.mark.parametrize("data", ["text", 7, None, [1], bytes])
def test_input_must_be_bytes_like(data: object) -> None:
    assert deserialization_error(data).startswith("expected bytes, bytearray or memoryview")


def test_every_truncation_of_a_valid_record_fails() -> None:
    record = dumps([REFERENCE_JOB, 2**64 - 1, -(2**63), 1.5, b"\x00" * 300, "é" * 40])
    for end in range(len(record)):
        with pytest.raises(DeserializationError):
            loads(record[:end])


def test_bytes_like_inputs_decode_alike() -> None:
    record = dumps(REFERENCE_JOB)
    padded = b"\x00" + record + b"\x00"
    views: list[bytes | bytearray | memoryview] = [
        bytearray(record),
        memoryview(record),
        memoryview(padded)[1:-1],
    ]
    strided = memoryview(bytes(b for pair in zip(record, record, strict=True) for b in pair))[::2]
    for data in [*views, strided, memoryview(bytearray(record)).cast("B")]:
        assert loads(data) == REFERENCE_JOB


def test_tuple_map_keys_come_back_as_tuples() -> None:
    """The encoder takes tuple keys (an array on the wire), so the decoder rebuilds them as
    tuples, inner ones too, instead of failing on an unhashable list."""
    value = {(1, ("a", b"b")): "x", (): None, "plain": [1, 2]}
    assert loads(dumps(value)) == value
    assert loads(b"\x81\x90\xc0") == {(): None}
