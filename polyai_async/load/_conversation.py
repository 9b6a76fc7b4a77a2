"""One simulated conversation: create, the persona's turns, close; every outcome to an Observer.

``run_conversation`` never raises a PolyAIError: each call's latency and error, each
expectation and the conversation's end go to the observer, which counts them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol

from .._client import PolyAIClient
from .._errors import PolyAIError
from .._models import CreateChatResponse, Handoff
from ._scenario import Persona, Scenario, ThinkTime

__all__ = [
    "CLOSE_ON_CANCEL_SECONDS",
    "Cancellations",
    "Observer",
    "guard",
    "guarded",
    "run_conversation",
]

logger = logging.getLogger("polyai_async.load")
P = ParamSpec("P")

#: How long a cancelled conversation may still spend closing itself.
CLOSE_ON_CANCEL_SECONDS = 2.0


def guarded(callback: Callable[P, object], what: str) -> Callable[P, None]:
    """``callback``, but what it raises is logged (the first time only) instead of raised.

    A dashboard's bug must cost a log line, not the load run: the first
    failure is logged with its traceback, later ones are not logged at all.
    """
    failed = False

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        nonlocal failed
        try:
            callback(*args, **kwargs)
        except Exception:
            if not failed:
                failed = True
                logger.warning(
                    "polyai_async: %s raised; the run goes on (later failures are not logged)",
                    what,
                    exc_info=True,
                )

    return call


class Observer(Protocol):
    """What a conversation reports to, as it goes (Metrics is one)."""

    def request(
        self,
        endpoint: str,
        method: str,
        seconds: float,
        error: PolyAIError | None,
        turn: int | None,
    ) -> None:
        """One API call ended.

        Args:
            endpoint: ``create``, ``respond`` or ``close``.
            method: the HTTP method, ``POST`` or ``PUT``.
            seconds: its latency; for create in the open model, from the scheduled start.
            error: why it failed, or None.
            turn: the respond's turn index, None for create and close.
        """

    def expectation(self, persona: str, expectation: str, passed: bool, reply: str | None) -> None:
        """One expectation of a turn was checked against the agent's reply."""

    def conversation(
        self,
        persona: str,
        seconds: float,
        error: PolyAIError | None,
        ended: bool,
        handoff: Handoff | None,
        turns: int,
    ) -> None:
        """A conversation ended (closed, or failed).

        Args:
            persona: its persona's name.
            seconds: from its (scheduled) start to the end of close.
            error: its first failure, or None when every call succeeded.
            ended: the agent ended it (a handoff included).
            handoff: the agent's handoff, if it handed off.
            turns: respond calls that succeeded.
        """


async def run_conversation(
    client: PolyAIClient,
    scenario: Scenario,
    persona: Persona,
    rng: random.Random,
    observer: Observer,
    *,
    think_time: ThinkTime | None = None,
    scheduled: float | None = None,
    cancellations: Cancellations | None = None,
) -> None:
    """Run one conversation of ``persona`` against ``client``, reporting to ``observer``.

    Create, then the persona's turns (each after a think time; stops when the agent ends
    the conversation or a call fails), then close: always when the conversation was created,
    on cancellation too (bounded by ``CLOSE_ON_CANCEL_SECONDS``).

    Args:
        client: an open client.
        scenario: gives create's arguments and the default think time.
        persona: what the user says.
        rng: draws the messages and think times.
        observer: gets every outcome.
        think_time: overrides the scenario's.
        scheduled: a ``time.perf_counter()`` value: when the conversation should have
            started (open model); create's latency and the conversation's count from it.
        cancellations: the runner's, when it cancels its conversations through it (see
            Cancellations): the create is then awaited in this task, not shielded in one of
            its own.

    An observer method that raises is logged once (per observer class and method) and the
    conversation goes on.
    """
    observer = guard(observer)
    clock = time.perf_counter
    pause = think_time if think_time is not None else scenario.think_time
    started = clock()
    origin = started if scheduled is None else scheduled
    created, asked = await _create(client, scenario, persona, observer, origin, cancellations)
    if created is None:
        return
    conversation_id = created.conversation_id
    if asked:  # the runner asked it to stop during its create: close, and stop
        await _close_on_cancel(client, conversation_id, observer)
        raise asyncio.CancelledError
    try:
        error, handoff, ended, turns = await _turns(
            client, conversation_id, persona, rng, observer, pause
        )
    except asyncio.CancelledError:
        await _close_on_cancel(client, conversation_id, observer)
        raise
    call_started = clock()
    try:
        await client.close_chat(conversation_id)
    except PolyAIError as exc:
        observer.request("close", "PUT", clock() - call_started, exc, None)
        error = error or exc
    else:
        observer.request("close", "PUT", clock() - call_started, None, None)
    observer.conversation(persona.name, clock() - origin, error, ended, handoff, turns)


async def _create(
    client: PolyAIClient,
    scenario: Scenario,
    persona: Persona,
    observer: Observer,
    origin: float,
    cancellations: Cancellations | None,
) -> tuple[CreateChatResponse | None, bool]:
    """Create the conversation: (its answer, or None once a failure is reported; asked to stop).

    Asked to stop (``cancellations``) during a create that failed, it raises CancelledError.
    """
    clock = time.perf_counter
    if cancellations is None:
        creating = asyncio.ensure_future(client.create_chat(**scenario.create))
        try:
            # Shielded: a create cancelled in flight may still create the conversation, which
            # must then be closed, not left open on the server.
            created = await asyncio.shield(creating)
        except asyncio.CancelledError:
            await _close_if_created(client, creating, observer, origin)
            raise
        except PolyAIError as exc:
            observer.request("create", "POST", clock() - origin, exc, None)
            observer.conversation(persona.name, clock() - origin, exc, False, None, 0)
            return None, False
        observer.request("create", "POST", clock() - origin, None, None)
        return created, False
    # Awaited in this task: the runner cancels it through ``cancellations`` (see there).
    task = asyncio.current_task()
    creating_now = cancellations.creating
    creating_now.add(task)  # type: ignore[arg-type]
    try:
        created = await client.create_chat(**scenario.create)
    except PolyAIError as exc:
        observer.request("create", "POST", clock() - origin, exc, None)
        if task in cancellations.asked:
            raise asyncio.CancelledError from None  # the runner's stop, now the create ended
        observer.conversation(persona.name, clock() - origin, exc, False, None, 0)
        return None, False
    finally:
        creating_now.discard(task)
    observer.request("create", "POST", clock() - origin, None, None)
    return created, task in cancellations.asked


async def _turns(
    client: PolyAIClient,
    conversation_id: str,
    persona: Persona,
    rng: random.Random,
    observer: Observer,
    pause: ThinkTime | None,
) -> tuple[PolyAIError | None, Handoff | None, bool, int]:
    """The persona's turns: (the failure, the handoff, ended by the agent, turns completed)."""
    clock = time.perf_counter
    turns = 0
    for index, turn in enumerate(persona.turns):
        if pause is not None:
            delay = pause.sample(rng)
            if delay > 0:
                await asyncio.sleep(delay)
        message = turn.say[0] if len(turn.say) == 1 else rng.choice(turn.say)
        call_started = clock()
        try:
            reply = await client.respond(conversation_id, message, metadata=turn.metadata)
        except PolyAIError as exc:
            observer.request("respond", "POST", clock() - call_started, exc, index)
            return exc, None, False, turns
        observer.request("respond", "POST", clock() - call_started, None, index)
        turns += 1
        if turn.expect is not None:
            destination = reply.handoff.destination if reply.handoff else None
            for name, passed in turn.expect.check(
                response=reply.response,
                ended=reply.end_conversation,
                handoff_destination=destination,
                handed_off=reply.handoff is not None,
            ):
                observer.expectation(persona.name, name, passed, reply.response)
        if reply.end_conversation or reply.handoff is not None:
            return None, reply.handoff, True, turns
    return None, None, False, turns


async def _close_if_created(
    client: PolyAIClient,
    creating: asyncio.Future[CreateChatResponse],
    observer: Observer,
    origin: float,
) -> None:
    """After a cancellation during create: wait for it a little, and close what it created.

    Create and close are calls that ended like any other, so the observer hears of both; a
    create still out when the wait ends is left to the request counter (cancelled).
    """
    clock = time.perf_counter
    try:
        created = await asyncio.wait_for(asyncio.shield(creating), CLOSE_ON_CANCEL_SECONDS)
    except PolyAIError as exc:
        observer.request("create", "POST", clock() - origin, exc, None)
        return
    except (asyncio.TimeoutError, asyncio.CancelledError):
        creating.cancel()
        return
    observer.request("create", "POST", clock() - origin, None, None)
    await _close_on_cancel(client, created.conversation_id, observer)


async def _close_on_cancel(client: PolyAIClient, conversation_id: str, observer: Observer) -> None:
    """Close a cancelled conversation, bounded by ``CLOSE_ON_CANCEL_SECONDS``; report the close.

    A close cut off by the bound is not reported here: the request counter counts it as
    cancelled.
    """
    clock = time.perf_counter
    call_started = clock()
    try:
        await asyncio.wait_for(client.close_chat(conversation_id), CLOSE_ON_CANCEL_SECONDS)
    except PolyAIError as exc:
        observer.request("close", "PUT", clock() - call_started, exc, None)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        return
    else:
        observer.request("close", "PUT", clock() - call_started, None, None)


class Cancellations:
    """How a runner cancels its conversations, for a conversation without a task per create.

    Alone, run_conversation runs its create in a task of its own, shielded, so that a create
    cancelled in flight may still be closed: a task, a shield and two turns of the loop, about
    a tenth of the CPU of a one-turn conversation. Given one of these, it awaits its create in
    its own task, and the runner cancels it with ``cancel``: one in its create is let finish
    it (for at most ``CLOSE_ON_CANCEL_SECONDS``; then cancelled, as the shielded create is), and
    then closes what it created and raises CancelledError, as the shielded one does.
    """

    __slots__ = ("asked", "creating")

    def __init__(self) -> None:
        self.creating: set[asyncio.Task[Any]] = set()  # conversations in their create
        self.asked: set[asyncio.Task[Any]] = set()  # those asked to stop once it ends

    def cancel(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task``'s conversation: at once, or as soon as its create has ended."""
        if task in self.creating and task not in self.asked:
            self.asked.add(task)
            task.add_done_callback(self.asked.discard)
            asyncio.get_running_loop().call_later(CLOSE_ON_CANCEL_SECONDS, self._give_up, task)
        else:
            task.cancel()

    def _give_up(self, task: asyncio.Task[Any]) -> None:
        if task in self.creating:  # its create did not end in time: it is cancelled too
            task.cancel()


# The observer methods that have raised, by observer class: each is logged once a process.
_logged: set[tuple[type[Any], str]] = set()


class _Guarded:
    """An Observer passing each outcome on to another, logging what it raises.

    Made once per run by the runner (``guard``), not once per conversation; each method is
    one frame on the way to the observer's (the hot path: every call of a run).
    """

    __slots__ = ("_observer",)

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def _failed(self, method: str) -> None:
        observer = self._observer
        key = (type(observer), method)
        if key not in _logged:
            _logged.add(key)
            logger.warning(
                "polyai_async: the observer's %s.%s raised; the conversation goes on "
                "(its later failures are not logged)",
                type(observer).__qualname__,
                method,
                exc_info=True,
            )

    def request(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._observer.request(*args, **kwargs)
        except Exception:
            self._failed("request")

    def expectation(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._observer.expectation(*args, **kwargs)
        except Exception:
            self._failed("expectation")

    def conversation(self, *args: Any, **kwargs: Any) -> None:
        try:
            self._observer.conversation(*args, **kwargs)
        except Exception:
            self._failed("conversation")


def guard(observer: Observer) -> Observer:
    """``observer``, its methods' failures logged once instead of raised (see run_conversation).

    A caller running many conversations into one observer guards it once and passes the
    result: run_conversation does not guard it again.
    """
    return observer if type(observer) is _Guarded else _Guarded(observer)
