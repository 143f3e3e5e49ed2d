"""The Lua files themselves: documented contracts, includes in sync (and only those a script
uses), codes equal to Python's, runnable with redis-cli --eval, and arguments validated before
the first write."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoScriptError

from pyqcore.codes import Code
from pyqcore.keys import QueueKeys
from pyqcore.local_redis import LocalRedis
from pyqcore.queue import BaseQueue
from pyqcore.scripts import (
    expand_includes,
    generated_line,
    load_scripts,
    read_includes,
)

LUA = Path(__file__).resolve().parent.parent / "lua"
SCRIPTS = load_scripts()
INCLUDES = read_includes(LUA)


def test_every_lua_file_is_shipped_and_documented() -> None:
    assert {p.stem for p in LUA.glob("*.lua")} == set(SCRIPTS)
    for script in SCRIPTS.values():
        for section in ("KEYS", "ARGV", "REPLY"):
            assert re.search(rf"^{section}$", script.header, re.M), (script.name, section)
        assert script.key_parts, script.name


def test_shipped_scripts_are_the_lua_sources() -> None:
    for script in SCRIPTS.values():
        assert script.source == (LUA / f"{script.name}.lua").read_text()


def test_include_blocks_match_their_include_files() -> None:
    for path in LUA.glob("*.lua"):
        text = path.read_text()
        assert expand_includes(text, INCLUDES) == text, f"run `make lua`: {path.name} is stale"


def test_every_include_block_says_it_is_generated() -> None:
    for path in LUA.glob("*.lua"):
        names = re.findall(r"^-- @include (\w+)\n(.*)$", path.read_text(), re.M)
        for name, first_line in names:
            assert first_line == generated_line(name), (path.name, name)
            assert f"lua/includes/{name}.lua" in first_line and "`make lua`" in first_line
    assert expand_includes("-- @include codes\nstale\n-- @end codes\n", INCLUDES) == (
        f"-- @include codes\n{generated_line('codes')}\n{INCLUDES['codes']}-- @end codes\n")


# -- which includes a script carries -----------------------------------------------------------

_BLOCK = re.compile(r"^-- @include (\w+)\n.*?^-- @end \1\n", re.S | re.M)
_DEFINITION = re.compile(r"^local (?:function (\w+)|(\w+(?:\s*,\s*\w+)*))", re.M)
_NAME = re.compile(r"[A-Za-z_]\w*")


def code_only(lua: str) -> str:
    """Lua text without comments and string literals (only the names the code refers to)."""
    lua = re.sub(r"--\[\[.*?\]\]", "", lua, flags=re.S)
    lua = re.sub(r"'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"", "''", lua)
    return re.sub(r"--[^\n]*", "", lua)


def definitions(include: str) -> list[tuple[tuple[str, ...], set[str]]]:
    """An include's top-level ``local`` statements, in order: the names each defines, and the
    names its code (up to the next top-level ``local``) refers to."""
    code = code_only(include)
    starts = list(_DEFINITION.finditer(code))
    found = []
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(code)
        names = (start.group(1),) if start.group(1) else tuple(
            n.strip() for n in start.group(2).split(","))
        body = code[start.end() : end]
        found.append((names, set(_NAME.findall(body)) - set(names)))
    return found


DEFINED_BY = {name: inc for inc, text in INCLUDES.items()
              for names, _ in definitions(text) for name in names}


def test_includes_define_distinct_names() -> None:
    seen: dict[str, str] = {}
    for inc, text in INCLUDES.items():
        for names, _ in definitions(text):
            for name in names:
                assert name not in seen, f"{name} is defined by {seen[name]}.lua and {inc}.lua"
                seen[name] = inc
    assert {"OK", "bad", "arg_int", "call_chunked", "gather_chunked", "lease_member"} <= set(seen)


def include_problems(source: str) -> list[str]:
    """What is wrong with a script's include blocks: an include carried twice, a name used
    above the block that defines it (a Lua local is only visible below its statement), a name
    used but not included, or an include statement that nothing uses. Used means reachable
    from the script's own code (outside the blocks), directly or through a used definition."""
    carried = _BLOCK.findall(source)
    problems = [f"{inc} is included twice" for inc in set(carried) if carried.count(inc) > 1]
    own = set(_NAME.findall(code_only(_BLOCK.sub("", source))))
    defs = [(inc, names, refs) for inc in carried for names, refs in definitions(INCLUDES[inc])]
    defined: set[str] = set()
    for inc, names, refs in defs:
        early = sorted(r for r in refs if r in DEFINED_BY and r not in defined)
        problems += [f"{inc} uses {early} above the block that defines them"] if early else []
        defined.update(names)
    absent = sorted(r for r in own if r in DEFINED_BY and r not in defined)
    problems += [f"uses {absent} without including them"] if absent else []
    used = {r for r in own if r in DEFINED_BY}
    changed = True
    while changed:
        changed = False
        for _, names, refs in defs:
            needs = refs.intersection(DEFINED_BY)
            if used.intersection(names) and not needs <= used:
                used |= needs
                changed = True
    problems += [f"includes {inc} but never uses {', '.join(names)}"
                 for inc, names, _ in defs if not used.intersection(names)]
    return problems


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_script_carries_only_the_includes_it_uses(name: str) -> None:
    assert include_problems(SCRIPTS[name].source) == [], name


def test_include_check_catches_unused_missing_and_misordered_includes() -> None:
    def script(incs: str, code: str) -> str:
        blocks = "".join(f"-- @include {i}\n-- @end {i}\n" for i in incs.split())
        return expand_includes(blocks + code, INCLUDES)

    assert include_problems(script("codes args", "arg_int(1, 'n', 0) return {OK, bad}")) == []
    assert include_problems(script("codes args", "return {OK, bad}")) == [
        "includes args but never uses MAX_INT", "includes args but never uses arg_int"]
    assert include_problems(script("codes wake", "return {OK}")) == [
        "includes wake but never uses wake"]
    assert include_problems(script("codes", "call_chunked('DEL', KEYS[1], {}) return {OK}")) == [
        "uses ['call_chunked'] without including them"]
    uses_all = "return {OK, arg_token(1, 't'), arg_int(2, 'n', 0), lease_member('t', 'i')}"
    assert include_problems(script("codes args lease arg_token", uses_all)) == []
    assert include_problems(script("arg_token codes args lease", uses_all)) == [
        "arg_token uses ['TOKEN_LENGTH', 'bad'] above the block that defines them"]
    # A definition is used through another one: lease_pairs uses lease_member and TOKEN_LENGTH.
    assert include_problems(script("lease lease_pairs", "return lease_pairs(1)")) == []


def test_lua_reply_codes_equal_python_enum() -> None:
    common = (LUA / "includes" / "codes.lua").read_text()
    match = re.search(r"^local (OK, [A-Z_, ]+) = ([\d, ]+)$", common, re.M)
    assert match
    names, values = match.groups()
    lua = dict(zip([n.strip() for n in names.split(",")],
                   [int(v) for v in values.split(",")], strict=True))
    assert lua == {code.name: code.value for code in Code}


def test_every_key_shares_the_queue_hash_tag() -> None:
    keys = QueueKeys("pyqcore", "emails")
    for script in SCRIPTS.values():
        for key in keys.keys(script.key_parts):
            assert key.startswith("pyqcore:{emails}:"), key


def test_script_runs_as_is_with_redis_cli_eval(redis_server: LocalRedis,
                                                 client: redis.Redis) -> None:
    k = QueueKeys("pyqcore", "cli")
    enqueue = k.keys(SCRIPTS["enqueue"].key_parts)
    out = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "--eval", str(LUA / "enqueue.lua"),
         *enqueue, ",", "0", "", "1", "record-bytes"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert out == ["0", "1"]
    assert client.lrange(k.key("ready"), 0, -1) == [b"1"]
    assert client.hget(k.key("jobs"), "1") == b"record-bytes"


BAD_ARGS = {
    "enqueue": ["soon", "", "1", "rec"],
    "reserve": ["0", "5", "1000", "1", "10", "0"],
    "ack": ["lonely-id"],
    "fail": ["0", "1", "1", "0", "0", "{}", "1"],
    "extend": ["0", "0", "1", "1"],
    "release": [],
    "redrive": ["x", "0", "0", "10"],
    "purge": ["0", "0"],
    "peek_dead": ["-1", "10"],
    "lock": ["", "100"],
}


@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_arguments_get_an_error_code_and_write_nothing(client: redis.Redis,
                                                           name: str) -> None:
    queue = BaseQueue(client, name="bad")
    seed_id = queue.add({"seed": True})
    queue.reserve()
    before = {key: client.dump(key) for key in client.keys("*")}
    script = SCRIPTS[name]
    keys = queue.keys.keys(script.key_parts) if name != "lock" else [queue.keys.lock("x")]
    client.script_load(script.source)
    reply = client.evalsha(script.sha, len(keys), *keys, *BAD_ARGS[name])
    assert reply[0] == Code.BAD_ARGUMENT
    assert reply[1]
    assert {key: client.dump(key) for key in client.keys("*")} == before, seed_id


@pytest.mark.parametrize("args", [
    ["0", "", "0"],                      # no job
    ["0", "", "2", "rec"],               # fewer records than n
    ["0", "", "1", "rec", "a", "b"],     # neither 0 nor n ids
    ["0", "", "2", "r1", "r2", "a"],     # ids for only some of the jobs
])
def test_enqueue_takes_n_records_then_all_or_no_ids(client: redis.Redis,
                                                    args: list[str]) -> None:
    keys = QueueKeys("pyqcore", "layout").keys(SCRIPTS["enqueue"].key_parts)
    reply = client.eval(SCRIPTS["enqueue"].source, len(keys), *keys, *args)
    assert reply[0] == Code.BAD_ARGUMENT, reply
    assert client.keys("*") == []


def test_script_flush_mid_run_reloads_transparently(client: redis.Redis) -> None:
    queue = BaseQueue(client, name="flush")
    queue.add_batch(range(3))
    client.script_flush()
    with pytest.raises(NoScriptError):
        client.evalsha(SCRIPTS["reserve"].sha, 0)
    jobs = queue.reserve(count=3)
    assert [j.payload for j in jobs] == [0, 1, 2]
    client.script_flush()
    assert queue.ack(jobs) == 3
    client.script_flush()
    assert queue.add_batch(range(2500)) and queue.counts()["ready"] == 2500
