"""The flow protocol itself (pyqcore.core.effects) and the drivers' shared dispatch
(pyqcore.core.driving), without Redis."""

from __future__ import annotations

from typing import Any

import pytest

from pyqcore.core.driving import Driving
from pyqcore.core.effects import Block, Command, Flow, Pause, flow_of
from pyqcore.core.queue import QueueCore
from pyqcore.settings import QueueSettings
from tests.core.dialog import Steps


def test_steps_send_results_in_and_throw_errors_in_where_the_flow_yielded() -> None:
    def flow() -> Flow[str]:
        first = yield Command(("GET", "a"))
        try:
            yield Command(("GET", "b"))
        except KeyError as exc:
            return f"{first} then {exc.args[0]}"
        return "unreached"

    steps = Steps(flow())
    assert steps.effect.args == ("GET", "a")
    steps.send("x")
    steps.throw(KeyError("gone"))
    assert (steps.running, steps.result) == (False, "x then gone")


def test_a_bare_call_is_a_one_step_flow() -> None:
    queue = QueueCore(QueueSettings(name="q"), cluster=False)
    call = queue.release_lock("item", "t")
    steps = Steps(flow_of(call))
    assert steps.effect is call
    steps.send(True)
    assert steps.result is True


class Recorder(Driving):
    """A driver whose I/O methods only say which one was picked."""

    def call(self, effect: Any) -> str:
        return "call"

    def call_all(self, effect: Any) -> str:
        return "call_all"

    def command(self, effect: Any) -> str:
        return "command"

    def block(self, effect: Any) -> str:
        return "block"

    def pause(self, effect: Any) -> str:
        return "pause"


class FakeClient:
    def get_connection_kwargs(self) -> dict[str, Any]:
        return {"socket_timeout": 5.0}


def test_each_effect_goes_to_its_driver_method_and_others_are_refused() -> None:
    driver = Recorder(FakeClient())
    call = QueueCore(QueueSettings(name="q"), cluster=False).release_lock("i", "t")
    assert [driver.perform(e) for e in (call, [call], Command(("GET", "k")),
                                        Block(["w"], 1.0), Pause(1.0))] == [
        "call", "call_all", "command", "block", "pause"]
    with pytest.raises(TypeError):
        driver.perform(("not", "an", "effect"))
    assert driver.longest_block() == pytest.approx(4.0) and driver.cluster is False
