"""The Lua files themselves: documented contracts, includes in sync (and only those a script
uses), codes equal to Python's, runnable with redis-cli --eval, KEYS and ARGV arity as the
header says, and arguments validated before the first write."""

from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError

from pyqcore import BaseQueue, Job
from pyqcore.codes import Code
from pyqcore.core.calls import Call, QueueCalls, lock_call, unlock_call
from pyqcore.keys import QueueKeys
from pyqcore.limits import Rank
from pyqcore.schedule import Schedule
from pyqcore.scripts import (
    VARIADIC,
    Script,
    expand_includes,
    generated_line,
    load_scripts,
    read_includes,
)
from pyqcore.settings import MAX_BATCH, QueueSettings
from tests.support import LocalRedis

LUA = Path(__file__).resolve().parent.parent / "lua"
SCRIPTS = load_scripts()
INCLUDES = read_includes(LUA)
TOKEN = "0123456789abcdef"


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


def test_only_the_slicing_helpers_unpack() -> None:
    """Redis's Lua 5.1 cannot unpack more than about 8,000 values ("too many results to
    unpack"): a script's own code never unpacks, and each include that does takes slices of
    1000 (or, in gather_chunked, a table it checked holds at most 1000)."""
    sliced = re.compile(r"unpack\((\w+), i, math\.min\(i \+ 999, #\1\)\)")
    for script in SCRIPTS.values():
        assert "unpack" not in code_only(_BLOCK.sub("", script.source)), script.name
    for name, text in INCLUDES.items():
        code = code_only(text)
        for call in re.findall(r"unpack\([^()]*(?:\([^()]*\)[^()]*)*\)", code):
            assert sliced.fullmatch(call) or (
                name == "gather_chunked" and call == "unpack(items)"
                and "if #items <= 1000 then" in code), (name, call)
        if "unpack" in code:
            assert re.search(r"for i = 1, #\w+, 1000 do", code), name


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
    enqueue = k.keys(SCRIPTS["enqueue"].required_parts)
    out = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "--eval", str(LUA / "enqueue.lua"),
         *enqueue, ",", "0", "", "1", "0", "record-bytes"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert out == ["1"]  # a plain add replies its id alone
    assert client.lrange(k.key("ready"), 0, -1) == [b"1"]
    assert client.hget(k.key("jobs"), "1") == b"record-bytes"
    ack = k.keys(SCRIPTS["ack"].required_parts)  # a script with a shebang line (flags) runs too
    out = subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "--eval", str(LUA / "ack.lua"), *ack, ",",
         "1", TOKEN], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["0", "0", "1"]  # not leased: refused


# Scripts that run while Redis is out of memory (used_memory > maxmemory): workers reserve,
# settle and lock, the DLQ purges and redrives, and cancel and clear delete. enqueue has no
# flag, so Redis refuses its first write (it writes nothing); the read-only scripts need none.
ALLOW_OOM = {"ack", "cancel", "clear", "complete", "extend", "fail", "lock", "purge", "redrive",
             "release", "reserve", "unlock"}


def test_every_script_but_enqueue_that_writes_runs_when_redis_is_out_of_memory() -> None:
    assert {name for name, s in SCRIPTS.items() if s.flags} == ALLOW_OOM
    assert all(SCRIPTS[name].flags == ("allow-oom",) for name in ALLOW_OOM)
    assert SCRIPTS["enqueue"].source.startswith("--[[")


def test_header_parser_reads_the_shebang_flags() -> None:
    header = "--[[\nx: y\n\nKEYS\n  1  a  LIST  z\nARGV\n  (none)\nREPLY\n  {0}\n]]\n"
    assert Script.parse("x", "#!lua flags=allow-oom,no-cluster\n" + header).flags == (
        "allow-oom", "no-cluster")
    assert Script.parse("x", "#!lua\n" + header).flags == ()
    with pytest.raises(ValueError, match="shebang"):
        Script.parse("x", "#!python\n" + header)


BAD_ARGS = {
    "enqueue": ["soon", "", "1", "0", "rec"],
    "reserve": ["5", "1000", "1", "10", "0"],
    "ack": ["lonely-id"],
    "fail": ["1", "1", "0", "0", "{}", "1"],
    "extend": ["0", "1", "1"],
    "release": [],
    "redrive": ["x", "0", "0", "10"],
    "purge": ["0", "0"],
    "peek_dead": ["-1", "10"],
    "lock": ["", "100"],
    "schedule_claim": ["s", "1000", "1000", "0"],
    "schedules": ["0"],
}


@pytest.mark.parametrize("name", sorted(BAD_ARGS))
def test_bad_arguments_get_an_error_code_and_write_nothing(client: redis.Redis,
                                                           name: str) -> None:
    queue = BaseQueue(client, name="bad")
    seed_id = queue.add({"seed": True})
    queue.reserve()
    before = {key: client.dump(key) for key in client.keys("*")}
    script = SCRIPTS[name]
    keys = queue.keys.keys(script.required_parts) if name != "lock" else [queue.keys.lock("x")]
    client.script_load(script.source)
    reply = client.evalsha(script.sha, len(keys), *keys, *BAD_ARGS[name])
    assert reply[0] == Code.BAD_ARGUMENT
    assert reply[1]
    assert {key: client.dump(key) for key in client.keys("*")} == before, seed_id


@pytest.mark.parametrize("args", [
    ["0", "", "0", "0"],                      # no job
    ["0", "", "2", "0", "rec"],               # fewer records than n
    ["0", "", "1", "0", "rec", "a", "b", "1"],  # neither 0 nor n ids (then max_ready)
    ["0", "", "2", "0", "r1", "r2", "a"],     # ids for only some of the jobs
    ["@x", "", "1", "0", "rec"],              # a due time that is no number
    ["@-5", "", "1", "0", "rec"],             # ... or negative
    ["0", "", "1", "-1", "rec"],              # a negative max_attempts
    ["0", "", "1", "0", "rec", "", "0"],      # max_ready 0 (absent is no limit)
    ["0", "", "2", "0", "r1", "r2", "5"],     # max_ready without the ids before it
])
def test_enqueue_takes_n_records_then_all_or_no_ids(client: redis.Redis,
                                                    args: list[str]) -> None:
    keys = QueueKeys("pyqcore", "layout").keys(SCRIPTS["enqueue"].required_parts)
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


# -- arity: KEYS and ARGV as the header says -------------------------------------------------

HEADER_ARGV = {
    "ack": ("id...", "token..."),
    "cancel": ("id...",),
    "clear": ("limit",),
    "complete": ("keep_ms", "keep_count", "id...", "token...", "result..."),
    "counts": (),
    "enqueue": ("due", "id_prefix", "n", "max_attempts", "record...", "id...", "priority...",
                "group...", "max_ready..."),
    "extend": ("visibility_ms", "id...", "token..."),
    "fail": ("id", "token", "max_attempts", "backoff_ms", "error", "retryable"),
    "job_info": ("id",),
    "result": ("id",),
    "lock": ("token", "ttl_ms"),
    "pause": ("pause", "group"),
    "peek_dead": ("offset", "limit", "id..."),
    "purge": ("min_age_ms", "limit", "id..."),
    "redrive": ("max_redrives", "max_age_ms", "offset", "limit", "id..."),
    "release": ("id...", "token..."),
    "reserve": ("count", "visibility_ms", "max_attempts", "sweep_limit", "token", "max_active",
                "rate_starts", "rate_window_ms", "group_concurrency", "group_rate_starts",
                "group_rate_window_ms"),
    "room": (),
    "schedule_claim": ("name", "expected_ms", "next_ms", "max_attempts", "id...", "record..."),
    "schedules": ("limit", "name..."),
    "unlock": ("token",),
}

# The shortest call each script accepts: its fixed ARGV, then any variadic entries it needs.
VALID_ARGV = {
    "ack": ["1", TOKEN],
    "cancel": ["1"],
    "clear": ["1000"],
    "complete": ["0", "10", "1", TOKEN, ""],
    "counts": [],
    "enqueue": ["0", "", "1", "0", "record"],
    "extend": ["30000", "1", TOKEN],
    "fail": ["1", TOKEN, "4", "0", "{}", "1"],
    "job_info": ["1"],
    "result": ["1"],
    "lock": ["holder", "1000"],
    "pause": ["1", ""],
    "peek_dead": ["0", "10"],
    "purge": ["0", "1000"],
    "redrive": ["3", "-1", "0", "1000"],
    "release": ["1", TOKEN],
    "reserve": ["1", "30000", "4", "1000", TOKEN, "0", "0", "0", "0", "0", "0"],
    "room": [],
    "schedule_claim": ["s", "1000", "2000", "0"],
    "schedules": ["10"],
    "unlock": ["holder"],
}


def header_key_count(script: Script) -> int:
    """KEYS lines of the header, counted without pyqcore.scripts' parser."""
    section = script.header.split("\nKEYS\n", 1)[1].split("\nARGV\n", 1)[0]
    return len(re.findall(r"^  \d+  ", section, re.M))


def test_header_argv_is_parsed() -> None:
    assert {name: s.argv for name, s in SCRIPTS.items()} == HEADER_ARGV
    for script in SCRIPTS.values():
        fixed = [a for a in script.argv if not a.endswith(VARIADIC)]
        assert script.argv[: len(fixed)] == tuple(fixed), script.name  # fixed entries first
        assert script.argc == len(fixed)


def test_header_parser_refuses_misnumbered_argv() -> None:
    def header(argv: str) -> str:
        return f"--[[\nx: y\n\nKEYS\n  1  a  LIST  z\nARGV\n{argv}\nREPLY\n  {{0}}\n]]\n"

    parsed = Script.parse("x", header("  1    n   integer  n\n  2..  id  string   ids\n"
                                      "                   more about ids"))
    assert (parsed.key_parts, parsed.argv, parsed.argc) == (("a",), ("n", "id..."), 1)
    assert Script.parse("x", header("  (none)")).argv == ()
    for bad in ("  2  n  integer  n", "  1..  id  string  ids\n  2  n  integer  n",
                "  one  n  integer  n"):
        with pytest.raises(ValueError, match="ARGV"):
            Script.parse("x", header(bad))


def test_keys_python_sends_are_the_header_keys_and_the_ones_the_script_reads() -> None:
    for script in SCRIPTS.values():
        count = header_key_count(script)
        assert len(script.key_parts) == count, script.name
        code = code_only(script.source)
        read = {int(i) for i in re.findall(r"KEYS\[(\d+)\]", code)}
        if script.trailing:  # the events stream: the last key sent (lua/includes/events.lua)
            assert "KEYS[#KEYS]" in code and script.key_parts[-1] == "events", script.name
            read.add(count)
        assert read == set(range(1, count + 1)), script.name


KEEPING = QueueCalls(QueueSettings(name="arity", keep_completed=1.5, keep_completed_count=10))
KEPT_KEYS = QueueKeys("pyqcore", "arity").keys(("completed", "kept", "results"))


def every_python_call() -> list[Call[Any]]:
    """One call of every script, built by the core as the queues build them."""
    calls = QueueCalls(QueueSettings(name="arity"))
    lock_key = QueueKeys("pyqcore", "arity").lock("item")
    return [
        calls.enqueue([""], [b"record"]),
        calls.enqueue(["a", "b"], [b"r1", b"r2"]),
        calls.enqueue(["", "b"], [b"r1", b"r2"], rank=Rank(5, "g")),  # ranked: optional keys
        calls.reserve(1, visibility_ms=1000, max_attempts=4, sweep_limit=1000, token=TOKEN),
        calls.reserve(1, visibility_ms=1000, max_attempts=4, sweep_limit=1000, token=TOKEN,
                      limits=(5, 10, 1000, 1, 2, 500)),
        calls.pause(True, "g"),
        calls.ack([("1", TOKEN)]),
        calls.fail("1", TOKEN, max_attempts=4, backoff_ms=0, error_json="{}", retryable=True),
        calls.extend(1000, [("1", TOKEN)]),
        calls.release([("1", TOKEN)]),
        calls.redrive(3),
        calls.redrive(3, ids=["1", "2"]),
        calls.purge(),
        calls.purge(ids=["1"]),
        calls.peek_dead(0, 10),
        calls.peek_dead(0, 10, ids=["1"]),
        calls.counts(),
        calls.room(),
        calls.read_schedules([], 10),
        calls.read_schedules(["a", "b"]),
        calls.claim_schedule(Schedule("s", "arity", every=60), 60_000, 120_000, []),
        calls.claim_schedule(Schedule("s", "arity", every=60), 60_000, 180_000, [60_000, 120_000]),
        calls.job_info("1"),
        calls.job_result("1"),
        calls.cancel(["1", "2"]),
        calls.clear(),
        KEEPING.cancel(["1"]),  # the kept keys and bounds (keep_cancelled.lua)
        KEEPING.clear(),
        QueueCalls(QueueSettings(name="arity", keep_completed_count=10)).finish(
            [Job("1", "arity", None, None, 1, 0.0, TOKEN, 0.0)]),
        lock_call(lock_key, "holder", 1000),
        unlock_call(lock_key, "holder"),
    ]


def test_python_sends_the_header_arity() -> None:
    built = every_python_call()
    assert {call.script.name for call in built} == set(SCRIPTS)
    for call in built:
        script = call.script
        assert len(script.key_parts) == header_key_count(script), script.name
        # Every key (but the events stream: the queue has no events), or (a plain add) the
        # ones before the optional keys.
        assert call.keys[-1] != QueueKeys("pyqcore", "arity").key("events") or \
            not script.trailing, script.name
        assert len(call.keys) in {len(script.key_parts) - bool(script.trailing),
                                  script.required_keys}, script.name
        kept = len(script.kept) if KEPT_KEYS[0] in call.keys else 0  # the kept bounds
        if script.argc == len(script.argv):  # fixed ARGV only: exactly that many
            assert len(call.args) - kept == script.argc, script.name
        else:
            assert len(call.args) - kept >= script.argc, script.name
    plain, _, ranked = (c for c in built if c.script.name == "enqueue")
    assert (len(plain.keys), len(ranked.keys)) == (6, 11)


@pytest.mark.parametrize("level", [1, 2])
def test_python_sends_the_events_stream_last_and_its_arguments_last(level: int) -> None:
    """A queue with events (level 2) or store_results alone (level 1) sends the events
    stream as the last key, and the level and the bound as the last two ARGV entries, to
    each script that writes at that level (level 1: the terminal transitions'); the rest of
    each call is what a queue without events sends."""
    options: dict[str, Any] = ({"events": True, "events_maxlen": 77} if level == 2 else
                               {"keep_completed_count": 10, "store_results": True})
    with_events = QueueCalls(QueueSettings(name="arity", **options))
    stream = QueueKeys("pyqcore", "arity").key("events")
    done = [Job("1", "arity", None, None, 1, 0.0, TOKEN, 0.0)]
    pairs: list[tuple[Call[Any], Call[Any]]] = [
        (with_events.enqueue([""], [b"record"]), calls_of("enqueue", 0)),
        (with_events.enqueue(["", "b"], [b"r1", b"r2"], rank=Rank(5, "g")), calls_of("enqueue", 2)),
        (with_events.reserve(1, visibility_ms=1000, max_attempts=4, sweep_limit=1000,
                             token=TOKEN), calls_of("reserve", 0)),
        (with_events.ack([("1", TOKEN)]), calls_of("ack", 0)),
        (with_events.fail("1", TOKEN, max_attempts=4, backoff_ms=0, error_json="{}",
                          retryable=True), calls_of("fail", 0)),
        (with_events.release([("1", TOKEN)]), calls_of("release", 0)),
        (with_events.redrive(3), calls_of("redrive", 0)),
        (with_events.purge(), calls_of("purge", 0)),
        (with_events.cancel(["1", "2"]), calls_of("cancel", 0)),
        (with_events.clear(), calls_of("clear", 0)),
        (with_events.extend(1000, [("1", TOKEN)]), calls_of("extend", 0)),
        (with_events.claim_schedule(Schedule("s", "arity", every=60), 60_000, 120_000, []),
         calls_of("schedule_claim", 0)),
    ]
    writers = {"reserve", "fail", "release", "cancel", "clear"} if level == 1 else \
        {"enqueue", "reserve", "ack", "fail", "release", "redrive", "purge", "cancel", "clear",
         "schedule_claim"}
    for call, without in pairs:
        name = call.script.name
        # (store_results keeps finished jobs: cancel and clear send the kept keys and bounds)
        bounds = (KEPT_KEYS, [0, 10]) if level == 1 and call.script.kept else ([], [])
        if name in writers:
            assert (call.keys[-1], list(call.args[-2:])) == (stream, [level, options.get(
                "events_maxlen", 10_000)]), name
            assert (list(call.keys[:-1]), list(call.args[:-2])) == (
                [*without.keys, *bounds[0]], [*without.args, *bounds[1]]), name
        else:
            assert (list(call.keys), len(call.args)) == (list(without.keys),
                                                         len(without.args)), name
    kept = QueueCalls(QueueSettings(name="arity", events=level == 2, keep_completed_count=10,
                                    store_results=True)).finish(done)
    assert (kept.keys[-1], list(kept.args[-2:])) == (stream, [level, 10_000])


def test_only_a_queue_that_keeps_finished_jobs_sends_cancel_and_clear_the_kept_keys() -> None:
    """A queue that keeps nothing sends cancel and clear what it always sent (their required
    keys; the ids, the limit); one that keeps finished jobs adds the kept keys and the bounds
    (keep_ms, keep_count), before the events stream and its arguments if any."""
    plain = QueueCalls(QueueSettings(name="arity"))
    for name, call, args in (("cancel", plain.cancel(["1", "2"]), ["1", "2"]),
                             ("clear", plain.clear(7), [7])):
        script = SCRIPTS[name]
        assert script.kept == ("keep_ms", "keep_count"), name
        assert (list(call.keys), list(call.args)) == (
            QueueKeys("pyqcore", "arity").keys(script.required_parts), args), name
        kept = KEEPING.cancel(["1", "2"]) if name == "cancel" else KEEPING.clear(7)
        assert (list(kept.keys), list(kept.args)) == (
            [*call.keys, *KEPT_KEYS], [*args, 1500, 10]), name
        events = QueueCalls(QueueSettings(name="arity", keep_completed=1.5, events=True))
        with_events = events.cancel(["1", "2"]) if name == "cancel" else events.clear(7)
        assert (list(with_events.keys), list(with_events.args)) == (
            [*call.keys, *KEPT_KEYS, QueueKeys("pyqcore", "arity").key("events")],
            [*args, 1500, 0, 2, 10_000]), name
    assert {s.name for s in SCRIPTS.values() if s.kept} == {"cancel", "clear"}


def calls_of(name: str, index: int) -> Call[Any]:
    """The index-th call of script ``name`` in ``every_python_call`` (a queue without events)."""
    return [c for c in every_python_call() if c.script.name == name][index]


def snapshot(client: redis.Redis) -> dict[bytes | str, bytes | None]:
    """Every key with its serialized value (DUMP)."""
    return {key: client.dump(key) for key in client.keys("*")}


def seeded(client: redis.Redis) -> BaseQueue:
    """A queue with a job in each state a script could touch: ready, leased, dead; and a lock."""
    queue = BaseQueue(client, name="arity", max_retries=0)
    queue.add_batch(["dead", "leased", "ready"])
    [dead] = queue.reserve()
    queue.fail(dead, RuntimeError("seed"), retry=False)
    queue.reserve()
    client.set(queue.keys.key("lock"), "holder")
    return queue


@pytest.mark.parametrize("cut", ["one fixed too few", "last dropped"])
@pytest.mark.parametrize("name", sorted(n for n in SCRIPTS if VALID_ARGV[n]))
def test_a_missing_argument_is_refused_before_any_write(client: redis.Redis, name: str,
                                                        cut: str) -> None:
    script = SCRIPTS[name]
    valid = VALID_ARGV[name]
    assert len(valid) >= script.argc
    short = valid[: script.argc - 1] if cut == "one fixed too few" and script.argc else valid[:-1]
    keys = seeded(client).keys.keys(script.required_parts)
    before = snapshot(client)
    dbsize = client.dbsize()
    reply = client.eval(script.source, len(keys), *keys, *short)
    assert reply[0] == Code.BAD_ARGUMENT, (name, short, reply)
    assert isinstance(reply[1], bytes) and reply[1], reply
    assert client.dbsize() == dbsize
    assert snapshot(client) == before
    # The same call with the argument back is not refused for its arguments.
    reply = client.eval(script.source, len(keys), *keys, *valid)
    assert reply[0] != Code.BAD_ARGUMENT, (name, valid, reply)


def test_counts_takes_no_argument(client: redis.Redis) -> None:
    script = SCRIPTS["counts"]
    assert script.argv == () and VALID_ARGV["counts"] == []
    keys = seeded(client).keys.keys(script.required_parts)
    assert client.eval(script.source, len(keys), *keys) == [Code.OK, 1, 0, 1, 1]


@pytest.mark.parametrize("name", ["redrive", "purge"])
def test_an_id_given_twice_counts_once(client: redis.Redis, name: str) -> None:
    """A duplicated id in requeue(ids=...) once put the job on ready twice (two deliveries)."""
    queue = BaseQueue(client, name="twice", max_retries=0)
    [job_id] = queue.add_batch(["x"])
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("boom"), retry=False)
    script = SCRIPTS[name]
    keys = queue.keys.keys(script.required_parts)
    fixed = VALID_ARGV[name]
    reply = client.eval(script.source, len(keys), *keys, *fixed, job_id, "gone", job_id, "gone")
    if name == "redrive":
        assert reply == [Code.OK, 1, 0, 1, 1]
        assert client.lrange(queue.keys.key("ready"), 0, -1) == [job_id.encode()]
        assert queue.stats()["redriven"] == 1
    else:
        assert reply == [Code.OK, 1]
        assert queue.stats()["purged"] == 1
    assert queue.counts()["dead"] == 0


# The bounds of one call: an argument past its bound is refused before any write.
BOUNDS = {
    ("clear", "limit"): MAX_BATCH,
    ("fail", "retryable"): 1,
    ("pause", "pause"): 1,
    ("purge", "limit"): MAX_BATCH,
    ("redrive", "limit"): MAX_BATCH,
    ("reserve", "sweep_limit"): MAX_BATCH,
    ("schedules", "limit"): 1000,
}


def test_bounded_arguments_are_the_documented_ones() -> None:
    found = {}
    for script in SCRIPTS.values():
        for index, name, _, high in re.findall(r"arg_int\((\d+), '(\w+)', (-?\d+), (\d+)\)",
                                               script.source):
            found[script.name, name] = int(high)
            assert script.argv[int(index) - 1] == name, (script.name, name)
    assert found == BOUNDS
    for (script_name, name), high in BOUNDS.items():
        # The entry's line and the deeper-indented lines that continue it.
        entry = re.search(rf"^  \d+\s+{name}\s.*(?:\n {{5,}}\S.*)*", SCRIPTS[script_name].header,
                          re.M)
        assert entry, (script_name, name)
        assert ("0 or 1" if high == 1 else f"1..{high}") in " ".join(entry[0].split()), entry[0]


@pytest.mark.parametrize(("name", "arg"), sorted(BOUNDS))
def test_an_argument_past_its_bound_is_refused(client: redis.Redis, name: str,
                                               arg: str) -> None:
    script = SCRIPTS[name]
    keys = seeded(client).keys.keys(script.required_parts)
    at = script.argv.index(arg)
    args = list(VALID_ARGV[name])
    before = snapshot(client)
    args[at] = str(BOUNDS[name, arg] + 1)
    reply = client.eval(script.source, len(keys), *keys, *args)
    assert reply[0] == Code.BAD_ARGUMENT and f"ARGV[{at + 1}] {arg}".encode() in reply[1]
    assert snapshot(client) == before
    args[at] = str(BOUNDS[name, arg])
    assert client.eval(script.source, len(keys), *keys, *args)[0] != Code.BAD_ARGUMENT


# A real 3.10 interpreter (not a pyenv shim, which exits 127 unless 3.10 is selected).
PYENV_310 = os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python")
PYTHON_310 = [p for p in (*sorted(glob.glob(PYENV_310)), shutil.which("python3.10"))
              if p and "shims" not in p]


def test_scripts_module_imports_nothing_newer_than_python_310() -> None:
    """requires-python is >= 3.10, which has no importlib.resources.abc: only type checking may
    import it."""
    tree = ast.parse((LUA.parent / "pyqcore" / "scripts.py").read_text())
    runtime = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    modules = {n.module for n in runtime if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in runtime if isinstance(n, ast.Import) for a in n.names}
    assert "importlib.resources.abc" not in modules


@pytest.mark.skipif(not PYTHON_310, reason="no Python 3.10 interpreter found")
def test_scripts_module_parses_every_script_on_python_310() -> None:
    module = str(LUA.parent / "pyqcore" / "scripts.py")
    code = (
        "import importlib.util, pathlib, sys\n"
        f"spec = importlib.util.spec_from_file_location('s', {module!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['s'] = m\n"
        "spec.loader.exec_module(m)\n"
        f"lua = pathlib.Path({str(LUA)!r}); inc = m.read_includes(lua)\n"
        "for p in sorted(lua.glob('*.lua')):\n"
        "    t = p.read_text(); assert m.expand_includes(t, inc) == t\n"
        "    print(p.stem, m.Script.parse(p.stem, t).argc)\n"
    )
    out = subprocess.run([PYTHON_310[0], "-c", code], check=True, capture_output=True,
                         text=True).stdout.split("\n")
    assert {line.split()[0]: int(line.split()[1]) for line in out if line} == {
        name: script.argc for name, script in SCRIPTS.items()}
