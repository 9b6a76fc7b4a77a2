"""A FakePolyAI serving from an event loop in a thread of its own.

For code under test that runs its own event loop in the main thread (``main()`` of the CLI,
``run_load``): the fake needs a loop that theirs does not block, and no process of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import Any, TypeVar

from polyai_async.testing import FakePolyAI

T = TypeVar("T")

__all__ = ["ThreadedFake"]


class ThreadedFake:
    """A FakePolyAI on 127.0.0.1 serving from an event loop in its own thread.

    For an in-process command whose own event loop owns the main thread: ``with
    ThreadedFake(...) as fake:`` gives ``fake.url``, ``fake.env`` (the POLYAI_* settings that
    reach it) and ``fake.server`` (the FakePolyAI, to read its counters once the command ran).
    """

    def __init__(self, **options: Any) -> None:
        self.server = FakePolyAI(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Awaitable[T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=30)

    def __enter__(self) -> ThreadedFake:
        self._thread.start()
        self._run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self.server.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def settings(self) -> dict[str, str]:
        """PolyAIClient keyword arguments that reach this server."""
        server = self.server
        return {
            "base_url": server.url,
            "api_key": server.api_key,
            "token": server.token,
            "account_id": server.account_id,
            "project_id": server.project_id,
        }

    @property
    def env(self) -> dict[str, str]:
        """The credentials of this server, as the command reads them (no POLYAI_BASE_URL)."""
        return {
            "POLYAI_API_KEY": self.server.api_key,
            "POLYAI_TOKEN": self.server.token,
            "POLYAI_ACCOUNT_ID": self.server.account_id,
            "POLYAI_PROJECT_ID": self.server.project_id,
        }
