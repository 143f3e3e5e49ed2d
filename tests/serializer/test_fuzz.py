"""Bounded fuzzing of the decoder with random bytes and mutated valid records: every input must
give a value or DeserializationError (never a crash, hang, MemoryError or RecursionError).

``PYQCORE_FUZZ_SECONDS`` sets the time budget (default 3; ``make fuzz`` runs longer) and
``PYQCORE_FUZZ_SEED`` replays a run; a failure message carries the seed and the input.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from pyqcore.errors import DeserializationError
from pyqcore.serializer import _pure, dumps, loads
from tests.serializer.support import CYTHON, INT_EDGES, canon

FUZZ_SECONDS = float(os.environ.get("PYQCORE_FUZZ_SECONDS", "3"))
SEED = int(os.environ.get("PYQCORE_FUZZ_SEED", str(random.randrange(2**32))))

# Type bytes and length fields that stress the parser's checks.
INTERESTING = [
    0x00,
    0x7F,
    0x80,
    0x8F,
    0x90,
    0x9F,
    0xA0,
    0xBF,
    0xC0,
    0xC1,
    0xC4,
    0xC6,
    0xC7,
    0xC9,
    0xCA,
    0xCB,
    0xCF,
    0xD3,
    0xD4,
    0xD8,
    0xD9,
    0xDB,
    0xDC,
    0xDD,
    0xDE,
    0xDF,
    0xE0,
    0xFF,
]

Decoder = Callable[[bytes], Any]


def seed_records(rng: random.Random) -> list[bytes]:
    """Valid encodings covering every type and header size, to mutate."""
    values: list[Any] = [
        None,
        True,
        False,
        1.5,
        "",
        "x" * 40,
        "é" * 200,
        b"\x00" * 300,
        "y" * 70_000,
        [],
        {},
        list(range(20)),
        {str(i): i for i in range(20)},
        INT_EDGES,
        {"user_id": 123456, "email": "user@example.com", "vars": {"tags": ["a", "b"], "n": 0.5}},
        [[[[{"deep": [[[[None]]]]}]]]],
        {b"k": [1, {"m": b"v"}], 2: (3.0, None)},
    ]
    values += [[rng.choice(INT_EDGES), "z" * rng.randrange(300)] for _ in range(5)]
    return [dumps(value) for value in values]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits: bit flips, interesting bytes, truncation, insertion, deletion,
    duplication of a slice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(buf) + 1)
        edit = rng.randrange(6)
        if edit == 0 and pos < len(buf):
            buf[pos] ^= 1 << rng.randrange(8)
        elif edit == 1 and pos < len(buf):
            buf[pos] = rng.choice(INTERESTING)
        elif edit == 2:
            del buf[pos:]
        elif edit == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif edit == 4:
            del buf[pos : pos + rng.randint(1, 8)]
        else:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 16)]
    return bytes(buf)


def fuzz_inputs(rng: random.Random, records: list[bytes]) -> Iterator[bytes]:
    while True:
        kind = rng.randrange(4)
        if kind == 0:
            yield rng.randbytes(rng.randrange(64))
        elif kind == 1:  # random type bytes with room for small claimed lengths
            yield bytes(rng.choice(INTERESTING) for _ in range(rng.randrange(1, 24)))
        else:
            yield mutate(rng, rng.choice(records))


def decoders() -> list[Decoder]:
    """The selected codec, plus the other implementation when both are available."""
    if CYTHON is None:
        return [loads]
    return [loads, _pure.loads if loads is CYTHON.loads else CYTHON.loads]


def check(data: bytes, decode: list[Decoder]) -> None:
    """Every decoder agrees on the outcome; a decoded value is also what msgpack-python reads
    and encodes back to a value that decodes the same."""
    outcomes = []
    for one in decode:
        try:
            outcomes.append(("value", canon(one(data))))
        except DeserializationError as exc:
            outcomes.append(("error", str(exc)))
    assert all(o == outcomes[0] for o in outcomes), outcomes
    if outcomes[0][0] == "value":
        value = loads(data)
        # use_list=False: arrays as tuples, so an array map key is hashable there too
        reference = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=False)
        assert canon(reference) == canon(value)
        assert canon(loads(dumps(value))) == canon(value)


def test_decoder_survives_random_and_mutated_input() -> None:
    rng = random.Random(SEED)
    records, decode = seed_records(rng), decoders()
    deadline = time.monotonic() + FUZZ_SECONDS
    count = 0
    for data in fuzz_inputs(rng, records):
        try:
            check(data, decode)
        except Exception as exc:
            raise AssertionError(
                f"PYQCORE_FUZZ_SEED={SEED}, case {count}, input {data.hex()}: {exc!r}"
            ) from exc
        count += 1
        if count % 64 == 0 and time.monotonic() > deadline:
            break
    assert count > 0
