"""Pure-Python MessagePack codec: the reference implementation, and the fallback used when
the compiled ``_cmsgpack`` module is missing or ``PYQCORE_PUREPYTHON=1`` is set.

Output is byte-identical to ``msgpack.packb(obj, use_bin_type=True)``. Decoding treats its
input as untrusted: every malformed record raises DeserializationError with the offset.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pyqcore.errors import DeserializationError, SerializationError

MAX_DEPTH = 256
"""Most containers (arrays and maps) that may nest inside one another, encoding or decoding."""

_MAX_LENGTH = 0xFFFFFFFF  # 32-bit length fields bound every str, bin, array and map
_MIN_INT = -(2**63)
_MAX_UINT = 2**64 - 1

_Packer = Callable[[Any, bytearray, int], None]
_Decoder = Callable[[bytes, int, int], tuple[Any, int]]


class _Unencodable(Exception):
    """Internal signal that the value cannot be encoded; dumps() then explains where and why."""


# --------------------------------------------------------------------------- encoding

_U8 = struct.Struct(">BB").pack
_U16 = struct.Struct(">BH").pack
_U32 = struct.Struct(">BI").pack
_U64 = struct.Struct(">BQ").pack
_I8 = struct.Struct(">Bb").pack
_I16 = struct.Struct(">Bh").pack
_I32 = struct.Struct(">Bi").pack
_I64 = struct.Struct(">Bq").pack
_F64 = struct.Struct(">Bd").pack


def dumps(obj: object) -> bytes:
    """Encode ``obj`` as MessagePack; SerializationError names the offending value's path."""
    out = bytearray()
    try:
        _PACKERS.get(type(obj), _pack_other)(obj, out, 0)
    except (_Unencodable, UnicodeEncodeError):
        raise SerializationError(describe_failure(obj)) from None
    return bytes(out)


def _pack_nil(obj: None, out: bytearray, depth: int) -> None:
    out.append(0xC0)


def _pack_bool(obj: bool, out: bytearray, depth: int) -> None:
    out.append(0xC3 if obj else 0xC2)


def _pack_int(obj: int, out: bytearray, depth: int) -> None:
    """Smallest encoding, as msgpack-python picks it: unsigned forms for every n >= 0."""
    if obj >= 0:
        if obj < 0x80:
            out.append(obj)
        elif obj <= 0xFF:
            out += _U8(0xCC, obj)
        elif obj <= 0xFFFF:
            out += _U16(0xCD, obj)
        elif obj <= 0xFFFFFFFF:
            out += _U32(0xCE, obj)
        elif obj <= _MAX_UINT:
            out += _U64(0xCF, obj)
        else:
            raise _Unencodable
    elif obj >= -32:
        out.append(obj & 0xFF)
    elif obj >= -0x80:
        out += _I8(0xD0, obj)
    elif obj >= -0x8000:
        out += _I16(0xD1, obj)
    elif obj >= -0x80000000:
        out += _I32(0xD2, obj)
    elif obj >= _MIN_INT:
        out += _I64(0xD3, obj)
    else:
        raise _Unencodable


def _pack_float(obj: float, out: bytearray, depth: int) -> None:
    out += _F64(0xCB, obj)


def _pack_str(obj: str, out: bytearray, depth: int) -> None:
    data = obj.encode()
    n = len(data)
    if n < 32:
        out.append(0xA0 | n)
    elif n <= 0xFF:
        out += _U8(0xD9, n)
    elif n <= 0xFFFF:
        out += _U16(0xDA, n)
    elif n <= _MAX_LENGTH:
        out += _U32(0xDB, n)
    else:
        raise _Unencodable
    out += data


def _pack_bin(obj: bytes | bytearray, out: bytearray, depth: int) -> None:
    _write_bin(obj, len(obj), out)


def _pack_memoryview(obj: memoryview, out: bytearray, depth: int) -> None:
    """Any memoryview is packed as its bytes in C order, whatever its format or layout."""
    _write_bin(obj if obj.c_contiguous else obj.tobytes(), obj.nbytes, out)


def _write_bin(data: bytes | bytearray | memoryview, n: int, out: bytearray) -> None:
    if n <= 0xFF:
        out += _U8(0xC4, n)
    elif n <= 0xFFFF:
        out += _U16(0xC5, n)
    elif n <= _MAX_LENGTH:
        out += _U32(0xC6, n)
    else:
        raise _Unencodable
    out += data


def _container_head(out: bytearray, n: int, fix: int, code16: int, code32: int) -> None:
    """The header of an array or map of n items: fix type, 16-bit or 32-bit length."""
    if n < 16:
        out.append(fix | n)
    elif n <= 0xFFFF:
        out += _U16(code16, n)
    elif n <= _MAX_LENGTH:
        out += _U32(code32, n)
    else:
        raise _Unencodable


def _pack_array(obj: list[Any] | tuple[Any, ...], out: bytearray, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Unencodable
    n = len(obj)
    _container_head(out, n, 0x90, 0xDC, 0xDD)
    depth += 1
    get = _PACKERS.get
    for item in obj:
        get(type(item), _pack_other)(item, out, depth)
    if len(obj) != n:  # another thread, or a subclass's items(), resized it: header is wrong
        raise RuntimeError("list changed size during serialization")


def _pack_map(obj: dict[Any, Any], out: bytearray, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Unencodable
    n = len(obj)
    _container_head(out, n, 0x80, 0xDE, 0xDF)
    depth += 1
    get = _PACKERS.get
    for key, value in obj.items():
        get(type(key), _pack_other)(key, out, depth)
        get(type(value), _pack_other)(value, out, depth)


def _pack_other(obj: object, out: bytearray, depth: int) -> None:
    """Subclasses of the supported types, packed as their base type; anything else fails."""
    if isinstance(obj, int):
        _pack_int(int.__index__(obj), out, depth)
    elif isinstance(obj, float):
        _pack_float(float.__float__(obj), out, depth)
    elif isinstance(obj, str):
        _pack_str(str.__str__(obj), out, depth)
    elif isinstance(obj, (bytes, bytearray)):
        _pack_memoryview(memoryview(obj), out, depth)
    elif isinstance(obj, (list, tuple)):
        _pack_array(list(obj), out, depth)
    elif isinstance(obj, dict):
        _pack_map(dict(obj.items()), out, depth)
    else:
        raise _Unencodable


_PACKERS: dict[type, _Packer] = {
    type(None): _pack_nil,
    bool: _pack_bool,
    int: _pack_int,
    float: _pack_float,
    str: _pack_str,
    bytes: _pack_bin,
    bytearray: _pack_bin,
    memoryview: _pack_memoryview,
    list: _pack_array,
    tuple: _pack_array,
    dict: _pack_map,
}


# --------------------------------------------------------------------------- error paths


def describe_failure(obj: object) -> str:
    """Say where and why ``obj`` cannot be encoded, as ``"$.vars.tags[2]: cannot serialize set"``.

    Both codecs encode without tracking paths (that would slow every call); on failure they
    call this to walk the value again, in the same order, and find the first offender.
    """
    return _find_problem(obj, "$", 0) or "$: value changed while it was being serialized"


def _find_problem(obj: object, path: str, depth: int) -> str | None:
    if not isinstance(obj, (list, tuple, dict)):
        reason = _scalar_problem(obj)
        return None if reason is None else f"{path}: {reason}"
    if depth >= MAX_DEPTH:
        return f"{path}: cannot serialize: nesting deeper than MAX_DEPTH={MAX_DEPTH}"
    if isinstance(obj, dict):
        return _find_in_map(list(obj.items()), path, depth + 1)
    if reason := _length_problem(type(obj).__name__, len(obj)):
        return f"{path}: {reason}"
    for index, item in enumerate(obj):
        if problem := _find_problem(item, f"{path}[{index}]", depth + 1):
            return problem
    return None


def _find_in_map(items: list[tuple[Any, Any]], path: str, depth: int) -> str | None:
    if reason := _length_problem("dict", len(items)):
        return f"{path}: {reason}"
    for key, value in items:
        problem = _find_problem(key, f"{path}<key>", depth) or _find_problem(
            value, path + _key_segment(key), depth
        )
        if problem:
            return problem
    return None


def _scalar_problem(obj: object) -> str | None:
    if obj is None or isinstance(obj, (bool, float)):
        return None
    if isinstance(obj, int):
        return (
            None
            if _MIN_INT <= obj <= _MAX_UINT
            else f"cannot serialize int of {obj.bit_length()} bits (range is -2**63..2**64-1)"
        )
    if isinstance(obj, str):
        try:
            return _length_problem("str", len(obj.encode()))
        except UnicodeEncodeError as exc:
            return f"cannot serialize str: {exc.reason} at index {exc.start}"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _length_problem(type(obj).__name__, memoryview(obj).nbytes)
    return f"cannot serialize {_type_name(obj)}"


def _length_problem(kind: str, length: int) -> str | None:
    if length <= _MAX_LENGTH:
        return None
    return f"cannot serialize {kind} of length {length} (max 2**32-1)"


def _key_segment(key: object) -> str:
    """``.name`` for short identifier keys, ``[repr]`` (shortened) for any other key."""
    if type(key) is str and key.isidentifier() and len(key) <= 40:
        return f".{key}"
    text = repr(key)
    return f"[{text if len(text) <= 40 else text[:37] + '...'}]"


def _type_name(obj: object) -> str:
    """``set`` for builtins, ``decimal.Decimal`` for everything else."""
    cls = type(obj)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- decoding


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Decode one MessagePack object that must span all of ``data``."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    obj, pos = _unpack(data, 0, 0)
    if pos != len(data):
        trailing = len(data) - pos
        raise DeserializationError(f"{trailing} trailing bytes after the object at offset {pos}")
    return obj


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return memoryview(data).tobytes()
    raise DeserializationError(
        f"expected bytes, bytearray or memoryview, got {type(data).__name__}"
    )


def _unpack(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """Decode the object whose type byte is at ``pos``; return it and the offset after it."""
    if pos >= len(buf):
        raise _truncated(pos)
    code = buf[pos]
    if code < 0x80:
        return code, pos + 1
    if code >= 0xE0:
        return code - 0x100, pos + 1
    if code >= 0xC0:
        return _DECODERS[code - 0xC0](buf, pos, depth)
    if code >= 0xA0:
        return _read_str(buf, pos, pos + 1, code & 0x1F)
    if code >= 0x90:
        return _read_fixarray(buf, pos, depth)
    return _read_fixmap(buf, pos, depth)


def _read_str(buf: bytes, pos: int, start: int, n: int) -> tuple[str, int]:
    end = start + n
    if end > len(buf):
        raise _truncated(pos)
    try:
        return buf[start:end].decode(), end
    except UnicodeDecodeError:
        raise DeserializationError(f"invalid UTF-8 in str at offset {pos}") from None


def _read_bin(buf: bytes, pos: int, start: int, n: int) -> tuple[bytes, int]:
    end = start + n
    if end > len(buf):
        raise _truncated(pos)
    return buf[start:end], end


def _read_array(buf: bytes, pos: int, start: int, n: int, depth: int) -> tuple[list[Any], int]:
    if n > len(buf) - start:  # every element takes at least one byte
        raise _truncated(pos)
    items: list[Any] = []
    append = items.append
    depth += 1
    for _ in range(n):
        item, start = _unpack(buf, start, depth)
        append(item)
    return items, start


def _read_map(buf: bytes, pos: int, start: int, n: int, depth: int) -> tuple[dict[Any, Any], int]:
    if 2 * n > len(buf) - start:  # every key and every value takes at least one byte
        raise _truncated(pos)
    result: dict[Any, Any] = {}
    depth += 1
    for _ in range(n):
        key_pos = start
        key, start = _unpack(buf, start, depth)
        if type(key) is list:
            key = _array_key(key, key_pos)
        elif type(key) is dict:
            raise DeserializationError(f"unhashable map key (a map) at offset {key_pos}")
        result[key], start = _unpack(buf, start, depth)
    return result, start


def _array_key(items: list[Any], pos: int) -> tuple[Any, ...]:
    """An array used as a map key, as the tuple it was encoded from (inner arrays too): the
    encoder takes tuple keys, so the decoder gives them back."""
    key: list[Any] = []
    for item in items:
        if type(item) is dict:
            raise DeserializationError(f"unhashable map key (a map in an array) at offset {pos}")
        key.append(_array_key(item, pos) if type(item) is list else item)
    return tuple(key)


def _truncated(pos: int) -> DeserializationError:
    return DeserializationError(f"truncated input: object at offset {pos} runs past the end")


def _length_prefixed(
    size_format: str, read: Callable[[bytes, int, int, int], tuple[Any, int]]
) -> _Decoder:
    """Decoder for a str/bin whose length follows the type byte in ``size_format``."""
    field = struct.Struct(size_format)
    size, unpack_from = field.size, field.unpack_from

    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        if pos + 1 + size > len(buf):
            raise _truncated(pos)
        return read(buf, pos, pos + 1 + size, unpack_from(buf, pos + 1)[0])

    return decode


def _container(
    size_format: str, read: Callable[[bytes, int, int, int, int], tuple[Any, int]]
) -> _Decoder:
    """Decoder for an array/map: fixed (``size_format`` empty, count in the type byte) or
    with a count field; enforces MAX_DEPTH before reading anything else."""
    field = struct.Struct(size_format)
    size, unpack_from = field.size, field.unpack_from

    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        if depth >= MAX_DEPTH:
            raise DeserializationError(f"nesting deeper than MAX_DEPTH={MAX_DEPTH} at offset {pos}")
        if pos + 1 + size > len(buf):
            raise _truncated(pos)
        n = unpack_from(buf, pos + 1)[0] if size else buf[pos] & 0x0F
        return read(buf, pos, pos + 1 + size, n, depth)

    return decode


def _scalar(value_format: str) -> _Decoder:
    """Decoder for a fixed-width number that follows the type byte."""
    field = struct.Struct(value_format)
    size, unpack_from = field.size, field.unpack_from

    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        end = pos + 1 + size
        if end > len(buf):
            raise _truncated(pos)
        return unpack_from(buf, pos + 1)[0], end

    return decode


def _constant(value: object) -> _Decoder:
    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        return value, pos + 1

    return decode


def _rejected(reason: str) -> _Decoder:
    def decode(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
        raise DeserializationError(f"{reason} 0x{buf[pos]:02x} at offset {pos}")

    return decode


def _decoder_table() -> list[_Decoder]:
    """Decoders for type bytes 0xc0..0xdf; the fix* ranges below 0xc0 are handled inline."""
    ext = _rejected("unsupported ext type")
    return [
        _constant(None),  # 0xc0
        _rejected("invalid type byte"),  # 0xc1 is reserved
        _constant(False),
        _constant(True),
        _length_prefixed(">B", _read_bin),  # 0xc4
        _length_prefixed(">H", _read_bin),
        _length_prefixed(">I", _read_bin),
        ext,  # 0xc7..0xc9
        ext,
        ext,
        _scalar(">f"),  # 0xca
        _scalar(">d"),
        _scalar(">B"),  # 0xcc
        _scalar(">H"),
        _scalar(">I"),
        _scalar(">Q"),
        _scalar(">b"),  # 0xd0
        _scalar(">h"),
        _scalar(">i"),
        _scalar(">q"),
        ext,  # 0xd4..0xd8
        ext,
        ext,
        ext,
        ext,
        _length_prefixed(">B", _read_str),  # 0xd9
        _length_prefixed(">H", _read_str),
        _length_prefixed(">I", _read_str),
        _container(">H", _read_array),  # 0xdc
        _container(">I", _read_array),
        _container(">H", _read_map),  # 0xde
        _container(">I", _read_map),
    ]


_DECODERS = _decoder_table()
_read_fixarray = _container("", _read_array)
_read_fixmap = _container("", _read_map)
