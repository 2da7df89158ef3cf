"""A wall-clock bound for a call that may hang, usable from any thread.

Why not math_verify's own timeout: ``math_verify.parse(parsing_timeout=5)`` and
``math_verify.verify(timeout_seconds=5)`` wrap each step in ``signal.alarm``, which (a) only
works in the main thread (elsewhere ``signal.signal`` raises ``ValueError``, which math_verify
re-raises), (b) only takes whole seconds, per step, and (c) calls ``alarm(0)`` on exit, which
cancels any outer timer. So the math reward passes ``None`` for both and bounds the whole
parse + verify call here instead:

* **main thread** — ``signal.setitimer`` with a ``SIGALRM`` handler that raises
  :class:`RewardTimeout`. CPython checks signals even inside long big-int loops (``long_pow``),
  so this stops e.g. sympy computing ``9**387420489``.
* **any other thread** — a watchdog timer injects :class:`RewardTimeout` into the calling
  thread with ``PyThreadState_SetAsyncExc``. That lands only between bytecodes, so one long C
  call runs to its end first; the math reward therefore also screens its input for constructs
  that make sympy do huge C-level integer work (see ``screen.is_explosive``).

Either way the timeout repeats every ``RETRY_S`` until the call has ended, because mpmath
has a few bare ``except:`` around tiny conversions, and a timeout landing in one is swallowed.
(The repeat is far longer than unwinding a stack takes, so a second one never lands while the
first is being handled.) The previous ``SIGALRM`` handler and timer are restored afterwards.
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: After the deadline, raise the timeout again this often until the call has ended.
RETRY_S = 0.25


class RewardTimeout(BaseException):
    """Raised inside a bounded call at its deadline.

    A ``BaseException`` so that library code's ``except Exception`` does not swallow it.
    """


def call_with_timeout(fn: Callable[[], T], seconds: float, default: T) -> T:
    """Return ``fn()``, or ``default`` if it has not returned after ``seconds`` of wall time.

    Exceptions other than the timeout propagate. ``seconds <= 0`` means no bound.

    >>> call_with_timeout(lambda: 1 + 1, 1.0, default=-1)
    2
    >>> import time
    >>> call_with_timeout(lambda: [time.sleep(0.01) for _ in range(1000)], 0.1, default=-1)
    -1
    """
    if seconds <= 0:
        return fn()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, seconds, default)
    return _with_watchdog(fn, seconds, default)


# ---------------------------------------------------------------- main thread: SIGALRM


def _raise_timeout(signum: int, frame: Any) -> None:
    raise RewardTimeout


def _with_alarm(fn: Callable[[], T], seconds: float, default: T) -> T:
    start = time.monotonic()
    try:
        old_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    except (ValueError, OSError):  # e.g. the main thread of a sub-interpreter
        return _with_watchdog(fn, seconds, default)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds, RETRY_S)
    restored = False

    def restore() -> None:
        # Idempotent, because a SIGALRM already tripped may still raise inside the first call:
        # then the ``except`` below runs it again. Once our timer is off and the old handler is
        # back, nothing of ours can fire.
        nonlocal restored
        if restored:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:  # an outer timer was running: give it back what is left of it
            left = max(old_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, old_interval)
        restored = True

    try:
        try:
            return fn()
        finally:
            restore()
    except RewardTimeout:
        restore()
        return default


# ---------------------------------------------------------------- other threads: watchdog


def _set_async_exc(tid: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in thread ``tid``; ``None`` passes NULL, which clears a pending one."""
    arg = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), arg)


class _Watchdog:
    """Injects :class:`RewardTimeout` into thread ``tid`` at ``seconds``, then each ``RETRY_S``."""

    def __init__(self, tid: int, seconds: float) -> None:
        self._tid = tid
        self._lock = threading.Lock()
        self._done = False
        self._fired = False
        self._timer = self._start(seconds)

    def _start(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self._fire)
        timer.daemon = True
        timer.start()
        return timer

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                self._fired = True
                _set_async_exc(self._tid, RewardTimeout)
                self._timer = self._start(RETRY_S)

    def disarm(self) -> None:
        """Stop the watchdog and clear an exception injected but not yet delivered."""
        with self._lock:
            self._done = True
            self._timer.cancel()
            if self._fired:
                _set_async_exc(self._tid, None)


def _with_watchdog(fn: Callable[[], T], seconds: float, default: T) -> T:
    dog = _Watchdog(threading.get_ident(), seconds)
    try:
        try:
            return fn()
        finally:
            dog.disarm()
    except RewardTimeout:
        # The injection may land inside fn() or inside the first disarm(); either way it ends
        # here, and this second (idempotent) disarm() makes sure the watchdog is stopped.
        dog.disarm()
        return default
