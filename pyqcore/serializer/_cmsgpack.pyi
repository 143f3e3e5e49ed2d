"""Type stub for the compiled codec built from ext/_cmsgpack.pyx (same API as _pure)."""

from typing import Any

MAX_DEPTH: int

def dumps(obj: object) -> bytes:
    """Encode ``obj`` as MessagePack; SerializationError names the offending value's path."""

def loads(data: bytes | bytearray | memoryview) -> Any:
    """Decode one MessagePack object that must span all of ``data``."""
