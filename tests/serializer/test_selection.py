"""Which codec ``pyqcore.serializer`` picks: compiled by default, pure Python on request, and a
visible RuntimeWarning (not silence) when the compiled module is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyqcore
from pyqcore import serializer
from pyqcore.serializer import MAX_DEPTH, _pure
from tests.serializer.support import CYTHON, needs_cython

PROBE = """
import json, sys, warnings
if sys.argv[1] == "block":
    sys.modules["pyqcore.serializer._cmsgpack"] = None  # makes its import fail
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import pyqcore.serializer as s
print(json.dumps([s.IMPLEMENTATION, [w.category.__name__ for w in caught]]))
"""


def probe(env_value: str | None, *, block: bool = False) -> list[object]:
    """Import pyqcore.serializer in a fresh interpreter; report its choice and warnings."""
    env = {k: v for k, v in os.environ.items() if k != "PYQCORE_PUREPYTHON"}
    env["PYTHONPATH"] = str(Path(pyqcore.__file__).parent.parent)
    if env_value is not None:
        env["PYQCORE_PUREPYTHON"] = env_value
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "block" if block else "keep"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    reported: list[object] = json.loads(result.stdout)
    return reported


def test_this_process_uses_the_expected_codec() -> None:
    forced = os.environ.get("PYQCORE_PUREPYTHON", "") not in ("", "0")
    expected = "cython" if CYTHON is not None and not forced else "python"
    assert expected == serializer.IMPLEMENTATION
    if expected == "python":
        assert (serializer.dumps, serializer.loads) == (_pure.dumps, _pure.loads)


@pytest.mark.parametrize("value", ["1", "true"])
def test_env_var_forces_pure_python_without_warning(value: str) -> None:
    assert probe(value) == ["python", []]


def test_missing_compiled_module_falls_back_with_a_runtime_warning() -> None:
    assert probe(None, block=True) == ["python", ["RuntimeWarning"]]
    assert probe("1", block=True) == ["python", []]


@needs_cython
@pytest.mark.parametrize("value", [None, "", "0"])
def test_compiled_codec_is_the_default(value: str | None) -> None:
    assert probe(value) == ["cython", []]


@needs_cython
def test_both_codecs_share_the_depth_bound() -> None:
    assert CYTHON is not None
    assert CYTHON.MAX_DEPTH == _pure.MAX_DEPTH == MAX_DEPTH
