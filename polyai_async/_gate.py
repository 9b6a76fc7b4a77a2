"""The gate in front of a host's connections: first come, first served (private module).

asyncio.Semaphore would do, but costs a coroutine call per request even when a connection is
free, and lets a task that just released take the slot straight back. This gate is taken
without awaiting anything while slots are free and nobody waits (``try_acquire``), and a
release hands the slot to the longest waiter directly, so arrival order is kept exactly.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    """``size`` slots, handed out in arrival order (private helper)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        # Futures of the tasks waiting, oldest first; a cancelled one is skipped when reached.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for it; never suspends."""
        # Slots are free only while nobody waits: release hands a slot to a waiter directly.
        if self._free:
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

    def release(self) -> None:
        """Give the slot back: to the longest waiter, or to the free ones."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
