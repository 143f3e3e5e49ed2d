"""How the public API is declared once for both drivers.

A class of the API (``BaseQueue``, ``QueueManager``, ``DeadLetterQueue``) declares each I/O
method as ``name = operation(Core.flow)``: the flow's parameters, return type and docstring are
the method's. On a class that mixes in ``Blocking`` (the sync package) the method runs the flow
and returns its result; on one that mixes in ``Awaiting`` (``pyqcore.asyncio``) it returns a
coroutine. Either way the instance's ``driver`` performs the effects and its ``core`` builds
the flow, so the two APIs cannot drift: there is one declaration of each method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from pyqcore.core.calls import Call
from pyqcore.core.effects import Flow

P = ParamSpec("P")
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class BlockingDriver(Protocol):
    """A driver whose ``run`` blocks until the operation's result."""

    def run(self, operation: Call[T] | Flow[T]) -> T: ...


class AwaitingDriver(Protocol):
    """A driver whose ``run`` is a coroutine."""

    async def run(self, operation: Call[T] | Flow[T]) -> T: ...


class Blocking:
    """Mixed into the sync API's classes: operations block and return their result."""

    core: Any
    driver: BlockingDriver


class Awaiting:
    """Mixed into the asyncio API's classes: operations return coroutines."""

    core: Any
    driver: AwaitingDriver


class operation(Generic[P, T_co]):
    """A public method made of a core flow (see the module docstring)."""

    def __init__(self, flow: Callable[Concatenate[Any, P], Flow[T_co] | Call[T_co]]) -> None:
        self.flow = flow
        self.lazy = inspect.isgeneratorfunction(flow)  # its flow runs nothing until driven
        self.__doc__ = flow.__doc__
        self.__name__ = flow.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    @overload
    def __get__(self, obj: None, owner: type) -> operation[P, T_co]: ...

    @overload
    def __get__(self, obj: Blocking, owner: type) -> Callable[P, T_co]: ...

    @overload
    def __get__(self, obj: Awaiting, owner: type) -> Callable[P, Coroutine[Any, Any, T_co]]: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        flow = self.flow
        bound: Callable[..., Any]
        if isinstance(obj, Awaiting) and not self.lazy:
            # Built inside the coroutine, so what the flow checks (a payload, say) raises at
            # ``await``, not at the call: ``gather(*(q.add(p) for p in ps))`` fails only the
            # bad one instead of stopping half-way with the others unsent. (A generator
            # function's flow checks nothing before it starts: no extra coroutine layer.)
            async def bound(*args: Any, **kwargs: Any) -> Any:
                return await obj.driver.run(flow(obj.core, *args, **kwargs))
        else:
            def bound(*args: Any, **kwargs: Any) -> Any:
                return obj.driver.run(flow(obj.core, *args, **kwargs))

        bound.__name__ = self.__name__
        bound.__qualname__ = f"{owner.__qualname__}.{self.__name__}"
        bound.__doc__ = self.__doc__
        obj.__dict__[self.__name__] = bound  # later lookups skip the descriptor
        return bound

    def __repr__(self) -> str:
        return f"<operation {self.__name__}: {self.flow.__qualname__}>"
