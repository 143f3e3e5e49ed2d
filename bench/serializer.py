"""Serializer benchmark: pyqcore's codecs against msgpack-python, stdlib json and pickle.

Usage: ``python bench/serializer.py [--quick]``. Times encode, decode and encode+decode of three
payloads (best of N timeit repeats, implementations interleaved so load spikes hit them all)
and prints a Markdown table plus the two targets for the compiled codec.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import platform
import random
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from pyqcore.serializer import _pure

REFERENCE_JOB = {
    "user_id": 123456,
    "email": "user123456@example.com",
    "template": "welcome",
    "vars": {"name": "User 123456", "plan": "pro", "tags": ["a", "b", "c"], "score": 0.75},
}
OPERATIONS = ("encode", "decode", "enc+dec")
BASELINE = "msgpack-python"


@dataclass(frozen=True)
class Codec:
    name: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


def large_payload() -> dict[str, Any]:
    """A deterministic ~10 KB record: nested maps and lists of every common type."""
    rng = random.Random(42)
    items = [
        {
            "id": 1_000_000 + i,
            "sku": f"SKU-{rng.randrange(10**6):06d}",
            "title": f"Produit n°{i} — édition spéciale",
            "price": round(rng.uniform(1, 500), 2),
            "qty": rng.randrange(1, 20),
            "in_stock": rng.random() < 0.8,
            "discount": None if i % 3 else rng.random(),
            "tags": [f"tag{rng.randrange(50)}" for _ in range(rng.randrange(1, 5))],
            "dims": {"w": rng.randrange(1000), "h": rng.randrange(1000), "unit": "mm"},
        }
        for i in range(64)
    ]
    return {"order_id": 987654321, "customer": REFERENCE_JOB, "items": items, "total": 12345.67}


def codecs() -> list[Codec]:
    """Every implementation that is available, baseline included."""
    found = []
    try:
        from pyqcore.serializer import _cmsgpack  # noqa: PLC0415 (optional)
    except ImportError:
        print("note: the compiled codec is not built; pyqcore-cython is left out\n")
    else:
        found.append(Codec("pyqcore-cython", _cmsgpack.dumps, _cmsgpack.loads))
    found += [
        Codec("pyqcore-python", _pure.dumps, _pure.loads),
        Codec(BASELINE, msgpack.packb, msgpack.unpackb),  # defaults: use_bin_type, raw=False
        Codec("json", lambda obj: json.dumps(obj).encode(), json.loads),
        Codec("pickle-5", functools.partial(pickle.dumps, protocol=5), pickle.loads),
    ]
    return found


def timer(codec: Codec, operation: str, payload: object) -> timeit.Timer:
    encoded = codec.dumps(payload)
    assert codec.loads(encoded) == payload, codec.name
    statement = {"encode": "dumps(payload)", "decode": "loads(encoded)"}.get(
        operation, "loads(dumps(payload))"
    )
    names = {"dumps": codec.dumps, "loads": codec.loads, "payload": payload, "encoded": encoded}
    return timeit.Timer(statement, globals=names)


def calibrate(t: timeit.Timer, seconds: float) -> int:
    """Loops per repeat so that one repeat takes about ``seconds``."""
    number = 1
    while (elapsed := t.timeit(number)) < seconds / 4:
        number *= 4
    return max(1, int(number * seconds / elapsed))


def measure(
    all_codecs: list[Codec], payload: object, repeats: int, seconds: float
) -> dict[tuple[str, str], float]:
    """Best ns/op for each (codec, operation); repeats interleave the codecs."""
    best: dict[tuple[str, str], float] = {}
    for operation in OPERATIONS:
        timers = {c.name: timer(c, operation, payload) for c in all_codecs}
        numbers = {name: calibrate(t, seconds) for name, t in timers.items()}
        for _ in range(repeats):
            for name, t in timers.items():
                ns = t.timeit(numbers[name]) / numbers[name] * 1e9
                best[name, operation] = min(ns, best.get((name, operation), ns))
    return best


def table(payloads: dict[str, object], all_codecs: list[Codec], args: argparse.Namespace) -> str:
    header = "| payload | implementation | bytes |" + "".join(
        f" {op} ns/op | vs msgpack |" for op in OPERATIONS
    )
    lines = [header, "|" + "---|" * (3 + 2 * len(OPERATIONS))]
    results = {}
    for payload_name, payload in payloads.items():
        best = results[payload_name] = measure(all_codecs, payload, args.repeats, args.seconds)
        for codec in all_codecs:
            cells = [payload_name, codec.name, str(len(codec.dumps(payload)))]
            for op in OPERATIONS:
                ns = best[codec.name, op]
                cells += [f"{ns:,.0f}", f"{best[BASELINE, op] / ns:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + targets(results["reference job"])


def targets(best: dict[tuple[str, str], float]) -> str:
    """The compiled codec's goals on the reference job's encode+decode."""
    if ("pyqcore-cython", "enc+dec") not in best:
        return "Targets: not measured (the compiled codec is not built)."
    cython = best["pyqcore-cython", "enc+dec"]
    vs_msgpack = best[BASELINE, "enc+dec"] / cython
    vs_python = best["pyqcore-python", "enc+dec"] / cython
    return (
        f"Targets (reference job, encode+decode): cython vs msgpack-python {vs_msgpack:.2f}x "
        f"(goal ≥ 1.0x: {'met' if vs_msgpack >= 1.0 else 'MISSED'}); "
        f"cython vs pyqcore-python {vs_python:.1f}x "
        f"(goal ≥ 5x: {'met' if vs_python >= 5.0 else 'MISSED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short, noisier run (~10 s)")
    args = parser.parse_args()
    args.repeats, args.seconds = (3, 0.01) if args.quick else (7, 0.05)
    payloads = {"reference job": REFERENCE_JOB, "small": {"id": 1}, "~10 KB": large_payload()}
    print(
        f"Python {platform.python_version()} ({platform.machine()}), "
        f"msgpack {'.'.join(map(str, msgpack.version))}, best of {args.repeats} repeats\n"
    )
    print(table(payloads, codecs(), args))


if __name__ == "__main__":
    main()
