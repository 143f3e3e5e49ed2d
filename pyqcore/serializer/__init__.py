"""Serializers for job records: MessagePack by default, JSON for records people read by hand.

``dumps``/``loads`` are the MessagePack codec, byte-identical to
``msgpack.packb(obj, use_bin_type=True)``. ``IMPLEMENTATION`` says which codec runs:
``"cython"`` (the compiled ``_cmsgpack`` extension) or ``"python"`` (``_pure``), which
``PYQCORE_PUREPYTHON=1`` at import time selects on purpose. A missing extension without that
variable also falls back to ``"python"``, with a RuntimeWarning: a broken install should show.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from typing import Any, Literal, Protocol, final

from pyqcore.errors import DeserializationError, SerializationError
from pyqcore.serializer import _pure

__all__ = [
    "IMPLEMENTATION",
    "JSON",
    "MAX_DEPTH",
    "MSGPACK",
    "Serializer",
    "dumps",
    "loads",
]

MAX_DEPTH: int = _pure.MAX_DEPTH
"""Most containers (lists, tuples, dicts) that may nest inside one another; deeper values
raise SerializationError, deeper records DeserializationError."""

_Dumps = Callable[[Any], bytes]
_Loads = Callable[[bytes | bytearray | memoryview], Any]


class Serializer(Protocol):
    """What a queue accepts as ``serializer=``: any object with these two methods."""

    def dumps(self, obj: Any, /) -> bytes:
        """Encode ``obj``; raise SerializationError (or any error, which the queue wraps)."""
        ...

    def loads(self, data: bytes, /) -> Any:
        """Decode a record that ``dumps`` produced; raise DeserializationError if malformed."""
        ...


@final
class _Codec:
    """A Serializer made of two plain functions, stored as attributes so a call adds no frame."""

    __slots__ = ("dumps", "loads", "name")

    def __init__(self, name: str, dumps: _Dumps, loads: _Loads) -> None:
        self.name = name
        self.dumps = dumps
        self.loads = loads

    def __repr__(self) -> str:
        return f"<pyqcore.serializer {self.name}>"


def _select_msgpack() -> tuple[Literal["cython", "python"], _Dumps, _Loads]:
    """The compiled codec unless PYQCORE_PUREPYTHON is set (to anything but "" or "0")."""
    if os.environ.get("PYQCORE_PUREPYTHON", "") not in ("", "0"):
        return "python", _pure.dumps, _pure.loads
    try:  # optional, and a plain import: its error names the missing module, a from-import's not
        import pyqcore.serializer._cmsgpack as _cmsgpack  # noqa: PLC0415, PLR0402
    except ImportError as exc:
        warnings.warn(
            f"pyqcore's compiled serializer did not import ({exc}); falling back to the much "
            "slower pure-Python codec. Reinstall pyqcore, or set PYQCORE_PUREPYTHON=1 to "
            "choose the pure-Python codec on purpose.",
            RuntimeWarning,
            stacklevel=2,
        )
        return "python", _pure.dumps, _pure.loads
    return "cython", _cmsgpack.dumps, _cmsgpack.loads


IMPLEMENTATION: Literal["cython", "python"]
dumps: _Dumps
loads: _Loads
IMPLEMENTATION, dumps, loads = _select_msgpack()

MSGPACK: Serializer = _Codec("msgpack", dumps, loads)
"""The default serializer: the MessagePack codec above, compact and fast."""

_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _json_dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Lossy: tuples come back as lists, non-str dict keys as str."""
    try:
        return _JSON_ENCODER.encode(obj).encode()
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise SerializationError(f"cannot serialize as JSON: {exc}") from None


def _json_loads(data: bytes | bytearray | memoryview) -> Any:
    """Strict UTF-8, then stdlib JSON; any failure is a DeserializationError."""
    try:
        return json.loads(str(data, "utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DeserializationError(f"invalid JSON record: {exc}") from None


JSON: Serializer = _Codec("json", _json_dumps, _json_loads)
"""Human-readable records (``redis-cli HGET`` shows them as text), slower and bigger."""
