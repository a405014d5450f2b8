"""The control operations, declared once: the list in :class:`EmulatorControlMethods`.

Each entry names an :class:`~._state.EmulatorState` method, which holds the semantics, the
signature and the docstring. :class:`~.WaveSpeedEmulator` (same process) and
:class:`~.EmulatorControl` (over HTTP) inherit the list and differ only in how ``_control``
delivers a call; the endpoint ``POST /_emulator/control/<name>`` accepts exactly these names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ._state import EmulatorState

P = ParamSpec("P")
R = TypeVar("R")


class _Control(Generic[P, R]):
    """``EmulatorState.<name>`` as a method of a holder of ``_control``: same signature, same docstring."""

    def __init__(self, operation: Callable[Concatenate[EmulatorState, P], R]) -> None:
        self.name = operation.__name__
        self.operation = operation
        self.__doc__ = operation.__doc__  # help(WaveSpeedEmulator) shows it too
        signature = inspect.signature(operation)
        self.signature = signature.replace(parameters=list(signature.parameters.values())[1:])  # without self

    @overload
    def __get__(self, instance: None, owner: type) -> _Control[P, R]: ...

    @overload
    def __get__(self, instance: EmulatorControlMethods, owner: type) -> Callable[P, R]: ...

    def __get__(self, instance: EmulatorControlMethods | None, owner: type) -> _Control[P, R] | Callable[P, R]:
        if instance is None:
            return self

        @functools.wraps(self.operation)
        def method(*args: P.args, **kwargs: P.kwargs) -> R:
            # Bound here, so a wrong call fails as a local one would, before anything is sent.
            arguments = self.signature.bind(*args, **kwargs).arguments
            return instance._control(self.name, **arguments)

        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


class EmulatorControlMethods:
    """The control operations on a WaveSpeed emulator (see ``EmulatorState`` for each one's semantics)."""

    def _control(self, method: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    reset = _Control(EmulatorState.reset)
    add_fault = _Control(EmulatorState.add_fault)
    remove_fault = _Control(EmulatorState.remove_fault)
    clear_faults = _Control(EmulatorState.clear_faults)
    set_outcome = _Control(EmulatorState.set_outcome)
    set_duration = _Control(EmulatorState.set_duration)
    hold = _Control(EmulatorState.hold)
    release = _Control(EmulatorState.release)
    set_rate_limit = _Control(EmulatorState.set_rate_limit)
    set_tier = _Control(EmulatorState.set_tier)
    set_api_key = _Control(EmulatorState.set_api_key)
    set_balance = _Control(EmulatorState.set_balance)
    set_webhook_secret = _Control(EmulatorState.set_webhook_secret)
    set_price = _Control(EmulatorState.set_price)
    set_cancel_status = _Control(EmulatorState.set_cancel_status)
    set_history = _Control(EmulatorState.set_history)
    backdate = _Control(EmulatorState.backdate)
    allow_any_model = _Control(EmulatorState.allow_any_model)
    register_model = _Control(EmulatorState.register_model)
    counters = _Control(EmulatorState.counters)
    cancellations = _Control(EmulatorState.cancellations)
    submissions = _Control(EmulatorState.submissions)
    prediction_state = _Control(EmulatorState.prediction_state)
    request_log = _Control(EmulatorState.request_log)


# The names the HTTP endpoint accepts: the list above, nothing else of the state.
CONTROL_METHODS = frozenset(name for name, value in vars(EmulatorControlMethods).items() if isinstance(value, _Control))
