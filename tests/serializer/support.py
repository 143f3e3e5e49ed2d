"""Shared test helpers: hypothesis strategies for encodable values, and a strict comparison."""

from __future__ import annotations

import importlib
import struct
from types import ModuleType
from typing import Any

import pytest
from hypothesis import strategies as st


def compiled_codec() -> ModuleType | None:
    """The compiled codec module, or None when it is not built."""
    try:
        return importlib.import_module("pyqcore.serializer._cmsgpack")
    except ImportError:
        return None


CYTHON = compiled_codec()
needs_cython = pytest.mark.skipif(CYTHON is None, reason="the compiled codec is not built")

INT_MIN, UINT_MAX = -(2**63), 2**64 - 1

# Every edge of every MessagePack integer size class: the last value in a class and the first
# of the next (fixint, uint8/16/32/64 above zero; negative fixint, int8/16/32/64 below).
_UPPER = (2**7, 2**8, 2**16, 2**32, 2**63, 2**64)
_LOWER = (2**5, 2**7, 2**15, 2**31, 2**63)
INT_EDGES = [
    0,
    -1,
    *(limit - 1 for limit in _UPPER),
    *(limit for limit in _UPPER if limit <= UINT_MAX),
    *(-limit for limit in _LOWER),
    *(-limit - 1 for limit in _LOWER if limit < 2**63),
]

ints = st.integers(INT_MIN, UINT_MAX) | st.sampled_from(INT_EDGES)
scalars = st.none() | st.booleans() | ints | st.floats() | st.text() | st.binary()


def values(keys: st.SearchStrategy[Any] = scalars) -> st.SearchStrategy[Any]:
    """Nested encodable values: lists, tuples and dicts (with ``keys``) of scalars."""
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=20)
            | st.lists(children, max_size=20).map(tuple)
            | st.dictionaries(keys, children, max_size=20)
        ),
        max_leaves=60,
    )


def canon(value: object) -> object:
    """A form of ``value`` that compares equal exactly when a decoder should return it: types
    are kept apart (1, 1.0, True), floats compare by bits (nan, -0.0), dicts by ordered items,
    and tuples/bytearrays/memoryviews count as the lists/bytes they decode to."""
    if isinstance(value, (list, tuple)):
        return ("array", [canon(item) for item in value])
    if isinstance(value, dict):
        return ("map", [(canon(k), canon(v)) for k, v in value.items()])
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bin", bytes(value))
    kind = next(kind for kind in (bool, int, str, type(None)) if isinstance(value, kind))
    return (kind.__name__, value)
