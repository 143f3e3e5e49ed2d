"""The Lua files themselves: documented contracts, includes in sync, codes equal to Python's,
runnable with redis-cli --eval, and arguments validated before the first write."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis
from redis.exceptions import NoScriptError

from pyqcore import BaseQueue
from pyqcore.codes import Code
from pyqcore.keys import QueueKeys
from pyqcore.local_redis import LocalRedis
from pyqcore.scripts import expand_includes, load_scripts

LUA = Path(__file__).resolve().parent.parent / "lua"
SCRIPTS = load_scripts()


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
    includes = {p.stem: p.read_text() for p in (LUA / "includes").glob("*.lua")}
    for path in LUA.glob("*.lua"):
        text = path.read_text()
        assert expand_includes(text, includes) == text, f"run `make lua`: {path.name} is stale"


def test_lua_reply_codes_equal_python_enum() -> None:
    common = (LUA / "includes" / "common.lua").read_text()
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
