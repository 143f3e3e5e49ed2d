"""The Lua scripts: loaded from the package's ``lua/`` files, with the contract in each header.

Each script's KEYS are read from its header (``KEYS`` section: index, part name, type), so the
Lua file is the single source of truth for which keys a call passes and in which order.
Shared Lua lives in ``lua/includes/`` and is expanded between ``-- @include NAME`` and
``-- @end NAME`` markers in each script (``make lua``), so every file runs as-is under
``redis-cli --eval``. A script carries only the includes it uses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+; only the annotation needs it
    from importlib.resources.abc import Traversable

_HEADER = re.compile(r"\A--\[\[\n(?P<body>.*?)\n\]\]\n", re.S)
_KEY_LINE = re.compile(r"^\s+(\d+)\s+(\w+)\s+(LIST|ZSET|HASH|STRING|SET)\b")
_INCLUDE = re.compile(r"^-- @include (\w+)\n.*?^-- @end \1\n", re.S | re.M)


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its source, SHA1 (for EVALSHA), documented header and key parts."""

    name: str
    source: str
    sha: str
    header: str
    key_parts: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, source: str) -> Script:
        """Build a Script from a ``.lua`` file's text, reading KEYS from its header."""
        match = _HEADER.match(source)
        if not match:
            raise ValueError(f"lua/{name}.lua does not start with a --[[ ... ]] header")
        header = match.group("body")
        parts: list[str] = []
        in_keys = False
        for line in header.splitlines():
            if line.strip() and not line.startswith(" "):
                in_keys = line.strip() == "KEYS"
                continue
            key = _KEY_LINE.match(line)
            if in_keys and key:
                if int(key.group(1)) != len(parts) + 1:
                    raise ValueError(f"lua/{name}.lua: KEYS are not numbered 1, 2, ...")
                parts.append(key.group(2))
        sha = hashlib.sha1(source.encode()).hexdigest()
        return cls(name, source, sha, header, tuple(parts))


def generated_line(name: str) -> str:
    """The comment that opens every include block in a script."""
    return (f"-- generated from lua/includes/{name}.lua by `make lua`: edit that file, "
            "not this block")


def expand_includes(source: str, includes: Mapping[str, str]) -> str:
    """Refill every ``-- @include NAME`` ... ``-- @end NAME`` block with includes[NAME], under
    a line saying where it comes from."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        body = includes[name].rstrip("\n")
        return f"-- @include {name}\n{generated_line(name)}\n{body}\n-- @end {name}\n"

    return _INCLUDE.sub(fill, source)


def read_includes(lua_dir: Path) -> dict[str, str]:
    """The include files of ``lua_dir``, by name (file name without ``.lua``)."""
    return {p.stem: p.read_text() for p in sorted((lua_dir / "includes").glob("*.lua"))}


def sync_includes(lua_dir: Path) -> list[Path]:
    """Rewrite the scripts in ``lua_dir`` whose include blocks are stale; return those changed."""
    includes = read_includes(lua_dir)
    changed = []
    for path in sorted(lua_dir.glob("*.lua")):
        text = path.read_text()
        expanded = expand_includes(text, includes)
        if expanded != text:
            path.write_text(expanded)
            changed.append(path)
    return changed


def lua_dir() -> Traversable:
    """Where the scripts are: package data ``pyqcore/lua/`` in an installed wheel, or the
    ``lua/`` folder beside the package in a source checkout."""
    try:
        return resources.files("pyqcore.lua")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "lua"


@cache
def load_scripts() -> Mapping[str, Script]:
    """All scripts, by name (file name without ``.lua``)."""
    folder = lua_dir()
    scripts = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".lua"):
            name = entry.name.removesuffix(".lua")
            scripts[name] = Script.parse(name, entry.read_text())
    return scripts
