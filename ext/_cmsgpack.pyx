# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled MessagePack codec, built by setup.py as ``pyqcore.serializer._cmsgpack``.

Same format, errors and limits as the pure-Python reference in ``_pure.py``: output is
byte-identical to ``msgpack.packb(obj, use_bin_type=True)``, and decoding treats its input as
untrusted (every length is checked against the bytes that remain before anything is read or
allocated, and nesting is bounded by MAX_DEPTH).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_SetItem
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from pyqcore.errors import DeserializationError, SerializationError
from pyqcore.serializer._pure import describe_failure

cdef extern from "Python.h":
    unsigned long long PyLong_AsUnsignedLongLong(object o)  # the caller checks for errors
    bint PyUnicode_IS_COMPACT_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

cdef enum:
    DEPTH_LIMIT = 256  # MAX_DEPTH, as a C constant
    INLINE_CAPACITY = 512  # most records encode without touching the heap
    KEY_CACHE_SIZE = 1024  # slots of the map-key cache; a power of two

MAX_DEPTH = DEPTH_LIMIT
"""Most containers (arrays and maps) that may nest inside one another, encoding or decoding."""

cdef uint64_t MAX_LENGTH = 0xFFFFFFFF


class _Unencodable(Exception):
    """Internal signal that the value cannot be encoded; dumps() then explains where and why."""


# --------------------------------------------------------------------------- encoding

cdef struct Writer:
    char* data  # inline_data until the first growth, then a PyMem block
    Py_ssize_t length
    Py_ssize_t capacity
    char inline_data[INLINE_CAPACITY]


def dumps(obj):
    """Encode ``obj`` as MessagePack; SerializationError names the offending value's path."""
    cdef Writer w
    w.data = w.inline_data
    w.length = 0
    w.capacity = INLINE_CAPACITY
    try:
        _pack(&w, obj, 0)
        return PyBytes_FromStringAndSize(w.data, w.length)
    except (_Unencodable, UnicodeEncodeError):
        raise SerializationError(describe_failure(obj)) from None
    finally:
        if w.data != w.inline_data:
            PyMem_Free(w.data)


cdef int _grow(Writer* w, Py_ssize_t extra) except -1:
    cdef Py_ssize_t capacity = w.capacity * 2
    cdef char* data
    if capacity < w.length + extra:
        capacity = w.length + extra
    if w.data == w.inline_data:
        data = <char*>PyMem_Malloc(capacity)
        if data != NULL:
            memcpy(data, w.data, w.length)
    else:
        data = <char*>PyMem_Realloc(w.data, capacity)
    if data == NULL:
        raise MemoryError()
    w.data = data
    w.capacity = capacity
    return 0


cdef inline int _reserve(Writer* w, Py_ssize_t extra) except -1:
    """Make room for ``extra`` more bytes, so the _put* calls that follow need no checks."""
    if w.length + extra > w.capacity:
        _grow(w, extra)
    return 0


cdef inline void _put(Writer* w, uint8_t byte) noexcept:
    w.data[w.length] = <char>byte
    w.length += 1


cdef inline void _put_be(Writer* w, uint64_t value, int size) noexcept:
    """Append the low ``size`` bytes of ``value``, big-endian."""
    cdef int i
    for i in range(size):
        w.data[w.length + i] = <char>(value >> (8 * (size - 1 - i)))
    w.length += size


cdef inline void _put_head(Writer* w, uint8_t code, uint64_t value, int size) noexcept:
    _put(w, code)
    _put_be(w, value, size)


cdef int _pack(Writer* w, object o, int depth) except -1:
    """Dispatch on the exact type first (the common case), subclasses last."""
    cdef type t = type(o)
    if t is str:
        return _pack_str(w, o)
    if t is int:
        return _pack_int(w, o)
    if t is dict:
        return _pack_dict(w, o, depth)
    if t is list:
        return _pack_array(w, <list>o, depth)
    if t is float:
        return _pack_float(w, PyFloat_AS_DOUBLE(o))
    if o is None:
        return _pack_byte(w, 0xC0)
    if t is bool:
        return _pack_byte(w, 0xC3 if o is True else 0xC2)
    if t is tuple:
        return _pack_array(w, <tuple>o, depth)
    if t is bytes:
        return _pack_bin(w, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o))
    if t is bytearray:
        return _pack_bin(w, PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o))
    return _pack_other(w, o, depth)


cdef int _pack_other(Writer* w, object o, int depth) except -1:
    """Subclasses of the supported types, packed as their base type; anything else fails."""
    if isinstance(o, int):
        return _pack_int(w, o)
    if isinstance(o, float):
        return _pack_float(w, PyFloat_AS_DOUBLE(o))
    if isinstance(o, str):
        return _pack_str(w, o)
    if isinstance(o, (bytes, bytearray, memoryview)):
        return _pack_buffer(w, o)
    if isinstance(o, (list, tuple)):
        return _pack_array(w, list(o), depth)
    if isinstance(o, dict):
        return _pack_dict(w, dict(o.items()), depth)
    raise _Unencodable()


cdef int _pack_byte(Writer* w, uint8_t byte) except -1:
    _reserve(w, 1)
    _put(w, byte)
    return 0


cdef int _pack_int(Writer* w, object o) except -1:
    """Smallest encoding, as msgpack-python picks it: unsigned forms for every n >= 0."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(o, &overflow)
    cdef unsigned long long u
    if overflow == 0:
        if v >= 0:
            return _pack_uint(w, <uint64_t>v)
        _reserve(w, 9)
        if v >= -32:
            _put(w, <uint8_t>v)
        elif v >= -0x80:
            _put_head(w, 0xD0, <uint64_t>v, 1)
        elif v >= -0x8000:
            _put_head(w, 0xD1, <uint64_t>v, 2)
        elif v >= -0x80000000LL:
            _put_head(w, 0xD2, <uint64_t>v, 4)
        else:
            _put_head(w, 0xD3, <uint64_t>v, 8)
        return 0
    if overflow > 0:
        u = PyLong_AsUnsignedLongLong(o)
        if not (u == <unsigned long long>-1 and PyErr_Occurred()):
            return _pack_uint(w, u)
        PyErr_Clear()  # OverflowError: above 2**64-1
    raise _Unencodable()


cdef int _pack_uint(Writer* w, uint64_t u) except -1:
    _reserve(w, 9)
    if u < 0x80:
        _put(w, <uint8_t>u)
    elif u <= 0xFF:
        _put_head(w, 0xCC, u, 1)
    elif u <= 0xFFFF:
        _put_head(w, 0xCD, u, 2)
    elif u <= 0xFFFFFFFFULL:
        _put_head(w, 0xCE, u, 4)
    else:
        _put_head(w, 0xCF, u, 8)
    return 0


cdef int _pack_float(Writer* w, double value) except -1:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    _reserve(w, 9)
    _put_head(w, 0xCB, bits, 8)
    return 0


cdef int _pack_str(Writer* w, object o) except -1:
    """ASCII strings are copied straight from the str object; others are UTF-8 encoded
    (surrogates raise UnicodeEncodeError, which dumps() turns into SerializationError)."""
    if PyUnicode_IS_COMPACT_ASCII(o):
        return _write_str(w, <const char*>PyUnicode_DATA(o), PyUnicode_GET_LENGTH(o))
    cdef bytes encoded = PyUnicode_AsUTF8String(o)
    return _write_str(w, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded))


cdef int _write_str(Writer* w, const char* data, Py_ssize_t n) except -1:
    if <uint64_t>n > MAX_LENGTH:
        raise _Unencodable()
    _reserve(w, 5 + n)
    if n < 32:
        _put(w, 0xA0 | <uint8_t>n)
    elif n <= 0xFF:
        _put_head(w, 0xD9, n, 1)
    elif n <= 0xFFFF:
        _put_head(w, 0xDA, n, 2)
    else:
        _put_head(w, 0xDB, n, 4)
    memcpy(w.data + w.length, data, n)
    w.length += n
    return 0


cdef int _pack_bin(Writer* w, const char* data, Py_ssize_t n) except -1:
    if <uint64_t>n > MAX_LENGTH:
        raise _Unencodable()
    _reserve(w, 5 + n)
    if n <= 0xFF:
        _put_head(w, 0xC4, n, 1)
    elif n <= 0xFFFF:
        _put_head(w, 0xC5, n, 2)
    else:
        _put_head(w, 0xC6, n, 4)
    memcpy(w.data + w.length, data, n)
    w.length += n
    return 0


cdef int _pack_buffer(Writer* w, object o) except -1:
    """Any bytes-like object as bin: its bytes in C order, whatever its format or layout."""
    cdef Py_buffer view
    if isinstance(o, memoryview) and not o.c_contiguous:
        o = o.tobytes()
    PyObject_GetBuffer(o, &view, PyBUF_SIMPLE)
    try:
        return _pack_bin(w, <const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef inline int _container_head(Writer* w, Py_ssize_t n, uint8_t fix, uint8_t code16,
                                uint8_t code32) except -1:
    """The header of an array or map of n items: fix type, 16-bit or 32-bit length."""
    _reserve(w, 5)
    if n < 16:
        _put(w, fix | <uint8_t>n)
    elif n <= 0xFFFF:
        _put_head(w, code16, n, 2)
    elif <uint64_t>n <= MAX_LENGTH:
        _put_head(w, code32, n, 4)
    else:
        raise _Unencodable()
    return 0


ctypedef fused sequence:
    list
    tuple


cdef int _pack_array(Writer* w, sequence o, int depth) except -1:
    if depth >= DEPTH_LIMIT:
        raise _Unencodable()
    cdef Py_ssize_t n = len(o)
    _container_head(w, n, 0x90, 0xDC, 0xDD)
    for item in o:
        _pack(w, item, depth + 1)
    if len(o) != n:  # a subclass's items() or a finalizer resized it: the header is wrong
        raise RuntimeError("list changed size during serialization")
    return 0


cdef int _pack_dict(Writer* w, dict o, int depth) except -1:
    if depth >= DEPTH_LIMIT:
        raise _Unencodable()
    cdef Py_ssize_t n = len(o)
    _container_head(w, n, 0x80, 0xDE, 0xDF)
    for key, value in o.items():
        _pack(w, key, depth + 1)
        _pack(w, value, depth + 1)
    return 0


# --------------------------------------------------------------------------- decoding

cdef struct Reader:
    const unsigned char* base  # offsets in error messages are relative to this
    const unsigned char* pos  # next unread byte
    const unsigned char* end


def loads(data):
    """Decode one MessagePack object that must span all of ``data``."""
    cdef Py_buffer view
    if type(data) is bytes:
        return _loads_from(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DeserializationError(
            f"expected bytes, bytearray or memoryview, got {type(data).__name__}"
        )
    if isinstance(data, memoryview) and not data.c_contiguous:
        data = data.tobytes()
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)  # the export also pins a bytearray's size
    try:
        return _loads_from(<const unsigned char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef object _loads_from(const unsigned char* data, Py_ssize_t n):
    cdef Reader r
    r.base = data
    r.pos = data
    r.end = data + n
    obj = _unpack(&r, 0)
    if r.pos != r.end:
        raise DeserializationError(
            f"{r.end - r.pos} trailing bytes after the object at offset {r.pos - r.base}"
        )
    return obj


cdef inline uint64_t _load_be(const unsigned char* p, int size) noexcept:
    cdef uint64_t value = 0
    cdef int i
    for i in range(size):
        value = (value << 8) | p[i]
    return value


cdef object _truncated(Reader* r, const unsigned char* at):
    return DeserializationError(
        f"truncated input: object at offset {at - r.base} runs past the end"
    )


cdef inline const unsigned char* _field(Reader* r, const unsigned char* at, int size) except NULL:
    """The ``size`` bytes after the type byte at ``at``; moves past them."""
    if r.end - at - 1 < size:
        raise _truncated(r, at)
    r.pos = at + 1 + size
    return at + 1


cdef object _unpack(Reader* r, int depth):
    """Decode the object at r.pos and move past it."""
    cdef const unsigned char* at = r.pos
    if at >= r.end:
        raise _truncated(r, at)
    cdef uint8_t code = at[0]
    r.pos = at + 1
    if code < 0x80:
        return <long>code
    if code >= 0xE0:
        return <long>code - 0x100
    if code >= 0xC0:
        return _unpack_typed(r, at, code, depth)
    if code >= 0xA0:
        return _read_str(r, at, code & 0x1F)
    if depth >= DEPTH_LIMIT:
        raise _too_deep(r, at)
    if code >= 0x90:
        return _read_array(r, at, code & 0x0F, depth)
    return _read_map(r, at, code & 0x0F, depth)


cdef object _unpack_typed(Reader* r, const unsigned char* at, uint8_t code, int depth):
    """Type bytes 0xc0..0xdf: everything but the fixint/fixstr/fixarray/fixmap ranges."""
    cdef uint32_t bits32
    cdef uint64_t bits64
    cdef float f
    cdef double d
    if code == 0xC0:
        return None
    if code == 0xC2:
        return False
    if code == 0xC3:
        return True
    if code == 0xC4:
        return _read_bin(r, at, _load_be(_field(r, at, 1), 1))
    if code == 0xC5:
        return _read_bin(r, at, _load_be(_field(r, at, 2), 2))
    if code == 0xC6:
        return _read_bin(r, at, _load_be(_field(r, at, 4), 4))
    if code == 0xCA:
        bits32 = <uint32_t>_load_be(_field(r, at, 4), 4)
        memcpy(&f, &bits32, 4)
        return <double>f
    if code == 0xCB:
        bits64 = _load_be(_field(r, at, 8), 8)
        memcpy(&d, &bits64, 8)
        return d
    if code == 0xCC:
        return <long>_load_be(_field(r, at, 1), 1)
    if code == 0xCD:
        return <long>_load_be(_field(r, at, 2), 2)
    if code == 0xCE:
        return <unsigned long long>_load_be(_field(r, at, 4), 4)
    if code == 0xCF:
        return <unsigned long long>_load_be(_field(r, at, 8), 8)
    if code == 0xD0:
        return <long><int8_t>_load_be(_field(r, at, 1), 1)
    if code == 0xD1:
        return <long><int16_t>_load_be(_field(r, at, 2), 2)
    if code == 0xD2:
        return <long long><int32_t>_load_be(_field(r, at, 4), 4)
    if code == 0xD3:
        return <long long><int64_t>_load_be(_field(r, at, 8), 8)
    if code == 0xD9:
        return _read_str(r, at, _load_be(_field(r, at, 1), 1))
    if code == 0xDA:
        return _read_str(r, at, _load_be(_field(r, at, 2), 2))
    if code == 0xDB:
        return _read_str(r, at, _load_be(_field(r, at, 4), 4))
    if code == 0xC1:
        raise DeserializationError(f"invalid type byte 0xc1 at offset {at - r.base}")
    if code >= 0xDC and depth >= DEPTH_LIMIT:
        raise _too_deep(r, at)
    if code == 0xDC:
        return _read_array(r, at, _load_be(_field(r, at, 2), 2), depth)
    if code == 0xDD:
        return _read_array(r, at, _load_be(_field(r, at, 4), 4), depth)
    if code == 0xDE:
        return _read_map(r, at, _load_be(_field(r, at, 2), 2), depth)
    if code == 0xDF:
        return _read_map(r, at, _load_be(_field(r, at, 4), 4), depth)
    raise DeserializationError(f"unsupported ext type 0x{code:02x} at offset {at - r.base}")


cdef object _too_deep(Reader* r, const unsigned char* at):
    return DeserializationError(f"nesting deeper than MAX_DEPTH={MAX_DEPTH} at offset {at - r.base}")


cdef inline bint _exceeds(Reader* r, uint64_t n) noexcept:
    """Whether ``n`` bytes are more than remain after r.pos."""
    return n > <uint64_t>(r.end - r.pos)


cdef object _read_str(Reader* r, const unsigned char* at, uint64_t n):
    if _exceeds(r, n):
        raise _truncated(r, at)
    cdef const char* start = <const char*>r.pos
    r.pos += n
    try:
        return PyUnicode_DecodeUTF8(start, <Py_ssize_t>n, NULL)
    except UnicodeDecodeError:
        raise DeserializationError(f"invalid UTF-8 in str at offset {at - r.base}") from None


cdef object _read_bin(Reader* r, const unsigned char* at, uint64_t n):
    if _exceeds(r, n):
        raise _truncated(r, at)
    cdef const char* start = <const char*>r.pos
    r.pos += n
    return PyBytes_FromStringAndSize(start, <Py_ssize_t>n)


cdef object _read_array(Reader* r, const unsigned char* at, uint64_t n, int depth):
    if _exceeds(r, n):  # every element takes at least one byte
        raise _truncated(r, at)
    cdef list items = PyList_New(<Py_ssize_t>n)
    cdef Py_ssize_t i
    for i in range(<Py_ssize_t>n):
        item = _unpack(r, depth + 1)
        Py_INCREF(item)  # PyList_SET_ITEM steals a reference
        PyList_SET_ITEM(items, i, item)
    return items


cdef object _read_map(Reader* r, const unsigned char* at, uint64_t n, int depth):
    if _exceeds(r, 2 * n):  # every key and every value takes at least one byte
        raise _truncated(r, at)
    cdef dict result = {}
    cdef uint64_t i
    for i in range(n):
        key = _read_key(r, depth + 1)
        PyDict_SetItem(result, key, _unpack(r, depth + 1))
    return result


# Map keys repeat from record to record, so short ASCII keys (fixstr, up to 31 bytes) are kept
# in a direct-mapped cache: a hit skips both the str allocation and, as the cached str keeps its
# hash, the hashing in PyDict_SetItem. Slots hold strong references to compact-ASCII str
# objects only, whose data is their UTF-8 encoding, so a byte comparison proves a hit.
cdef PyObject* _key_cache[KEY_CACHE_SIZE]


cdef object _read_key(Reader* r, int depth):
    cdef const unsigned char* at = r.pos
    if at < r.end and (at[0] & 0xE0) == 0xA0:
        return _read_fixstr_key(r, at, at[0] & 0x1F)
    key = _unpack(r, depth)
    if type(key) is list:
        return _array_key(key, at - r.base)
    if type(key) is dict:
        raise DeserializationError(f"unhashable map key (a map) at offset {at - r.base}")
    return key


cdef tuple _array_key(list items, Py_ssize_t pos):
    """An array used as a map key, as the tuple it was encoded from (inner arrays too): the
    encoder takes tuple keys, so the decoder gives them back."""
    key = []
    for item in items:
        if type(item) is list:
            item = _array_key(item, pos)
        elif type(item) is dict:
            raise DeserializationError(f"unhashable map key (a map in an array) at offset {pos}")
        key.append(item)
    return tuple(key)


cdef object _read_fixstr_key(Reader* r, const unsigned char* at, Py_ssize_t n):
    cdef const unsigned char* data = at + 1
    cdef uint32_t h = <uint32_t>n
    cdef Py_ssize_t i
    if r.end - data < n:
        raise _truncated(r, at)
    for i in range(n):
        h = (h ^ data[i]) * 16777619u  # FNV-1a
    cdef PyObject** slot = &_key_cache[h & (KEY_CACHE_SIZE - 1)]
    if slot[0] != NULL and PyUnicode_GET_LENGTH(<object>slot[0]) == n:
        if memcmp(PyUnicode_DATA(<object>slot[0]), data, n) == 0:
            r.pos = data + n
            return <object>slot[0]
    r.pos = at + 1
    key = _read_str(r, at, n)
    if PyUnicode_IS_COMPACT_ASCII(key):
        Py_INCREF(key)
        Py_XDECREF(slot[0])
        slot[0] = <PyObject*>key
    return key
