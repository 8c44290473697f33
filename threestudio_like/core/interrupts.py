"""Ctrl-C (SIGINT) and SIGTERM at any moment of a run: one line on stderr and exit status
128 + signal (130, 143), never a traceback.

* Before the run writes anything (imports, config, validation) a signal prints
  ``interrupted during start-up; nothing was written`` and ends the process at once: an exception
  raised inside the import of a compiled extension (torch) can crash the interpreter's exit.
* Once the run has begun (:func:`run_started`), a signal raises :class:`Interrupted` where the
  program is (model loading, export...), which the CLI turns into a line saying what was saved.
* Inside the training loop, :class:`StopRequest` only records the first signal, so the loop stops
  at the next step boundary and the checkpoint holds a consistent step; a second signal
  interrupts at once.
* Python swallows an exception raised where it cannot propagate (a ``__del__``, an at-fork handler
  such as the one logging runs when imageio starts ffmpeg): the signal is then raised again, so it
  is handled at the next point where it can propagate instead of being printed and lost.
* Python wraps an exception raised in some places in one of its own: a signal arriving while a
  module is imported (torch imports parts of itself lazily, mid-run) can surface as a
  ``RuntimeError`` from ``__set_name__`` whose cause is the :class:`Interrupted`;
  :func:`interruption` finds it so the run ends as interrupted, not with a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The run was asked to stop by ``signum`` (a BaseException, like KeyboardInterrupt, so that
    ``except Exception`` blocks do not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def interruption(error: BaseException) -> Optional[Interrupted]:
    """The :class:`Interrupted` that ``error`` is or was raised from or while handling, if any."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


START_UP_MESSAGE = "interrupted during start-up; nothing was written"
_started = False


def _on_signal(signum: int, frame: Any) -> None:
    if not _started:
        sys.stderr.write(START_UP_MESSAGE + "\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    raise Interrupted(signum)


def _signal_again(signum: int) -> None:
    time.sleep(0.01)  # the swallowing context returns first (were it still running, this repeats)
    os.kill(os.getpid(), signum)


def _redeliver_swallowed(unraisable: Any) -> None:
    """``sys.unraisablehook``: an :class:`Interrupted` Python could not propagate is signalled again
    from another thread, so the main thread handles it where it can propagate (a signal raised
    from here would be handled, and swallowed, within this hook); the rest goes to the hook before."""
    if isinstance(unraisable.exc_value, Interrupted):
        threading.Thread(target=_signal_again, args=(unraisable.exc_value.signum,), daemon=True).start()
    else:
        _unraisablehook_before(unraisable)


_unraisablehook_before = sys.__unraisablehook__


def handle_signals() -> dict[int, Any]:
    """Install the SIGINT/SIGTERM handlers described in the module docstring (main thread only;
    elsewhere they cannot be installed and the defaults stay); returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    global _unraisablehook_before
    if sys.unraisablehook is not _redeliver_swallowed:
        _unraisablehook_before, sys.unraisablehook = sys.unraisablehook, _redeliver_swallowed
    return {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}


@contextmanager
def signals_handled() -> Iterator[None]:
    """:func:`handle_signals` within, the previous handlers (and start-up state) restored after."""
    global _started
    previous_hook = sys.unraisablehook
    previous = handle_signals()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = previous_hook
        _started = False


def ignore_signals() -> None:
    """The process is exiting (its run already said how it ended): a SIGINT/SIGTERM arriving while
    the interpreter shuts down is ignored instead of raising inside a finalizer."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def run_started() -> None:
    """The run is about to write: from now on a signal raises :class:`Interrupted`."""
    global _started
    _started = True


class StopRequest:
    """Within: the first SIGINT/SIGTERM sets :attr:`signum` (check :attr:`requested` between
    steps); a second one raises :class:`Interrupted` at once."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise Interrupted(signum)
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
