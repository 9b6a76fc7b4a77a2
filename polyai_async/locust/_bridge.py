"""One Locust process's bridge: its loop thread, its client, its metrics.

Every Locust process that runs users (a worker, or a plain ``locust`` run) has one
``Bridge``: one asyncio loop in a native thread, one ``PolyAIClient`` shared by all its users,
and one ``Metrics`` (HDR histograms, counters, series) that only the loop's thread touches.
A user's greenlet asks the bridge for a conversation and waits for it; the conversation runs
as a task on the loop; each outcome is recorded in the metrics there and posted to the
gevent thread, where a call is fired into Locust's ``events.request`` and a conversation or
an expectation into the process's Checks (``_checks``).

Stopping (``drain``) refuses new conversations, cancels those in flight (``run_conversation``
closes each created chat on cancellation), then closes any chat still open; the chats it
could not close are counted as left open. ``shutdown`` then closes the client and the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.lock

from .._client import PolyAIClient
from .._errors import ConversationEndedError, NotFoundError, PolyAIError
from .._models import CloseChatResponse, CreateChatResponse, Handoff
from .._redact import redact
from ..load import Metrics, Scenario, ThinkTime, run_conversation
from ..load._retries import retry_counter
from ..load._sent import request_tap
from ._checks import RequestFailed, checks_of
from ._loop import Inbox, LoopThread

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["DRAIN_SECONDS", "Bridge", "ExpectationFailed", "bridge_of"]

logger = logging.getLogger("polyai_async.locust")

#: How long stopping waits for cancelled conversations to close their chats.
DRAIN_SECONDS = 5.0
# The second chance given to a chat still open after its conversation was cancelled.
_CLOSE_SECONDS = 2.0


class ExpectationFailed(Exception):
    """A scenario's expectation was not met: a failure of Locust's ``expectation`` entry.

    It is not a request failure: the agent answered, but not as the scenario expected.
    """


class _TrackingClient(PolyAIClient):
    """A PolyAIClient that knows which chats it created and has not closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.open_chats: set[str] = set()
        self.creates_cancelled = 0

    async def create_chat(self, *args: Any, **kwargs: Any) -> CreateChatResponse:
        try:
            created = await super().create_chat(*args, **kwargs)
        except asyncio.CancelledError:
            # The server may have made the chat; its id never arrived, so it cannot be closed.
            self.creates_cancelled += 1
            raise
        self.open_chats.add(created.conversation_id)
        return created

    async def close_chat(self, conversation_id: str) -> CloseChatResponse:
        try:
            closed = await super().close_chat(conversation_id)
        except (NotFoundError, ConversationEndedError):
            self.open_chats.discard(conversation_id)  # already gone counts as closed
            raise
        self.open_chats.discard(conversation_id)
        return closed


class _Relay:
    """The Observer a conversation reports to, on the loop's thread.

    It records each outcome in the bridge's Metrics and posts it to the gevent thread, where
    Locust's events fire.
    """

    __slots__ = ("_fire", "_metrics", "_post")

    def __init__(self, metrics: Metrics, inbox: Inbox, fire: _Firing) -> None:
        self._metrics = metrics
        self._post = inbox.post
        self._fire = fire

    def request(
        self,
        endpoint: str,
        method: str,
        seconds: float,
        error: PolyAIError | None,
        turn: int | None,
    ) -> None:
        self._metrics.request(endpoint, method, seconds, error, turn)
        self._post(self._fire.request, method, endpoint, seconds * 1000.0, error)

    def expectation(self, persona: str, expectation: str, passed: bool, reply: str | None) -> None:
        self._metrics.expectation(persona, expectation, passed, reply)
        self._post(self._fire.expectation, persona, expectation, passed)

    def conversation(
        self,
        persona: str,
        seconds: float,
        error: PolyAIError | None,
        ended: bool,
        handoff: Handoff | None,
        turns: int,
    ) -> None:
        self._metrics.conversation(persona, seconds, error, ended, handoff, turns)
        self._post(self._fire.conversation, seconds * 1000.0, error)


class _Firing:
    """Fires Locust's request event, on the gevent thread only.

    Only the HTTP calls are Locust requests; conversations and expectations go to the
    process's Checks (their own statistics, see ``_checks``).
    """

    __slots__ = ("_checks", "_request")

    def __init__(self, environment: Environment) -> None:
        self._request = environment.events.request.fire
        self._checks = checks_of(environment)

    def request(self, method: str, endpoint: str, ms: float, error: PolyAIError | None) -> None:
        failure = None
        if error is not None:
            # Named by kind and status in Locust's tables; the whole error (its correlation
            # id) stays on the exception and in the debug log.
            failure = RequestFailed(error)
            logger.debug("%s %s failed: %s", method, endpoint, error)
        self._request(
            request_type=method,
            name=endpoint,
            response_time=ms,
            response_length=0,
            exception=failure,
            context={},
        )

    def expectation(self, persona: str, expectation: str, passed: bool) -> None:
        failure = None if passed else ExpectationFailed(redact(f"{persona}: {expectation}"))
        self._checks.log("CHECK", "expectation", 0, failure)

    def conversation(self, ms: float, error: PolyAIError | None) -> None:
        self._checks.log(
            "CHAT", "conversation", ms, None if error is None else RequestFailed(error)
        )


class Bridge:
    """The asyncio side of one Locust process (see the module docstring).

    Args:
        environment: the Locust environment of this process.
    """

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self._thread: LoopThread | None = None
        self._starting = gevent.lock.Semaphore()
        self._client: _TrackingClient | None = None
        self._metrics = Metrics()
        self._firing = _Firing(environment)
        self._cancels: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._idle = gevent.event.Event()
        self._idle.set()
        self._accepting = gevent.event.Event()
        self._accepting.set()
        self._started_at = time.perf_counter()
        self._cpu_at = time.process_time()
        self._final: dict[str, Any] | None = None
        self._failed: BaseException | None = None

    # -- the run -------------------------------------------------------------------------

    def reset(self) -> None:
        """A new test starts: fresh metrics, conversations accepted again (gevent thread)."""
        if self._thread is not None:
            self._thread.wait(self._new_metrics)
        else:
            self._metrics = Metrics()
        self._started_at = time.perf_counter()
        self._cpu_at = time.process_time()
        self._final = None
        self._accepting.set()

    async def _new_metrics(self) -> None:
        self._metrics = Metrics()

    def _count_retry(self, endpoint: str) -> None:
        self._metrics.retry(endpoint)

    def _start(self, client_options: Mapping[str, Any]) -> LoopThread:
        if self._thread is not None:
            return self._thread
        with self._starting:  # the first users arrive together: one of them starts the loop
            if self._thread is not None:
                return self._thread
            thread = LoopThread(Inbox())
            thread.start()

            async def make_client() -> _TrackingClient:
                client = _TrackingClient(**client_options)
                # Counted into whichever Metrics is current (reset swaps it), on the loop.
                client.add_event_hook("retry_scheduled", retry_counter(self._count_retry))
                # Lambdas, not bound methods: reset swaps self._metrics for a new one.
                client._add_tap(
                    request_tap(
                        lambda e: self._metrics.request_sent(e),  # noqa: PLW0108
                        lambda e, outcome: self._metrics.request_ended(e, outcome),  # noqa: PLW0108
                        lambda e: self._metrics.call_cancelled(e),  # noqa: PLW0108
                    )
                )
                return client

            try:
                self._client = thread.wait(make_client)
            except BaseException:
                thread.stop()
                thread.inbox.close()
                raise
            self._thread = thread
            return thread

    def converse(
        self,
        scenario: Scenario,
        rng: random.Random,
        think_time: ThinkTime | None,
        client_options: Mapping[str, Any],
    ) -> None:
        """Run one conversation of ``scenario`` and wait for it (a user's greenlet).

        While the bridge is drained (the test is stopping) this waits for the next test.
        The first call makes the process's client with ``client_options`` (PolyAIClient's
        keyword arguments).

        Raises:
            PolyAIError: the client cannot be made (credentials, base URL); the message says
                what to fix.
        """
        self._accepting.wait()
        if self._failed is not None:
            raise self._failed
        try:
            thread = self._start(client_options)
        except PolyAIError as exc:
            self._failed = exc
            raise
        persona = scenario.pick(rng)
        client = self._client
        if client is None:  # pragma: no cover - _start made it
            raise RuntimeError("the bridge has no client")
        outcome: gevent.event.AsyncResult = gevent.event.AsyncResult()
        key = self._next
        self._next += 1

        async def one() -> None:
            metrics = self._metrics
            metrics.started(persona.name)
            relay = _Relay(metrics, thread.inbox, self._firing)
            try:
                await run_conversation(client, scenario, persona, rng, relay, think_time=think_time)
            except asyncio.CancelledError:
                metrics.interrupted(persona.name)
                raise

        def done(_: None, error: BaseException | None) -> None:
            self._cancels.pop(key, None)
            if not self._cancels:
                self._idle.set()
            if error is None or isinstance(error, asyncio.CancelledError):
                outcome.set(None)
            else:
                outcome.set_exception(error)

        self._idle.clear()
        self._cancels[key] = thread.submit(one, done)
        try:
            outcome.get()
        except gevent.GreenletExit:
            # Locust stops this user: the conversation is cancelled and closes its chat.
            cancel = self._cancels.get(key)
            if cancel is not None:
                cancel()
            raise

    def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Stop: refuse new conversations, cancel those in flight, close what is left open.

        Safe to call more than once; returns within about ``timeout`` (gevent thread).
        """
        self._accepting.clear()
        for cancel in list(self._cancels.values()):
            cancel()
        if not self._idle.wait(timeout):
            logger.warning(
                "%d conversations still running after %.0f s",
                len(self._cancels),
                timeout,
            )
        if self._thread is not None:
            try:
                self._thread.wait(self._close_leftovers, timeout=_CLOSE_SECONDS + 1.0)
            except gevent.Timeout:
                logger.warning("closing the chats left open timed out")

    async def _close_leftovers(self) -> None:
        client = self._client
        thread = self._thread
        if client is None or thread is None or not client.open_chats:
            return
        # These closes reach the server like any other: Locust's stats and ours count them.
        relay = _Relay(self._metrics, thread.inbox, self._firing)

        async def close(conversation_id: str) -> None:
            started = time.perf_counter()
            try:
                await asyncio.wait_for(client.close_chat(conversation_id), _CLOSE_SECONDS)
            except PolyAIError as exc:
                relay.request("close", "PUT", time.perf_counter() - started, exc, None)
            except asyncio.TimeoutError:
                return  # cut off: never answered, so not counted as a call that ended
            else:
                relay.request("close", "PUT", time.perf_counter() - started, None, None)

        await asyncio.gather(*(close(c) for c in list(client.open_chats)))

    def final_report(self) -> dict[str, Any]:
        """Drain, then this process's figures as JSON-safe data (for the master).

        The keys: ``metrics`` (``Metrics.to_dict()``), ``conversations_left_open`` (chats
        created and never closed), ``creates_cancelled`` (creates cancelled in flight: the
        server may hold a chat nobody knows), ``wall_seconds``, ``cpu_seconds``, ``host``,
        ``pid``.
        """
        if self._final is not None:
            return self._final
        self.drain()
        wall = time.perf_counter() - self._started_at
        cpu = time.process_time() - self._cpu_at
        if self._thread is not None:
            self._final = self._thread.wait(self._snapshot, timeout=30)
        else:
            self._metrics.finish()
            self._final = self._report(self._metrics.to_dict(), 0, 0)
        self._final.update(wall_seconds=round(wall, 4), cpu_seconds=round(cpu, 4))
        return self._final

    async def _snapshot(self) -> dict[str, Any]:
        self._metrics.finish()
        client = self._client
        left_open = 0 if client is None else len(client.open_chats)
        cancelled = 0 if client is None else client.creates_cancelled
        return self._report(self._metrics.to_dict(), left_open, cancelled)

    def _report(self, metrics: dict[str, Any], left_open: int, cancelled: int) -> dict[str, Any]:
        return {
            "metrics": metrics,
            "conversations_left_open": left_open,
            "creates_cancelled": cancelled,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def shutdown(self) -> None:
        """Drain, close the client, stop the loop and its thread (gevent thread)."""
        self.drain()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        client = self._client

        async def close() -> None:
            if client is not None:
                await client.aclose()

        try:
            thread.wait(close, timeout=10)
        except gevent.Timeout:
            logger.warning("closing the client timed out")
        if not thread.stop():
            logger.warning("the asyncio loop thread did not stop")
        thread.inbox.close()


_bridges: weakref.WeakKeyDictionary[Environment, Bridge] = weakref.WeakKeyDictionary()


def bridge_of(environment: Environment) -> Bridge:
    """The Bridge of this Locust process's environment, made on first use."""
    bridge = _bridges.get(environment)
    if bridge is None:
        bridge = _bridges[environment] = Bridge(environment)
    return bridge
