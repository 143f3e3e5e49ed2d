"""The Lua scripts: loaded from the package's ``lua/`` files, with the contract in each header.

Each script's KEYS and ARGV are read from its header (``KEYS`` section: index, part name, type;
``ARGV`` section: position, name, type), so the Lua file is the single source of truth for
which keys and arguments a call passes and in which order.
Shared Lua lives in ``lua/includes/`` and is expanded between ``-- @include NAME`` and
``-- @end NAME`` markers in each script (``make lua``), so every file runs as-is under
``redis-cli --eval``. A script carries only the includes it uses. A script may start with a
Redis 7 shebang line above its header (``#!lua flags=allow-oom``: it runs when Redis is out of
memory); ``Script.flags`` has its flags.

The queue's one clock is the Redis server's: a script that needs the time carries the ``clock``
include, which reads ``TIME``. Tests that move time by hand (``pyqcore.testing.ManualClock``)
load a variant of the scripts instead, ``load_scripts(manual_clock=True)``, whose clock block
takes the time from an extra first ARGV entry (``lua/testing/manual_clock.lua``); its SHAs
differ, and the production scripts never accept a time from their caller.
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

# An optional shebang line (Redis 7 script flags, e.g. "#!lua flags=allow-oom"), then the header.
_HEADER = re.compile(r"\A(?:#!lua(?: flags=(?P<flags>[\w,-]*))?\n)?--\[\[\n(?P<body>.*?)\n\]\]\n",
                     re.S)
# A KEYS entry: its index, part name and type; "(optional)" after the type marks a key that
# only some calls send (all optional keys come last: enqueue's ranked-add keys).
_KEY_LINE = re.compile(
    r"^\s+(\d+)\s+(\w+)\s+(LIST|ZSET|HASH|STRING|SET|STREAM)\b\s*(\(optional\))?")
# An ARGV entry: two spaces, its position, its name. A fixed entry's position is its index
# (1, 2, ...); one after a variable part is a pattern ("3..", "2k-1", "3+n+k", or "4+2n": one
# optional entry after the n-long ones). Deeper lines continue the description above them.
_ARGV_LINE = re.compile(r"^  (?P<pos>[^\s(]\S*)\s+(?P<name>\w+)\s")
_FIXED = re.compile(r"\d+")
# The events arguments (lua/includes/events.lua): "-2" and "-1", the last two entries, sent
# only with the optional events key.
_TRAILING = re.compile(r"-[12]")
# The kept bounds (lua/includes/keep_cancelled.lua): "-4" and "-3", right before the events
# arguments (the last two entries without them), sent only with the optional kept keys.
_KEPT = re.compile(r"-[34]")
_VARIADIC = re.compile(r"\d+\.\.|[\dkn+\-]*[kn][\dkn+\-]*")
_INCLUDE = re.compile(r"^-- @include (\w+)\n.*?^-- @end \1\n", re.S | re.M)
_CLOCK = re.compile(r"^-- @include clock\n.*?^-- @end clock\n", re.S | re.M)
VARIADIC = "..."  # suffix of a variadic ARGV entry's name in Script.argv


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its source, SHA1 (for EVALSHA), documented header, key parts, ARGV
    entry names in order (a variadic entry's name ends with ``...``: ``("offset", "limit",
    "id...")``), whether it reads the clock (carries the ``clock`` include), the flags of
    its shebang line (``("allow-oom",)``: it runs when Redis is out of memory; none for a
    script without one), how many of its keys every call sends (the rest are optional:
    ``(optional)`` in the header), and the names of the entries that end ARGV only with the
    optional events key (``("events_level", "events_maxlen")``, positions -2 and -1), and
    those sent before them only with the optional kept keys (``("keep_ms", "keep_count")``,
    positions -4 and -3: a script that keeps cancelled jobs)."""

    name: str
    source: str
    sha: str
    header: str
    key_parts: tuple[str, ...]
    argv: tuple[str, ...]
    reads_clock: bool = False
    flags: tuple[str, ...] = ()
    required_keys: int = 0
    trailing: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    @property
    def required_parts(self) -> tuple[str, ...]:
        """The key parts every call sends (all but the optional ones)."""
        return self.key_parts[: self.required_keys]

    @property
    def argc(self) -> int:
        """How many fixed ARGV entries come before any variadic ones."""
        return sum(1 for arg in self.argv if not arg.endswith(VARIADIC))

    @classmethod
    def parse(cls, name: str, source: str) -> Script:
        """Build a Script from a ``.lua`` file's text, reading KEYS and ARGV from its header."""
        match = _HEADER.match(source)
        if not match:
            raise ValueError(f"lua/{name}.lua does not start with a --[[ ... ]] header (after "
                             "an optional #!lua shebang line)")
        header = match.group("body")
        parts: list[str] = []
        argv: list[str] = []
        trailing: list[str] = []
        kept: list[str] = []
        required = 0
        section = ""
        for line in header.splitlines():
            if line.strip() and not line.startswith(" "):
                section = line.strip()
                continue
            if section == "KEYS" and (key := _KEY_LINE.match(line)):
                if int(key.group(1)) != len(parts) + 1:
                    raise ValueError(f"lua/{name}.lua: KEYS are not numbered 1, 2, ...")
                parts.append(key.group(2))
                if key.group(4) is None:
                    if required != len(parts) - 1:
                        raise ValueError(f"lua/{name}.lua: a required key follows an optional one")
                    required = len(parts)
            elif section == "ARGV" and (arg := _ARGV_LINE.match(line)):
                if _TRAILING.fullmatch(arg.group("pos")):
                    trailing.append(arg.group("name"))
                elif _KEPT.fullmatch(arg.group("pos")):
                    kept.append(arg.group("name"))
                else:
                    argv.append(_argv_entry(name, arg.group("pos"), arg.group("name"), argv))
        sha = hashlib.sha1(source.encode()).hexdigest()
        flags = tuple(f for f in (match.group("flags") or "").split(",") if f)
        return cls(name, source, sha, header, tuple(parts), tuple(argv),
                   _CLOCK.search(source) is not None, flags, required, tuple(trailing),
                   tuple(kept))


def _argv_entry(script: str, position: str, name: str, before: list[str]) -> str:
    """One ARGV entry's name, with ``...`` when it is variadic; fixed entries must be numbered
    1, 2, ... and come before every variadic one."""
    if _FIXED.fullmatch(position):
        if before and before[-1].endswith(VARIADIC):
            raise ValueError(f"lua/{script}.lua: ARGV {position} {name} follows a variadic entry")
        if int(position) != len(before) + 1:
            raise ValueError(f"lua/{script}.lua: ARGV are not numbered 1, 2, ...")
        return name
    if _VARIADIC.fullmatch(position):
        return name + VARIADIC
    raise ValueError(f"lua/{script}.lua: ARGV position {position!r} of {name} is neither "
                     "a number nor a variadic pattern (3.., 2k-1, 3+n+k, 4+2n)")


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


def with_manual_clock(source: str, manual: str) -> str:
    """A script's source with its clock block holding ``manual`` (the test-only clock) instead
    of the server's: ``-- @include clock`` ... ``-- @end clock`` markers kept, so the variant
    still reads the clock."""
    return _CLOCK.sub(lambda _: f"-- @include clock\n{manual.rstrip()}\n-- @end clock\n", source)


@cache
def load_scripts(manual_clock: bool = False) -> Mapping[str, Script]:
    """All scripts, by name (file name without ``.lua``). With ``manual_clock``, the test-only
    variant: each script that reads the clock takes the time (ms) as an extra first ARGV entry
    (see ``pyqcore.testing.ManualClock``)."""
    folder = lua_dir()
    manual = (folder / "testing" / "manual_clock.lua").read_text() if manual_clock else ""
    scripts = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".lua"):
            name = entry.name.removesuffix(".lua")
            source = entry.read_text()
            scripts[name] = Script.parse(name, with_manual_clock(source, manual)
                                         if manual_clock else source)
    return scripts
