"""The timer that bounds one attempt, cheaper than ``asyncio.timeout``.

``asyncio.timeout`` costs some 5 microseconds a use (two coroutine context-manager calls, a
state machine); this is a timer handle and a flag. Its meaning is the same: when it fires the
task is cancelled, and a cancellation that was the timer's alone becomes a timeout, while one
that came from elsewhere too (the caller cancelling) stays a cancellation.
"""

from __future__ import annotations

import asyncio
import sys


class Expiry:
    """Cancels ``task`` when called (from the event loop's timer)."""

    __slots__ = ("_cancelling", "_task", "fired")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self._task = task
        self._cancelling = 0
        if sys.version_info >= (3, 11):
            self._cancelling = task.cancelling()
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self._task.cancel()

    def expired(self) -> bool:
        """After a CancelledError: True if it was this timer's alone (it is then absorbed)."""
        if not self.fired:
            return False
        if sys.version_info >= (3, 11):
            return self._task.uncancel() <= self._cancelling
        return True  # pragma: no cover - 3.10 cannot tell a second cancellation apart
