"""SIGINT and SIGTERM during a study: stop cleanly, mark the running trial, exit non-zero.

The first signal raises `StudyInterrupted` in the main thread, where the runner marks the trial it
was running and re-raises. A second signal is ignored while that clean-up runs (a Ctrl-C reaches
the workers from the terminal and again from the study process, which forwards it), and a third
one ends the process at once.

A worker process also learns of its study process's death by `PARENT_DIED_SIGNAL`. Linux can send
it several times as the threads of the dying process exit (3 or 4 times when a study was killed
in tests); the first one stops the worker like SIGTERM and the others are ignored.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# the signal count at which the process exits without further clean-up
FORCE_EXIT_COUNT = 3
# the signal that Linux sends a worker when its study process dies (requested with prctl)
PARENT_DIED_SIGNAL = signal.SIGUSR1


class StudyInterrupted(KeyboardInterrupt):
    """A study process received SIGINT or SIGTERM.

    It subclasses KeyboardInterrupt so that trial functions close their MLflow run as KILLED, as
    they do on Ctrl-C. ``result`` carries the study's summary once the runner has cleaned up.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        self.result: Any = None
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signal_number).name

    @property
    def exit_code(self) -> int:
        """128 plus the signal number, as shells report a process ended by that signal."""
        return 128 + self.signal_number


class _HandlerState:
    def __init__(self) -> None:
        self.received: list[int] = []
        self.defer_depth = 0
        self.pending: int | None = None
        self.parent_died = False


# the state of the handlers installed by `interrupt_handlers`; None when none are installed
_state: _HandlerState | None = None


@contextmanager
def interrupt_handlers(*, parent_death: bool = False) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `StudyInterrupted` while the block runs.

    With ``parent_death``, the first `PARENT_DIED_SIGNAL` counts as a SIGTERM, and later ones,
    or one that comes while the process is already stopping, are ignored. Outside the main
    thread Python cannot install signal handlers, and the block runs with the handlers it has
    (Ctrl-C then raises a plain KeyboardInterrupt).
    """
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    state = _HandlerState()

    def _handle(signal_number: int, frame: object) -> None:
        state.received.append(signal_number)
        name = signal.Signals(signal_number).name
        if len(state.received) >= FORCE_EXIT_COUNT:
            logger.error("received %s %d times: exiting without finishing the clean-up", name, len(state.received))
            os._exit(128 + signal_number)
        if len(state.received) > 1:
            logger.warning("received %s while stopping; the running trial is being marked as interrupted", name)
            return
        if state.defer_depth > 0:
            state.pending = signal_number
            return
        raise StudyInterrupted(signal_number)

    def _handle_parent_death(signal_number: int, frame: object) -> None:
        if state.parent_died:
            return
        state.parent_died = True
        if state.received:
            logger.warning("study process died while worker pid %d was stopping", os.getpid())
            return
        logger.warning("study process died: stopping worker pid %d", os.getpid())
        _handle(signal.SIGTERM, frame)

    handlers = {number: _handle for number in HANDLED_SIGNALS}
    if parent_death:
        handlers[PARENT_DIED_SIGNAL] = _handle_parent_death
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    outer_state, _state = _state, state
    try:
        yield
    finally:
        _state = outer_state
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold a SIGINT or SIGTERM back until the block ends, so that a short update is never cut in half.

    Python runs signal handlers in the main thread between bytecodes. The handler installed by
    `interrupt_handlers` only records a signal that arrives inside this block, and the block
    raises `StudyInterrupted` when it exits. Without those handlers this does nothing.
    """
    state = _state
    if state is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    state.defer_depth += 1
    try:
        yield
    finally:
        state.defer_depth -= 1
        if state.defer_depth == 0 and state.pending is not None:
            signal_number, state.pending = state.pending, None
            # raised here, it also replaces an exception the block raised (kept as __context__)
            raise StudyInterrupted(signal_number)
