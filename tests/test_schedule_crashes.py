"""A writer of schedules that dies half-way (pyqcore.core.schedules: crash-safe writes). The
name index and a queue's schedule keys are in different slots on a Cluster, so declaring,
moving and removing a schedule take several round trips: each round trip touches one slot
(so its commands run in order on one server), and the writer is stopped after every prefix
of its commands. After any such crash a scheduler enqueues a run only into the queue the
index names, and declaring the schedule again (an application's restart) or removing it
leaves nothing behind. On one server and a cluster; the flows are the core's, driven here by
the sync driver one command at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.crc import key_slot

from pyqcore import QueueManager
from pyqcore.core.effects import Command, Flow
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_BACKENDS, FakeClock, all_keys

pytestmark = BOTH_BACKENDS

MINUTE = 60


def crash_after(manager: QueueManager, flow: Flow[Any], steps: int) -> bool:
    """Perform the first ``steps`` commands of ``flow`` (a round trip's one at a time) and
    drop it there, as a writer that died; True if it finished first."""
    effect = flow.send(None)
    done = 0
    while True:
        commands = effect if isinstance(effect, list) else [effect]
        if any(isinstance(c, Command) for c in commands):
            slots = {key_slot(c.args[1].encode()) for c in commands}
            assert len(slots) == 1, f"a round trip spans slots: {commands}"
        replies = []
        for command in commands:
            if done == steps:
                flow.close()
                return False
            replies.append(manager.driver.perform(command))
            done += isinstance(command, Command) and command.args[0] != "HGET"
        try:
            effect = flow.send(replies if isinstance(effect, list) else replies[0])
        except StopIteration:
            return True


def queued(client: Client, queue: str) -> int:
    return int(client.llen(f"pyqcore:{{{queue}}}:ready"))


def schedule_keys(client: Client) -> set[Any]:
    return {k for k in all_keys(client) if b"schedule" in k}


WRITES: dict[str, Callable[[QueueManager], Flow[Any]]] = {
    "declare": lambda m: m.core.schedule("tick", "a", "x", every=MINUTE),
    "move": lambda m: m.core.schedule("tick", "b", "x", every=MINUTE),
    "redefine": lambda m: m.core.schedule("tick", "a", "y", every=2 * MINUTE),
    "remove": lambda m: m.core.unschedule("tick"),
}


@pytest.mark.parametrize("write", WRITES)
def test_a_writer_dying_half_way_leaves_nothing_a_scheduler_gets_wrong(
    client: Client, clock: FakeClock, write: str,
) -> None:
    steps = 0
    while True:
        client.flushall()
        manager = QueueManager(client, clock=clock)
        manager.register("a")
        manager.register("b")
        if write != "declare":
            manager.schedule("tick", "a", "x", every=MINUTE)
        finished = crash_after(manager, WRITES[write](manager), steps)
        clock.advance(2 * MINUTE)
        manager.claim_due_schedules()
        named = client.hget("pyqcore:schedules", "tick")
        runs = {q: queued(client, q) for q in "ab"}
        assert all(n == 0 for q, n in runs.items() if named != q.encode()), (steps, runs)
        if write == "remove" or not finished:  # what the application does next time
            manager.unschedule("tick")
            assert schedule_keys(client) == set(), steps
        if finished:
            break
        steps += 1
    assert steps > 1  # it crashed between writes


def test_a_scheduler_leaves_alone_what_the_index_does_not_name(client: Client,
                                                              clock: FakeClock) -> None:
    manager = QueueManager(client, clock=clock)
    manager.register("a")
    manager.schedule("tick", "a", "x", every=MINUTE)
    manager.schedule("orphan", "a", "y", every=MINUTE)
    client.hdel("pyqcore:schedules", "orphan")  # its queue's keys left by an older writer
    clock.advance(MINUTE)
    assert manager.claim_due_schedules().enqueued == 1
    assert [s.name for s in manager.schedules()] == ["tick"]
    client.hset("pyqcore:schedules", "gone", "a")  # an index entry with nothing behind it
    assert [s.name for s in manager.schedules()] == ["tick"]
    assert manager.unschedule("gone") is True
