"""Every script in lua/ called as a redis-cli user could call it (EVALSHA with the KEYS its
header names, then any ARGV at all), against a queue with a job in every state:

- an argument outside its documented domain (missing, empty, negative, past its bound,
  non-numeric, ``inf``/``nan``, a float, leading zeros, a token of the wrong shape, an odd
  id/token list, n not matching the records) is refused with BAD_ARGUMENT, naming the
  argument, and writes nothing;
- any ARGV whatsoever gets a reply with a reply code, never a Lua runtime error, and a
  BAD_ARGUMENT reply has written nothing;
- tokens that hold no lease settle nothing: ack, release and extend refuse every such pair
  and write nothing, fail answers LEASE_LOST and writes nothing.

"Writes nothing" is read two ways: the DUMP of every key (and whether it expires) is the same
after the call, and Redis's count of changes since the last save (every write command, an
expiry refresh too) has not moved.

hypothesis generates the ARGV from each entry's domain (``DOMAINS``, the headers' contract;
a test fails if a script grows an entry missing from it). ``PYQCORE_FUZZ_EXAMPLES`` sets the
examples per script and property (default 40; ``make fuzz`` runs more).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyqcore.codes import Code
from pyqcore.keys import QueueKeys
from pyqcore.scripts import Script, load_scripts
from pyqcore.settings import MAX_BATCH

SCRIPTS = load_scripts()
SEEDING = load_scripts(manual_clock=True)  # the seed's times are exact, relative to the server's
EXAMPLES = int(os.environ.get("PYQCORE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

MAX_INT = 2**53 - 1  # the largest integer the scripts take (args.lua)
NOW = 1_800_000_000_000  # a time (ms) of the order of the server's
KEYS = QueueKeys("pyqcore", "fuzz")
LOCK_KEY = KEYS.key("lock")  # lock.lua and unlock.lua name their one key "lock"
HELD = {"l1": "a" * 16, "l2": "b" * 16}  # the seeded leases: l1 expired 1 s ago
SEEDED_IDS = ["r1", "r2", "d1", "d2", "l1", "l2", "x1", "gone"]


# -- each ARGV entry's domain, as the headers document it ------------------------------------

@dataclass(frozen=True)
class Int:
    """An integer in [low, high], sent as its canonical decimal text."""

    low: int
    high: int = MAX_INT

    def valid(self) -> st.SearchStrategy[str]:
        edges = st.sampled_from(sorted({self.low, self.high, min(self.low + 1, self.high)}))
        near = st.integers(self.low, min(self.high, max(self.low, 0) + 2 * NOW))
        return st.one_of(edges, near).map(str)

    def typical(self) -> str:
        return str(max(self.low, 1))

    def invalid(self) -> list[str]:
        wrong = ["", " ", "abc", "1.5", "1e3", "1E3", "0x10", "inf", "-inf", "nan", "NaN",
                 "+1", " 1", "1 ", "1\n", "01", "007", "-0", "--1", "1-", "\u0661",
                 str(MAX_INT + 1), "9" * 40, "-" + "9" * 40, str(self.low - 1)]
        if self.high < MAX_INT:
            wrong.append(str(self.high + 1))
        return wrong


@dataclass(frozen=True)
class Token:
    """A lease token: exactly 16 hex digits."""

    def valid(self) -> st.SearchStrategy[str]:
        return st.one_of(st.sampled_from(sorted(HELD.values())), hex_token())

    def typical(self) -> str:
        return HELD["l2"]

    def invalid(self) -> list[str]:
        return ["", "abc", "a" * 15, "a" * 17, "g" * 16, "a" * 15 + " ", " " + "a" * 15,
                "a" * 15 + ":", "é" * 8]


@dataclass(frozen=True)
class Text:
    """Any string; ``nonempty``: any but ""."""

    nonempty: bool = False

    def valid(self) -> st.SearchStrategy[str]:
        return st.one_of(st.sampled_from(SEEDED_IDS), st.text(min_size=1, max_size=12))

    def typical(self) -> str:
        return "l2"

    def invalid(self) -> list[str]:
        return [""] if self.nonempty else []


@dataclass(frozen=True)
class Due:
    """enqueue's due: a delay in ms, or "@" and a time in ms since the epoch."""

    def valid(self) -> st.SearchStrategy[str]:
        return st.one_of(Int(0).valid(), Int(0).valid().map(lambda ms: "@" + ms))

    def typical(self) -> str:
        return "0"

    def invalid(self) -> list[str]:
        return [*Int(0).invalid(), *("@" + wrong for wrong in Int(0).invalid()), "@", "@@1"]


Domain = Int | Token | Text | Due

# By (script, entry), else by entry name alone.
DOMAINS: dict[tuple[str, str] | str, Domain] = {
    "visibility_ms": Int(1),
    "max_attempts": Int(1),
    "sweep_limit": Int(1, MAX_BATCH),
    "count": Int(0),
    "due": Due(),
    ("enqueue", "max_attempts"): Int(0),
    ("schedule_claim", "max_attempts"): Int(0),
    ("schedule_claim", "name"): Text(nonempty=True),
    "expected_ms": Int(0),
    "next_ms": Int(2),  # after expected_ms, whose typical value is 1
    ("schedules", "limit"): Int(1, 1000),
    "id_prefix": Text(),
    "backoff_ms": Int(0),
    "error": Text(),
    "retryable": Int(0, 1),
    "ttl_ms": Int(1),
    "offset": Int(0),
    "min_age_ms": Int(0),
    "max_age_ms": Int(-1),
    "max_redrives": Int(-1),
    "keep_ms": Int(0),
    "keep_count": Int(0),
    ("peek_dead", "limit"): Int(1),
    ("clear", "limit"): Int(1, MAX_BATCH),
    ("job_info", "id"): Text(nonempty=True),
    ("result", "id"): Text(nonempty=True),
    ("purge", "limit"): Int(1, MAX_BATCH),
    ("redrive", "limit"): Int(1, MAX_BATCH),
    ("reserve", "token"): Token(),
    "max_active": Int(0),
    "rate_starts": Int(0),
    "rate_window_ms": Int(0),
    "group_concurrency": Int(0),
    "group_rate_starts": Int(0),
    "group_rate_window_ms": Int(0),
    ("pause", "pause"): Int(0, 1),
    ("pause", "group"): Text(),
    ("fail", "token"): Token(),
    ("fail", "id"): Text(nonempty=True),
    ("lock", "token"): Text(nonempty=True),
    ("unlock", "token"): Text(nonempty=True),
    "events_level": Int(1, 2),  # the trailing pair sent with the events key (events.lua)
    "events_maxlen": Int(1),
}
# The variadic tails, by their entries' names.
# (enqueue: n records, then 0 or n ids, then max_ready, optional, after the ids; its priority
# and group come only with its optional keys, a ranked add, which keys_of does not send: its
# calls here are plain adds)
PAIRS, IDS = ("id...", "token..."), ("id...",)
RECORDS = ("record...", "id...", "priority...", "group...", "max_ready...")
TRIPLES = ("id...", "token...", "result...")  # complete: each lease with its result
MAX_READY = Int(1)
RUNS, NAMED = ("id...", "record..."), ("name...",)  # schedule_claim's runs, schedules' names
COUNTED = {"enqueue": "n"}  # a fixed entry that counts the tail's records
# A fixed entry that must be greater than another's value (its domain's own bounds aside).
AFTER = {("schedule_claim", "next_ms"): "expected_ms"}
NEEDS_IDS = {"cancel"}  # scripts whose id tail is the whole call: at least one id


def fixed(script: Script) -> tuple[str, ...]:
    return script.argv[: script.argc]


def tail(script: Script) -> tuple[str, ...]:
    return script.argv[script.argc :]


def domain(script: Script, entry: str) -> Domain:
    return DOMAINS.get((script.name, entry)) or DOMAINS[entry]


def hex_token() -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=16, max_size=16)


def keys_of(script: Script) -> list[str]:
    return KEYS.keys(script.required_parts)


# -- the seeded queue and what "writes nothing" means ------------------------------------------

def call(client: redis.Redis, script: Script, args: Sequence[str | bytes]) -> Any:
    keys = keys_of(script)
    try:
        return client.evalsha(script.sha, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        client.script_load(script.source)
        return client.evalsha(script.sha, len(keys), *keys, *args)


def ok(client: redis.Redis, name: str, *args: str | int, at: int) -> Any:
    """Run a script as if the server's clock said ``at`` (ms): its test-only variant."""
    script = SEEDING[name]
    clock = [str(at)] if script.reads_clock else []
    reply = call(client, script, [*clock, *(str(a) for a in args)])
    assert reply[0] == Code.OK, (name, args, reply)
    return reply


NO_LIMITS = (0,) * 6  # reserve's flow-control ARGV: no limit


def seed(client: redis.Redis) -> None:
    """A queue with a job in every state, through its own scripts: x1 dead (with its error
    and history), l1 leased under HELD["l1"] and expired, l2 leased and live, r1 and r2
    ready, d1 delayed and due, d2 delayed; a held item lock."""
    client.flushall()
    seconds, micros = client.time()
    now = int(seconds) * 1000 + int(micros) // 1000  # the server's, which the fuzzed calls read
    ok(client, "enqueue", 0, "", 1, 0, "record x1", "x1", at=now)
    ok(client, "reserve", 1, 1000, 1, 1000, "c" * 16, *NO_LIMITS, at=now - 60_000)
    ok(client, "fail", "x1", "c" * 16, 1, 0, '{"type": "E"}', 1, at=now - 60_000)
    ok(client, "enqueue", 0, "", 1, 0, "record l2", "l2", at=now)
    ok(client, "reserve", 1, 60_000, 3, 1000, HELD["l2"], *NO_LIMITS, at=now - 100)
    ok(client, "enqueue", 0, "", 1, 0, "record l1", "l1", at=now)
    ok(client, "reserve", 1, 30_000, 3, 1000, HELD["l1"], *NO_LIMITS, at=now - 31_000)
    ok(client, "enqueue", 0, "", 2, 0, "record r1", "record r2", "r1", "r2", at=now)
    ok(client, "enqueue", 1, "", 1, 0, "record d1", "d1", at=now - 2)
    ok(client, "enqueue", 60_000, "", 1, 0, "record d2", "d2", at=now)
    client.set(LOCK_KEY, "holder", px=60_000)


def changes(client: redis.Redis) -> int:
    """Redis's count of writes since the last save (the tests' servers never save)."""
    return int(client.info("persistence")["rdb_changes_since_last_save"])


def snapshot(client: redis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key: its DUMP, and whether it expires."""
    return {key: (client.dump(key), client.pttl(key) >= 0)
            for key in sorted(cast(list[bytes], client.keys("*")))}


@dataclass
class Before:
    changes: int
    keys: dict[bytes, tuple[bytes | None, bool]]

    @classmethod
    def take(cls, client: redis.Redis) -> Before:
        return cls(changes(client), snapshot(client))

    def unchanged(self, client: redis.Redis, what: object) -> None:
        assert snapshot(client) == self.keys, f"{what} changed the keyspace"
        assert changes(client) == self.changes, f"{what} wrote (a no-op write counts too)"


# -- the ARGV strategies -----------------------------------------------------------------------

@st.composite
def valid_argv(draw: st.DrawFn, script: Script) -> list[str | bytes]:
    """ARGV a caller may send: each fixed entry within its domain, a well-formed tail."""
    args: list[str | bytes] = [draw(domain(script, e).valid()) if e not in COUNTED.values()
                               else "" for e in fixed(script)]
    for (name, later), earlier in AFTER.items():
        if name == script.name:
            i, j = fixed(script).index(later), fixed(script).index(earlier)
            base = min(int(args[j]), MAX_INT - 1)
            args[j] = str(base)
            args[i] = str(draw(st.integers(base + 1, min(MAX_INT, base + 2 * NOW))))
    shape = tail(script)
    if shape == PAIRS:
        for _ in range(draw(st.integers(1, 4))):
            args += [draw(st.sampled_from(SEEDED_IDS)), draw(st.one_of(
                Token().valid(), st.sampled_from(Token().invalid())))]
    elif shape == TRIPLES:
        for _ in range(draw(st.integers(1, 4))):
            args += [draw(st.sampled_from(SEEDED_IDS)), draw(st.one_of(
                Token().valid(), st.sampled_from(Token().invalid()))),
                draw(st.one_of(st.just(b""), st.binary(min_size=1, max_size=16)))]
    elif shape == RECORDS:
        n = draw(st.integers(1, 3))
        args[fixed(script).index(COUNTED[script.name])] = str(n)
        args += [draw(st.binary(max_size=16)) for _ in range(n)]
        if draw(st.booleans()):
            args += [draw(st.one_of(st.just(""), Text().valid())) for _ in range(n)]
            if draw(st.booleans()):
                args.append(draw(MAX_READY.valid()))
    elif shape in (IDS, NAMED):
        args += draw(st.lists(Text().valid(), min_size=script.name in NEEDS_IDS, max_size=4))
    elif shape == RUNS:
        for _ in range(draw(st.integers(0, 3))):
            args += [draw(Text().valid()), draw(st.binary(max_size=16))]
    else:
        assert shape == (), f"{script.name}: a tail of unknown shape {shape}"
    return args


def typical_argv(script: Script) -> list[str | bytes]:
    """One valid ARGV: each fixed entry's typical value, the shortest well-formed tail."""
    args: list[str | bytes] = [domain(script, e).typical() if e not in COUNTED.values()
                               else "1" for e in fixed(script)]
    shape = tail(script)
    return args + (["l2", HELD["l2"]] if shape == PAIRS else
                   ["l2", HELD["l2"], ""] if shape == TRIPLES else
                   ["record"] if shape == RECORDS else
                   ["l2"] if script.name in NEEDS_IDS else [])


def checked_entries(script: Script) -> list[int]:
    """Positions (0-based) of the fixed entries that have invalid values."""
    return [i for i, e in enumerate(fixed(script))
            if e not in COUNTED.values() and domain(script, e).invalid()]


def invalid(script: Script, i: int, args: Sequence[str | bytes]) -> list[str]:
    """Values outside fixed entry i's domain in this call: its own invalid values, and for an
    entry that must come after another (``AFTER``), none past that one's value but its value
    itself."""
    entry = fixed(script)[i]
    wrong = domain(script, entry).invalid()
    earlier = AFTER.get((script.name, entry))
    if earlier is None:
        return wrong
    floor = int(args[fixed(script).index(earlier)])
    return [*(w for w in wrong if not (re.fullmatch(r"0|-?[1-9]\d*", w) and int(w) > floor)),
            str(floor)]


@st.composite
def one_bad_argument(draw: st.DrawFn, script: Script) -> tuple[list[str | bytes], str]:
    """A valid ARGV with exactly one thing wrong, and what it is ("ARGV[i]" when the script
    must name that entry)."""
    args = draw(valid_argv(script))
    ways = ["truncated"] if script.argv else []
    ways += ["entry"] if checked_entries(script) else []
    shape = tail(script)
    ways += ["odd pairs", "no pairs"] if shape in (PAIRS, TRIPLES) else []
    ways += ["n too big", "n wrong", "max_ready"] if shape == RECORDS else []
    way = draw(st.sampled_from(ways))
    argc = script.argc
    if way == "entry":
        i = draw(st.sampled_from(checked_entries(script)))
        args[i] = draw(st.sampled_from(invalid(script, i, args)))
        return args, f"ARGV[{i + 1}]"
    if way == "truncated":
        keep = draw(st.integers(0, argc - 1)) if argc else 0
        return args[:keep], "truncated"
    if way == "odd pairs":
        return args[:-1], way
    if way == "no pairs":
        return args[:argc], way
    n = fixed(script).index(COUNTED[script.name])
    if way == "max_ready":  # after n ids, an invalid limit
        count = int(args[n])
        args = [*args[: argc + count], *([""] * count),
                draw(st.sampled_from(MAX_READY.invalid()))]
        return args, f"ARGV[{argc + 2 * count + 1}]"
    if way == "n too big":  # more records than all the values given
        args[n] = str(len(args) - argc + 1)
    else:
        args[n] = draw(st.sampled_from(Int(1).invalid()))
    return args, way


GARBAGE = st.one_of(
    st.sampled_from([*Int(-1).invalid(), *Token().invalid(), "0", "1", "-1", str(MAX_INT),
                     str(MAX_BATCH), *SEEDED_IDS, *HELD.values()]),
    st.integers(-2**64, 2**64).map(str),
    st.text(max_size=20),
    st.binary(max_size=20),
)


def near(value: str | bytes) -> list[str | bytes]:
    """Values a hand-typed argument drifts to: padded, signed, zero-led, scaled, cut."""
    v = value.decode(errors="replace") if isinstance(value, bytes) else value
    return [f"0{v}", f"00{v}", f"-{v}", f"+{v}", f" {v}", f"{v} ", f"{v}.0", f"{v}e0",
            f"{v}0", v[:-1], v * 2]


@st.composite
def any_argv(draw: st.DrawFn, script: Script) -> list[str | bytes]:
    """Anything: garbage of any length, or a valid ARGV with one to three changes: a fixed
    entry drifted (``near``), an entry swapped for garbage, dropped, or garbage added."""
    if draw(st.integers(0, 2)) == 0:
        return draw(st.lists(GARBAGE, max_size=12))
    args = draw(valid_argv(script))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drift", "drift", "swap", "drop", "insert"]))
        if action == "drift" and min(script.argc, len(args)):
            at = draw(st.integers(0, min(script.argc, len(args)) - 1))
            args[at] = draw(st.sampled_from(near(args[at])))
        elif action in ("swap", "drop") and args:
            at = draw(st.integers(0, len(args) - 1))
            if action == "swap":
                args[at] = draw(GARBAGE)
            else:
                del args[at]
        else:
            args.insert(draw(st.integers(0, len(args))), draw(GARBAGE))
    return args


# -- the properties ----------------------------------------------------------------------------

NAMES = sorted(SCRIPTS)
WITH_ARGV = [n for n in NAMES if SCRIPTS[n].argv]


def test_every_argv_entry_has_a_domain() -> None:
    """A script that grows an ARGV entry must say here what it accepts."""
    missing = [(s.name, e) for s in SCRIPTS.values() for e in (*fixed(s), *s.trailing, *s.kept)
               if e not in COUNTED.values() and (s.name, e) not in DOMAINS and e not in DOMAINS]
    assert missing == []
    assert {tail(s) for s in SCRIPTS.values()} <= {PAIRS, TRIPLES, RECORDS, IDS, RUNS, NAMED, ()}


@pytest.mark.parametrize("name", WITH_ARGV)
def test_every_invalid_value_of_every_entry_is_refused_and_writes_nothing(
    client: redis.Redis, name: str
) -> None:
    """The deterministic sweep under the fuzz: each checked entry of a valid call, in turn,
    set to each value outside its domain, and each call cut short."""
    script = SCRIPTS[name]
    valid = typical_argv(script)
    seed(client)
    before = Before.take(client)
    calls = [(valid[:i], "truncated") for i in range(script.argc)]
    for i in checked_entries(script):
        for wrong in domain(script, fixed(script)[i]).invalid():
            calls.append(([*valid[:i], wrong, *valid[i + 1:]], f"ARGV[{i + 1}]"))
    for args, what in calls:
        reply = call(client, script, args)
        assert reply[0] == Code.BAD_ARGUMENT, (args, reply)
        assert reply[1].startswith(what.encode()) or what == "truncated", (what, reply)
    before.unchanged(client, f"{len(calls)} refused calls of {name}")
    assert call(client, script, valid)[0] != Code.BAD_ARGUMENT, valid


@pytest.mark.parametrize("name", WITH_ARGV)
def test_an_argument_outside_its_domain_is_refused_and_writes_nothing(
    client: redis.Redis, name: str
) -> None:
    script = SCRIPTS[name]

    @FUZZ
    @given(case=one_bad_argument(script))
    def refused(case: tuple[list[str | bytes], str]) -> None:
        args, what = case
        seed(client)
        before = Before.take(client)
        reply = call(client, script, args)
        assert reply[0] == Code.BAD_ARGUMENT, (what, args, reply)
        assert isinstance(reply[1], bytes) and reply[1], reply
        if what.startswith("ARGV["):
            assert reply[1].startswith(what.encode()), (what, args, reply)
        before.unchanged(client, (name, args))

    refused()


@pytest.mark.parametrize("name", NAMES)
def test_any_argv_gets_a_reply_code_never_a_lua_error(client: redis.Redis, name: str) -> None:
    script = SCRIPTS[name]

    @FUZZ
    @given(args=any_argv(script))
    def answered(args: list[str | bytes]) -> None:
        seed(client)
        before = Before.take(client)
        try:
            reply = call(client, script, args)
        except redis.exceptions.ResponseError as exc:
            pytest.fail(f"{name} {args!r}: a Lua runtime error: {exc}")
        if isinstance(reply, bytes):  # enqueue's plain add: its id alone, as the header says
            assert name == "enqueue" and plain_add(args), (args, reply)
            return
        assert isinstance(reply, list) and reply and reply[0] in set(Code), reply
        if reply[0] in (Code.BAD_ARGUMENT, Code.QUEUE_FULL):
            before.unchanged(client, (name, args))

    answered()


def plain_add(args: list[str | bytes]) -> bool:
    """Whether enqueue's ARGV are a plain add's: one record, no id, no delay, no own limit."""
    return (len(args) == 5 and args[0] in ("0", b"0") and args[2] in ("1", b"1")
            and args[3] in ("0", b"0"))


@pytest.mark.parametrize("name", ["ack", "release", "extend", "fail"])
def test_a_token_that_holds_no_lease_settles_nothing(client: redis.Redis, name: str) -> None:
    script = SCRIPTS[name]
    stale = st.one_of(hex_token(), st.sampled_from(Token().invalid())).filter(
        lambda t: t.lower() not in HELD.values())
    # A held token with another job's id holds nothing either.
    pair = st.one_of(st.tuples(st.sampled_from(SEEDED_IDS), stale),
                     st.sampled_from([("l1", HELD["l2"]), ("l2", HELD["l1"]),
                                      ("r1", HELD["l1"]), ("x1", HELD["l2"])]))

    @FUZZ
    @given(pairs=st.lists(pair, min_size=1, max_size=4 if name != "fail" else 1),
           data=st.data())
    def settles_nothing(pairs: list[tuple[str, str]], data: st.DataObject) -> None:
        seed(client)
        before = Before.take(client)
        flat = [v for p in pairs for v in p]
        if name == "fail":
            [(job_id, token)] = pairs
            args = [job_id, token, "3", "0", "{}", data.draw(st.sampled_from("01"))]
            reply = call(client, script, args)
            shaped = len(token) == 16 and all(c in "0123456789abcdefABCDEF" for c in token)
            expected = Code.LEASE_LOST if shaped else Code.BAD_ARGUMENT
            assert reply[0] == expected, (args, reply)
        elif name == "extend":
            reply = call(client, script, ["30000", *flat])
            assert reply[0] == Code.OK and reply[2] == 0, reply
            assert reply[3:] == [0, *(p[0].encode() for p in pairs)]
        else:
            reply = call(client, script, flat)
            assert reply[:2] == [Code.OK, 0] and reply[2:] == [p[0].encode() for p in pairs]
        before.unchanged(client, (name, pairs))

    settles_nothing()


# -- the events stream: the last key, with the level and the bound as the last two ARGV ---------

WITH_EVENTS = [n for n in NAMES if SCRIPTS[n].trailing]


def call_with_events(client: redis.Redis, script: Script, args: Sequence[str | bytes]) -> Any:
    """A call that sends the events stream: the required keys, then the stream."""
    keys = [*keys_of(script), KEYS.key("events")]
    return client.eval(script.source, len(keys), *keys, *args)


@pytest.mark.parametrize("name", WITH_EVENTS)
def test_the_events_arguments_are_checked_before_any_write(client: redis.Redis,
                                                           name: str) -> None:
    """Sent the stream, a script takes the last two ARGV as the level and the bound: a value
    outside either's domain (or none at all) is refused naming it, and writes nothing; valid
    ones leave the rest of the call as a call without events reads it."""
    script = SCRIPTS[name]
    valid = typical_argv(script)
    seed(client)
    before = Before.take(client)
    calls: list[tuple[list[str | bytes], str]] = []
    # (enqueue: a plain add's ARGV too, which with valid events arguments takes its fast path)
    shapes: list[list[str | bytes]] = [valid]
    if name == "enqueue":
        shapes.append(["0", "", "1", "0", "record"])
    for args in shapes:
        n = len(args) + 2
        calls += [([*args, wrong, "100"], f"ARGV[{n - 1}]") for wrong in Int(1, 2).invalid()]
        calls += [([*args, "2", wrong], f"ARGV[{n}]") for wrong in Int(1).invalid()]
    for args, what in calls:
        reply = call_with_events(client, script, args)
        assert reply[0] == Code.BAD_ARGUMENT, (args, reply)
        assert reply[1].startswith(what.encode()), (what, reply)
    before.unchanged(client, f"{len(calls)} refused calls of {name} with events")
    reply = call_with_events(client, script, [*valid, "2", "100"])
    assert isinstance(reply, bytes) or reply[0] != Code.BAD_ARGUMENT, (valid, reply)


@pytest.mark.parametrize("name", WITH_EVENTS)
def test_any_argv_with_the_events_stream_gets_a_reply_code(client: redis.Redis,
                                                           name: str) -> None:
    script = SCRIPTS[name]

    @FUZZ
    @given(args=any_argv(script), level=st.sampled_from(["1", "2", "0", "", "x"]),
           maxlen=st.one_of(Int(1).valid(), st.sampled_from(Int(1).invalid())))
    def answered(args: list[str | bytes], level: str, maxlen: str) -> None:
        seed(client)
        before = Before.take(client)
        try:
            reply = call_with_events(client, script, [*args, level, maxlen])
        except redis.exceptions.ResponseError as exc:
            pytest.fail(f"{name} {args!r}: a Lua runtime error: {exc}")
        if isinstance(reply, bytes):  # enqueue's plain add
            return
        assert isinstance(reply, list) and reply and reply[0] in set(Code), reply
        if reply[0] in (Code.BAD_ARGUMENT, Code.QUEUE_FULL):
            before.unchanged(client, (name, args))

    answered()


# -- the kept keys (keep_cancelled.lua): three keys before the stream, two bounds before its ARGV -

WITH_KEPT = [n for n in NAMES if SCRIPTS[n].kept]


@pytest.mark.parametrize("events", [False, True], ids=["alone", "with-events"])
@pytest.mark.parametrize("name", WITH_KEPT)
def test_the_kept_arguments_are_checked_before_any_write(client: redis.Redis, name: str,
                                                         events: bool) -> None:
    """Sent the kept keys, a script takes the two ARGV entries before the events arguments (the
    last two without them) as keep_ms and keep_count: a value outside their domain, or a wrong
    number of KEYS, is refused and writes nothing; valid ones keep what the call cancels."""
    script = SCRIPTS[name]
    valid = typical_argv(script)
    stream = [KEYS.key("events")] if events else []
    level = ["2", "100"] if events else []
    keys = [*keys_of(script), *KEYS.keys(("completed", "kept", "results")), *stream]
    seed(client)
    before = Before.take(client)
    n = len(valid) + 2
    calls = [(keys, [*valid, wrong, "10", *level], f"ARGV[{n - 1}] keep_ms")
             for wrong in Int(0).invalid()]
    calls += [(keys, [*valid, "0", wrong, *level], f"ARGV[{n}] keep_count")
              for wrong in Int(0).invalid()]
    # (two of the three kept keys: no count of KEYS a call may send)
    calls += [([*keys_of(script), *KEYS.keys(("completed", "kept"))],
               [*valid, "0", "10", *level], "KEYS must be")]
    for sent, args, what in calls:
        reply: Any = client.eval(script.source, len(sent), *sent, *args)
        assert reply[0] == Code.BAD_ARGUMENT, (args, reply)
        assert reply[1].startswith(what.encode()), (what, reply)
    before.unchanged(client, f"{len(calls)} refused calls of {name} with the kept keys")
    args = ["r1", "l2"] if name == "cancel" else ["1000"]
    reply = client.eval(script.source, len(keys), *keys, *args, "0", "10", *level)
    assert reply[0] == Code.OK, reply
    kept = cast(dict[bytes, bytes], client.hgetall(KEYS.key("kept")))
    assert kept and all(value.startswith(b"c:") for value in kept.values()), kept
    assert set(kept) == set(cast(list[bytes], client.zrange(KEYS.key("completed"), 0, -1)))
