"""The gate in front of a host's connections: first come, first served.

asyncio.Semaphore would do, but costs a coroutine call per request even when a connection is
free, and lets a task that just released take the slot straight back. This gate is taken
without awaiting anything while slots are free and nobody waits (``try_acquire``), and a
release hands the slot to the longest waiter directly, so arrival order is kept exactly.

The adaptive concurrency limiter (``_adaptive``) moves a gate's size while calls hold slots:
shrunk below what is in use, the gate owes slots, and releases pay the debt before anyone
else is let in.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    """``size`` slots, handed out in arrival order."""

    __slots__ = ("_free", "_waiters", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        # Negative after a shrink below what was in use: slots owed, paid back by releases.
        self._free = size
        # Futures of the tasks waiting, oldest first; a cancelled one is skipped when reached.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it; never suspends."""
        # Slots are free only while nobody waits: release hands a slot to a waiter directly.
        if self._free > 0:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Wait for a slot in arrival order (after ``try_acquire`` said no)."""
        if self.try_acquire():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled before using it: pass it on
            raise

    @property
    def waiting(self) -> int:
        """Tasks waiting for a slot (one cancelled while waiting counts until it is reached)."""
        return len(self._waiters)

    @property
    def in_use(self) -> int:
        """Slots held now (more than ``size`` just after a shrink)."""
        return self.size - self._free

    def resize(self, size: int) -> None:
        """Hold ``size`` slots from now on; a larger gate lets the longest waiters in at once."""
        self._free += size - self.size
        self.size = size
        waiters = self._waiters
        while self._free > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._free -= 1
                waiter.set_result(None)

    def release(self) -> None:
        """Give the slot back: to the longest waiter, or to the free ones."""
        if self._free < 0:  # the gate shrank: this slot was owed
            self._free += 1
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
