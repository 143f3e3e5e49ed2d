"""Coalesced adds without Redis (pyqcore.core.coalesce): several callers' add flows stepped by
hand, interleaved as concurrent callers' are, with the enqueue script's documented replies."""

from __future__ import annotations

from asyncio import CancelledError

import pytest

from pyqcore.core.calls import Call
from pyqcore.core.coalesce import Flag
from pyqcore.core.effects import Turn
from pyqcore.core.queue import ADDS_IN_FLIGHT, QueueCore
from pyqcore.errors import AddInterruptedError, ScriptError, SerializationError
from pyqcore.job import decode_record
from pyqcore.serializer import MSGPACK
from pyqcore.settings import QueueSettings
from tests.core.dialog import Dialog, announced


def core(*, batch_size: int = 1000, announce: bool = False, partitions: int = 1) -> QueueCore:
    queue = QueueCore(QueueSettings(name="q", batch_size=batch_size, partitions=partitions),
                      cluster=False)
    queue.announced = not announce
    return queue


def payloads(call: Call[object]) -> list[object]:
    """The payloads an enqueue call carries: ARGV is due, prefix, n, max_attempts, n records[,
    n ids]."""
    n = int(call.args[2])
    return [decode_record(MSGPACK, r)[0] for r in call.args[4 : 4 + n]
            if isinstance(r, bytes)]


def ids_sent(call: Call[object]) -> list[object]:
    n = int(call.args[2])
    return list(call.args[4 + n :])


def busy(queue: QueueCore, *payloads: str) -> list[Dialog]:
    """As many adds as may be in flight at once, each sent alone and not answered yet."""
    adds = [Dialog(queue.add(p)) for p in payloads or [f"busy {i}" for i in range(ADDS_IN_FLIGHT)]]
    assert len(adds) == ADDS_IN_FLIGHT and all(isinstance(a.effect, Call) for a in adds)
    return adds


def waiter(flow: Dialog) -> Flag:
    """The waiter a flow waits on for its turn."""
    assert isinstance(flow.effect, Turn), flow.effect
    assert isinstance(flow.effect.waiter, Flag)
    return flow.effect.waiter


def test_lone_adds_are_one_call_each_and_leave_nothing_behind() -> None:
    queue = core()
    for n in (1, 2, 3):
        add = Dialog(queue.add(f"job {n}"))
        assert payloads(add.script()) == [f"job {n}"] and add.script().args[2] == 1
        add.answer([0, str(n).encode()])
        assert add.result == str(n)


def test_adds_arriving_while_calls_are_in_flight_wait_and_go_together_next() -> None:
    queue = core()
    first, second_call = busy(queue)
    second, third = Dialog(queue.add("b")), Dialog(queue.add("c", job_id="mine"))
    assert not waiter(second).woken and not waiter(third).woken
    first.answer([0, b"1"])
    assert first.result == "1"
    assert waiter(second).woken and not waiter(third).woken  # the first waiter leads
    second.answer(None)
    merged = second.script()
    assert payloads(merged) == ["b", "c"] and ids_sent(merged) == ["", "mine"]
    second.answer([0, b"3"])
    assert second.result == "3" and waiter(third).woken
    third.answer(None)
    assert third.result == "mine"
    second_call.answer([0, b"2"])
    assert second_call.result == "2"
    alone = Dialog(queue.add("d"))  # nothing in flight any more
    assert payloads(alone.script()) == ["d"]


def test_the_first_adds_announce_the_queue_and_the_others_wait() -> None:
    queue = core(announce=True)
    adds = [Dialog(queue.add(p)) for p in ("a", "b")]
    assert all(isinstance(a.effect, list) for a in adds)  # each in flight: announcing
    later = Dialog(queue.add("c"))
    waiter(later)
    adds[0].answer(announced())
    adds[0].answer([0, b"1"])
    later.answer(None)
    assert payloads(later.script()) == ["c"]  # announced by then: no other announcement


def test_a_bad_payload_fails_its_caller_before_it_joins() -> None:
    queue = core()
    first, _ = busy(queue)
    with pytest.raises(SerializationError):  # as the flow starts, before it waits
        Dialog(queue.add(object()))
    second = Dialog(queue.add("b"))
    first.answer([0, b"1"])
    second.answer(None)
    assert payloads(second.script()) == ["b"]


def test_a_failed_call_fails_exactly_the_adds_it_carried() -> None:
    queue = core(batch_size=2)
    first, _ = busy(queue)
    waiting = [Dialog(queue.add(x)) for x in "bcd"]
    first.answer([0, b"1"])
    lead = waiting[0]
    lead.answer(None)
    assert payloads(lead.script()) == ["b", "c"]  # batch_size 2: "d" waits for the next call
    with pytest.raises(ScriptError):
        lead.fail(ScriptError("BAD_ARGUMENT: refused"))
    with pytest.raises(ScriptError):
        waiting[1].answer(None)
    assert waiter(waiting[2]).woken  # the next call's leader
    waiting[2].answer(None)
    assert payloads(waiting[2].script()) == ["d"]
    waiting[2].answer([0, b"2"])
    assert waiting[2].result == "2"


def test_only_adds_due_alike_share_a_call_in_order_of_arrival() -> None:
    queue = core()
    first, second = busy(queue)
    later, now_1, now_2 = (Dialog(queue.add("later", delay=60.0)), Dialog(queue.add("now")),
                           Dialog(queue.add("now too")))
    first.answer([0, b"1"])
    later.answer(None)
    assert payloads(later.script()) == ["later"]
    assert later.script().args[0] == 60_000  # the delay: the script adds the server's now
    assert not waiter(now_1).woken
    second.answer([0, b"2"])  # the other call in flight returns: the next key's turn
    now_1.answer(None)
    assert payloads(now_1.script()) == ["now", "now too"]
    now_1.answer([0, b"3,4"])
    now_2.answer(None)
    assert (now_1.result, now_2.result) == ("3", "4")


def test_each_call_carries_one_partitions_adds_and_all_share_the_calls_in_flight() -> None:
    queue = core(partitions=3)
    first, second = busy(queue)
    waiting = [Dialog(queue.add(f"job {i}", partition_key=f"k{i % 2}")) for i in range(4)]
    first.answer([0, b"0-1"])
    waiting[0].answer(None)
    merged = waiting[0].script()
    assert payloads(merged) == ["job 0", "job 2"]
    assert all(k.startswith("pyqcore:{q#") for k in merged.keys)
    assert not waiter(waiting[1]).woken  # the other partition's: two calls are in flight
    second.answer([0, b"1-1"])
    waiting[1].answer(None)
    other = waiting[1].script()
    assert payloads(other) == ["job 1", "job 3"] and other.keys[0] != merged.keys[0]


def test_a_waiter_that_leaves_before_its_turn_is_not_sent() -> None:
    queue = core()
    first, _ = busy(queue)
    gone, stays = Dialog(queue.add("gone")), Dialog(queue.add("stays"))
    with pytest.raises(CancelledError):  # a cancelled task (or an interrupted thread)
        gone.fail(CancelledError())
    first.answer([0, b"1"])
    stays.answer(None)
    assert payloads(stays.script()) == ["stays"]


def cancel_the_leader(queue: QueueCore, *, in_flight: bool) -> tuple[Dialog, Dialog]:
    """Two adds wait behind the calls in flight; the first of them, handed the lead when one
    returns, is cancelled (before it sends its call, or while the call is in flight). Returns
    the other one, and the add still in flight (a flow dropped unfinished frees its call)."""
    first, second = busy(queue)
    lead, other = Dialog(queue.add("b")), Dialog(queue.add("c"))
    first.answer([0, b"1"])
    assert waiter(lead).woken and not waiter(other).woken
    if in_flight:
        lead.answer(None)
        assert payloads(lead.script()) == ["b", "c"]
    with pytest.raises(CancelledError):
        lead.fail(CancelledError())
    assert waiter(other).woken
    return other, second


def test_a_leader_that_leaves_before_sending_passes_the_lead_on() -> None:
    other, _ = cancel_the_leader(core(), in_flight=False)
    other.answer(None)
    assert payloads(other.script()) == ["c"]


def test_a_leader_interrupted_in_flight_tells_the_others_their_fate_is_unknown() -> None:
    queue = core()
    other, still = cancel_the_leader(queue, in_flight=True)
    with pytest.raises(AddInterruptedError):
        other.answer(None)
    after = Dialog(queue.add("d"))  # the calls in flight stay counted right
    assert payloads(after.script()) == ["d"]
    assert isinstance(Dialog(queue.add("e")).effect, Turn)  # "d" and the other busy one
    assert isinstance(still.effect, Call)
