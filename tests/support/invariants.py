"""The invariants of a queue's keys, read from Redis: each job in exactly one state (ready,
delayed, leased, dead); nothing left behind for a job that is gone (no record, history,
error or lease of an acked or purged job: the records are exactly the jobs in some state);
counts.lua's answer equal to the keys' sizes; no lease left at the settling mark; at most one
wake-up marker. Flow control (lua/includes/ranked.lua, arm.lua): a ready ranked job's member
agrees with its attrs entry, attrs only for jobs that exist, each group's ready and active counts
equal what ranked and leased hold, and the round robin holds exactly the groups that may lease
(a group with jobs ready, not paused, not capped, not waiting out its rate limit is in it).

``assert_consistent(client, queue)`` checks one queue object's partitions (the state-machine
tests call it after each transition); ``database_problems(client)`` finds every queue in the
deployment by its key names and checks them all (``tests/conftest.py`` runs it after every
test that used the ``client`` fixture). Each queue (partition) is read in one MULTI, so a
worker still settling cannot tear the snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from pyqcore import BaseQueue
from pyqcore.core.calls import text
from pyqcore.scripts import load_scripts
from pyqcore.sync.driver import Client

TOKEN_LENGTH = 16  # a lease member is "<16 hex>:<id>" (lua/includes/lease.lua)
STATES = ("ready", "delayed", "leased", "dead")
FLOW = ("attrs", "ranked", "flow", "groups", "gwait")
PARTS = (*STATES, "jobs", "meta", "errors", "wake", *FLOW)
RANKED = re.compile(r"^([^ ]*) (\d{4}) (\d{16}) (.*)$", re.S)  # "<group> <band> <seq> <id>"
KEPT = ("completed", "kept", "results")  # finished jobs kept (keep_completed): no state
# A kept value: "attempts:redrives:" and the record, "c:" in front for a cancelled job
# (lua/includes/keep_cancelled.lua).
KEPT_VALUE = re.compile(rb"^(c:)?\d+:\d+:", re.S)
# A queue's key: "<prefix>:{<queue or queue#i>}:<part>"; locks, stats and registry keys aside.
QUEUE_KEY = re.compile(rb"^(?P<base>.+:\{[^{}]+\}):(?P<part>" + "|".join((*PARTS, *KEPT)).encode()
                       + rb")$")
COUNTS = load_scripts()["counts"]
EVENTS_KEY = re.compile(rb"^.+:\{[^{}]+\}:events$")  # a partition's events stream
EVENTS = {b"added", b"started", b"completed", b"retried", b"dead", b"cancelled", b"redriven",
          b"purged"}


@dataclass
class Partition:
    """What one partition's keys hold, read at one instant."""

    name: str  # "<prefix>:{<tag>}", how the messages name it
    states: dict[str, dict[str, float]] = field(default_factory=dict)  # ready: its position
    records: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)
    errors: set[str] = field(default_factory=set)
    counted: dict[str, int] = field(default_factory=dict)  # counts.lua's answer
    kept: dict[str, set[str]] = field(default_factory=dict)  # completed, kept, results ids
    cancelled: set[str] = field(default_factory=set)  # the kept ids marked cancelled
    problems: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)  # ranked jobs: "<priority> <group>"

    def check(self) -> list[str]:
        """Every invariant this partition breaks, as readable lines naming the ids."""
        found = list(self.problems)
        placed: dict[str, str] = {}
        for state, ids in self.states.items():
            for job_id in ids:
                if job_id in placed:
                    found.append(f"{self.name}: job {job_id} is {placed[job_id]} and {state}")
                placed[job_id] = state
        if stray := sorted(self.records - set(placed)):
            found.append(f"{self.name}:jobs: {len(stray)} records of jobs in no state "
                         f"(finished jobs left behind?): {stray[:20]}")
        if missing := sorted(set(placed) - self.records):
            found.append(f"{self.name}: {len(missing)} jobs in a state without a record: "
                         f"{[(i, placed[i]) for i in missing[:20]]}")
        if stray := sorted(self.history - self.records):
            found.append(f"{self.name}:meta: history of {len(stray)} jobs that are gone: "
                         f"{stray[:20]}")
        if stray := sorted(self.errors - self.records):
            found.append(f"{self.name}:errors: errors of {len(stray)} jobs that are gone: "
                         f"{stray[:20]}")
        if self.kept and self.kept["kept"] != self.kept["completed"]:
            found.append(f"{self.name}: kept completed jobs without both a time and an entry: "
                         f"{sorted(self.kept['kept'] ^ self.kept['completed'])[:20]}")
        if stray := sorted(self.kept.get("results", set()) - self.kept.get("completed", set())):
            found.append(f"{self.name}:results: results of {len(stray)} jobs not kept: "
                         f"{stray[:20]}")
        if stray := sorted(self.kept.get("results", set()) & self.cancelled):
            found.append(f"{self.name}:results: results of {len(stray)} jobs kept as "
                         f"cancelled: {stray[:20]}")
        if stray := sorted(set(self.attrs) - self.records):
            found.append(f"{self.name}:attrs: attrs of {len(stray)} jobs that are gone: "
                         f"{stray[:20]}")
        sizes = {state: len(ids) for state, ids in self.states.items()}
        if self.counted != sizes:
            found.append(f"{self.name}: counts.lua says {self.counted}, the keys hold {sizes}")
        return found


def read_partition(node: Any, base: str) -> Partition:
    """One partition's keys (``base`` is "<prefix>:{<tag>}"), in one MULTI on ``node`` (the
    server, or the cluster node that holds the tag)."""
    key = {part: f"{base}:{part}" for part in PARTS}
    pipe = node.pipeline(transaction=True)
    pipe.lrange(key["ready"], 0, -1)
    for name in ("delayed", "leased", "dead"):
        pipe.zrange(key[name], 0, -1, withscores=True)
    for name in ("jobs", "meta", "errors"):
        pipe.hkeys(key[name])
    pipe.llen(key["wake"])
    pipe.zrange(f"{base}:completed", 0, -1)
    pipe.hgetall(f"{base}:kept")
    pipe.hkeys(f"{base}:results")
    pipe.hgetall(key["attrs"])
    pipe.zrange(key["ranked"], 0, -1)
    pipe.hgetall(key["flow"])
    pipe.zrange(key["groups"], 0, -1)
    pipe.zrange(key["gwait"], 0, -1)
    keys = [key[p] for p in COUNTS.key_parts]
    pipe.eval(COUNTS.source, len(keys), *keys)
    found = Partition(base)
    try:
        (ready, delayed, leased, dead, jobs, meta, errors, wake, completed, kept, results, attrs,
         ranked, flow, groups, gwait, counted) = pipe.execute()
    except redis.ResponseError as exc:  # e.g. WRONGTYPE: a key clobbered
        found.problems.append(f"{base}: its keys cannot be read: {exc}")
        return found
    ids = [text(i) for i in ready]
    if len(set(ids)) != len(ids):
        found.problems.append(f"{base}:ready: an id is ready twice: {ids[:50]}")
    leases: dict[str, float] = {}
    for member, score in leased:
        if score == float("inf"):
            continue  # the pin member (reserve.lua), never a lease
        job_id = text(member)[TOKEN_LENGTH + 1:]
        if score < 0:
            found.problems.append(f"{base}:leased: a lease left at the settling mark: "
                                  f"{member!r}")
        if job_id in leases:
            found.problems.append(f"{base}:leased: job {job_id} is leased twice")
        leases[job_id] = float(score)
    found.attrs = {text(k): text(v) for k, v in attrs.items()}
    if listed := [i for i in ids if i in found.attrs]:
        found.problems.append(f"{base}:ready: ranked jobs in the plain list: {listed[:20]}")
    ranked_ids = check_ranked(found, [text(m) for m in ranked])
    ids += ranked_ids
    if len(set(ids)) != len(ids):
        found.problems.append(f"{base}: an id is ready twice (list and ranked): {ids[:50]}")
    check_groups(found, {text(k): text(v) for k, v in flow.items()}, ranked_ids=ranked_ids,
                 leases=leases, turns=[text(g) for g in groups],
                 waiting=[text(g) for g in gwait])
    found.states = {"ready": {job_id: float(i) for i, job_id in enumerate(ids)},
                    "delayed": {text(m): float(s) for m, s in delayed},
                    "leased": leases,
                    "dead": {text(m): float(s) for m, s in dead}}
    found.records = {text(k) for k in jobs}
    found.history = {text(k) for k in meta}
    found.errors = {text(k) for k in errors}
    if wake > 1:
        found.problems.append(f"{base}:wake: {wake} wake-up markers (at most one)")
    found.counted = dict(zip(STATES, counted[1:5], strict=True))
    found.kept = {name: {text(i) for i in ids} for name, ids in
                  (("completed", completed), ("kept", kept), ("results", results))}
    found.cancelled = {text(i) for i, value in kept.items() if value.startswith(b"c:")}
    if bad := sorted(text(i) for i, value in kept.items() if not KEPT_VALUE.match(value)):
        found.problems.append(f"{base}:kept: entries of the wrong shape: {bad[:20]}")
    return found


def check_ranked(found: Partition, members: list[str]) -> list[str]:
    """The ids of the ranked members, in order; a member that disagrees with its job's attrs
    entry (group, priority) is a problem."""
    ids = []
    for member in members:
        match = RANKED.match(member)
        if not match:
            found.problems.append(f"{found.name}:ranked: a member of the wrong shape: {member!r}")
            continue
        group, band, _, job_id = match.groups()
        ids.append(job_id)
        expected = f"{1000 - int(band)} {group}"
        if found.attrs.get(job_id) != expected:
            found.problems.append(f"{found.name}:ranked: {member!r} but its attrs say "
                                  f"{found.attrs.get(job_id)!r}")
    return ids


def check_groups(found: Partition, flow: dict[str, str], *, ranked_ids: list[str],
                 leases: dict[str, float], turns: list[str], waiting: list[str]) -> None:
    """Each group's counts in the flow hash against ranked and leased, and the round robin
    (groups) and gwait against the groups that may lease."""
    ready: dict[str, int] = {}
    active: dict[str, int] = {}
    for job_id in ranked_ids:
        group = found.attrs.get(job_id, " ").split(" ", 1)[1]
        if group:
            ready[group] = ready.get(group, 0) + 1
    for job_id in leases:
        group = found.attrs.get(job_id, "0 ").split(" ", 1)[1]
        if group:
            active[group] = active.get(group, 0) + 1
    counted = {kind: {f.split(" ", 1)[1]: int(v) for f, v in flow.items()
                      if f.startswith(kind + " ")} for kind in ("ready", "active")}
    if counted["ready"] != ready:
        found.problems.append(f"{found.name}:flow: ready counts {counted['ready']}, ranked "
                              f"holds {ready}")
    if counted["active"] != active:
        found.problems.append(f"{found.name}:flow: active counts {counted['active']}, leased "
                              f"holds {active}")
    paused = {f.split(" ", 1)[1] for f in flow if f.startswith("paused ")}
    capped = {f.split(" ", 1)[1] for f in flow if f.startswith("capped ")}
    waited = [g for g in capped if flow[f"capped {g}"] == "1"]  # "0": capped with none ready
    if int(flow.get("capped", 0)) != len(waited):
        found.problems.append(f"{found.name}:flow: 'capped' says {flow.get('capped')}, "
                              f"{len(waited)} groups are capped with jobs waiting")
    if both := set(turns) & set(waiting):
        found.problems.append(f"{found.name}: groups in the round robin and in gwait: {both}")
    held = (set(turns) - {""}) & (paused | capped | {g for g in turns if not ready.get(g)})
    if held:
        found.problems.append(f"{found.name}:groups: groups that may not lease are in the "
                              f"round robin: {sorted(held)}")
    if left := sorted(set(ready) - paused - capped - set(turns) - set(waiting)):
        found.problems.append(f"{found.name}: groups with jobs ready are out of the round "
                              f"robin: {left}")


def primaries(client: Client) -> list[redis.Redis]:
    """A plain client per primary: the server itself, or every primary of the cluster."""
    if isinstance(client, RedisCluster):
        nodes = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(node) for node in nodes]
    return [client]


def database_problems(client: Client) -> list[str]:
    """Every invariant any queue in the deployment breaks (found by its keys' names)."""
    found: list[str] = []
    for node in primaries(client):
        bases: set[str] = set()
        for key in cast(list[bytes], node.keys("*:{*}:*")):
            match = QUEUE_KEY.match(key if isinstance(key, bytes) else key.encode())
            if match:
                bases.add(match.group("base").decode(errors="replace"))
            elif EVENTS_KEY.match(key):
                found += events_problems(node, key)
        for base in sorted(bases):
            found += read_partition(node, base).check()
    return found


def events_problems(node: Any, key: bytes) -> list[str]:
    """A queue's events stream (lua/includes/events.lua): a STREAM whose entries (its last
    1,000) each have a known event, an id and an attempt >= 0, and nothing else: never a
    payload, an error or a result."""
    name = key.decode(errors="replace")
    if node.type(key) != b"stream":
        return [f"{name}: not a stream"]
    bad = [(entry_id, fields) for entry_id, fields in node.xrevrange(key, count=1000)
           if set(fields) != {b"event", b"id", b"attempt"} or fields[b"event"] not in EVENTS
           or not fields[b"id"] or not fields[b"attempt"].isdigit()]
    return [f"{name}: {len(bad)} malformed entries: {bad[:5]}"] if bad else []


def partitions_of(client: Client, queue: BaseQueue) -> list[Partition]:
    """Each partition of ``queue``, read from the node that holds it."""
    read = []
    for part in queue.core.partitions.parts:
        base = part.keys.key("x")[: -len(":x")]
        node: Any = client
        if isinstance(client, RedisCluster):
            node = client.get_redis_connection(
                client.get_node_from_key(part.keys.key("ready")))  # type: ignore[no-untyped-call]
        read.append(read_partition(node, base))
    return read


def merged(parts: list[Partition]) -> dict[str, dict[str, float]]:
    """The partitions' jobs by state (ready: the position in its partition; delayed: the due
    time; leased: the deadline; dead: when it died, all in ms)."""
    states: dict[str, dict[str, float]] = {state: {} for state in STATES}
    for part in parts:
        for state, ids in part.states.items():
            states[state].update(ids)
    return states


def state_of(client: Client, queue: BaseQueue) -> dict[str, dict[str, float]]:
    """Every job id of every partition of ``queue`` by state (see ``merged``)."""
    return merged(partitions_of(client, queue))


def assert_consistent(client: Client, queue: BaseQueue) -> dict[str, dict[str, float]]:
    """The invariants of ``queue``'s keys (see the module docstring), and ``queue.counts()``
    equal to the keys' sizes; returns ``state_of``."""
    parts = partitions_of(client, queue)
    problems = [line for part in parts for line in part.check()]
    assert not problems, "\n".join(problems)
    states = merged(parts)
    assert queue.counts() == {state: len(ids) for state, ids in states.items()}
    return states
