"""Event hooks: what a call did, told to the functions the client was given, as it happens.

One mechanism serves every observer: the user's ``event_hooks``, the OpenTelemetry spans and
metrics (``telemetry=True``), the ``POLYAI_LOG=debug`` request log and the load engine's
counters all subscribe here. With none of them the client never builds an event: the hot path
checks one attribute per call.

The events of one call, in order::

    request_sent -> answer_received -> (retry_scheduled -> request_sent -> ...) -> call_failed

``request_sent`` comes once per HTTP attempt, ``answer_received`` once per answer read (any
status), ``retry_scheduled`` before each backoff, ``call_failed`` once if the call raises.
A call that succeeds ends with an ``answer_received`` whose ``error`` is None.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol

import attrs

from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    ConfigurationError,
    ResponseValidationError,
)

__all__ = ["CallEvent", "EventHook"]

logger = logging.getLogger("polyai_async")

EventName = Literal["request_sent", "answer_received", "retry_scheduled", "call_failed"]
EVENTS: Final[tuple[str, ...]] = (
    "request_sent",
    "answer_received",
    "retry_scheduled",
    "call_failed",
)
"""The events a hook can subscribe to, in the order a call produces them."""

_calls = itertools.count(1)


def failure_reason(error: BaseException | None) -> str | None:  # noqa: PLR0911 - a table
    """A short, low-cardinality name for why an attempt or call failed."""
    if error is None:
        return None
    if isinstance(error, APIStatusError):
        return f"http_{error.status}"
    if isinstance(error, APITimeoutError):
        return "timeout"
    if isinstance(error, APIConnectionError):
        return "connection_error"
    if isinstance(error, ResponseValidationError):
        return "invalid_answer"
    if isinstance(error, ClientClosedError):
        return "client_closed"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return type(error).__name__


@attrs.frozen(kw_only=True)
class CallEvent:
    """One thing that happened during a call, as a hook receives it. It holds no credential.

    Attributes:
        name: ``request_sent``, ``answer_received``, ``retry_scheduled`` or ``call_failed``.
        endpoint: the call: ``create_chat``, ``respond`` or ``close_chat``.
        conversation_id: the conversation, once known (create's comes with its answer).
        attempt: the HTTP attempt, from 1 (for ``call_failed``: the attempts made).
        status: the HTTP status of the attempt's answer; None when none came (yet).
        elapsed: seconds since the call started.
        correlation_id: the answer's ``X-PolyAI-Correlation-Id``, if it sent one.
        error: why the attempt or call failed: a PolyAIError, or ``asyncio.CancelledError``
            for a cancelled call (``call_failed``); None on success.
        delay: for ``retry_scheduled``, the seconds until the next attempt.
        call_id: the same number on every event of one call, unique in the process.
        extra_headers: for ``request_sent``, headers a hook may add to this attempt's
            request (a trace context, say); they can never replace the credentials or
            ``Content-Type``. None for the other events.
        concurrency_limit: the client's adaptive concurrency cap when the event happened
            (None when adaptive concurrency is off).
    """

    name: str
    endpoint: str
    conversation_id: str | None
    attempt: int
    status: int | None
    elapsed: float
    correlation_id: str | None
    error: BaseException | None = None
    delay: float | None = None
    call_id: int
    extra_headers: dict[str, str] | None = None
    concurrency_limit: int | None = None

    @property
    def reason(self) -> str | None:
        """Why it failed, in a few words fit for a metric label; None without an error.

        ``http_503``, ``timeout``, ``connection_error``, ``invalid_answer``,
        ``client_closed``, ``cancelled``, else the error's class name.
        """
        return failure_reason(self.error)


class EventHook(Protocol):
    """What ``event_hooks`` takes: a function given each event it subscribed to.

    It is called inline, on the event loop, as the event happens: it must be quick (count,
    append, set an attribute) and must not block. What it returns is ignored; what it raises
    is logged, and the call goes on.
    """

    def __call__(self, event: CallEvent, /) -> object: ...


class Tap(Protocol):
    """A private subscriber told of each event with the call itself: no CallEvent is built.

    For the library's own counters on the hot path (the load engine counts every request
    through one); event hooks cost a CallEvent per event, several microseconds a call. What a
    tap raises is logged, as a hook's is.
    """

    def request_sent(self, call: CallState, /) -> None: ...

    def answer_received(self, call: CallState, error: BaseException | None, /) -> None: ...

    def retry_scheduled(self, call: CallState, error: BaseException | None, /) -> None: ...

    def call_failed(self, call: CallState, error: BaseException, /) -> None: ...


class Hooks:
    """The subscribers of every event: built once per client."""

    __slots__ = ("answer_received", "call_failed", "request_sent", "retry_scheduled", "taps")

    def __init__(self) -> None:
        self.request_sent: tuple[EventHook, ...] = ()
        self.answer_received: tuple[EventHook, ...] = ()
        self.retry_scheduled: tuple[EventHook, ...] = ()
        self.call_failed: tuple[EventHook, ...] = ()
        self.taps: tuple[Tap, ...] = ()

    def add(self, name: str, hook: EventHook) -> None:
        """Subscribe ``hook`` to the event ``name``."""
        setattr(self, name, (*getattr(self, name), hook))

    def remove(self, name: str, hook: EventHook) -> None:
        """Unsubscribe ``hook`` from the event ``name`` (its first subscription)."""
        hooks = list(getattr(self, name))
        try:
            hooks.remove(hook)
        except ValueError:
            raise ConfigurationError(f"{hook!r} is not subscribed to {name}") from None
        setattr(self, name, tuple(hooks))

    @staticmethod
    def check(name: object, hook: object) -> str:
        """Check an event name and a hook; return the name."""
        if name not in EVENTS:
            raise ConfigurationError(
                f"event_hooks has an unknown event {name!r}: use {', '.join(EVENTS)}"
            )
        if not callable(hook):
            raise ConfigurationError(
                f"event_hooks[{name!r}] holds {type(hook).__name__}, which is not callable"
            )
        return str(name)

    def __bool__(self) -> bool:
        return bool(
            self.request_sent
            or self.answer_received
            or self.retry_scheduled
            or self.call_failed
            or self.taps
        )

    @classmethod
    def from_argument(cls, event_hooks: object) -> Hooks:
        """Check the client's ``event_hooks`` argument and subscribe what it names."""
        hooks = cls()
        if event_hooks is None:
            return hooks
        if not isinstance(event_hooks, Mapping):
            raise ConfigurationError(
                "event_hooks must be a dict of event name to a list of functions, such as "
                f'{{"retry_scheduled": [count_retry]}}; not {type(event_hooks).__name__}'
            )
        for name, given in event_hooks.items():
            if name not in EVENTS:
                raise ConfigurationError(
                    f"event_hooks has an unknown event {name!r}: use {', '.join(EVENTS)}"
                )
            functions = [given] if callable(given) else given
            if isinstance(functions, str | bytes) or not isinstance(functions, Sequence):
                raise ConfigurationError(
                    f"event_hooks[{name!r}] must be a list of functions, "
                    f"not {type(functions).__name__}"
                )
            for function in functions:
                hooks.add(cls.check(name, function), function)
        return hooks


def _tap_failed(tap: Tap, name: str) -> None:
    logger.warning("polyai_async: the %s tap %r raised; the call goes on", name, tap, exc_info=True)


def _run(hooks: tuple[EventHook, ...], event: CallEvent) -> None:
    for hook in hooks:
        try:
            hook(event)
        except Exception:  # a broken observer must not break the call; say so
            logger.warning(
                "polyai_async: the %s hook %r raised; the call goes on",
                event.name,
                hook,
                exc_info=True,
            )


class CallState:
    """One observed call: what its events report.

    Made only when the client has hooks; the client and the retrier tell it what happens.
    """

    __slots__ = (
        "attempt",
        "call_id",
        "conversation_id",
        "correlation_id",
        "endpoint",
        "hooks",
        "limiter",
        "now",
        "started",
        "status",
    )

    def __init__(
        self,
        hooks: Hooks,
        endpoint: str,
        conversation_id: str | None,
        now: Callable[[], float],
        limiter: Any = None,
    ) -> None:
        self.hooks = hooks
        self.limiter = limiter  # the client's _adaptive.Limiter, if any
        self.endpoint = endpoint
        self.conversation_id = conversation_id
        self.now = now
        self.started = now()
        self.call_id = next(_calls)
        self.attempt = 0
        self.status: int | None = None
        self.correlation_id: str | None = None

    def _event(self, name: str, **fields: Any) -> CallEvent:
        return CallEvent(
            name=name,
            endpoint=self.endpoint,
            conversation_id=self.conversation_id,
            attempt=self.attempt,
            status=self.status,
            elapsed=self.now() - self.started,
            correlation_id=self.correlation_id,
            call_id=self.call_id,
            concurrency_limit=self.limiter.limit if self.limiter is not None else None,
            **fields,
        )

    def begin_attempt(self) -> None:
        """A new HTTP attempt starts: forget the last one's answer."""
        self.attempt += 1
        self.status = None
        self.correlation_id = None

    def request_sent(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """Tell the hooks; return the headers to send (the hooks' extra ones under ours)."""
        for tap in self.hooks.taps:
            try:
                tap.request_sent(self)
            except Exception:
                _tap_failed(tap, "request_sent")
        hooks = self.hooks.request_sent
        if not hooks:
            return headers
        extra: dict[str, str] = {}
        _run(hooks, self._event("request_sent", extra_headers=extra))
        if not extra:
            return headers
        # The client's own headers win: a hook can add a header, never replace a credential.
        ours = {name.lower() for name in headers}
        merged = dict(headers)
        for name, value in extra.items():
            if (
                not isinstance(name, str)
                or not isinstance(value, str)
                or name.lower() in ours
                or any(ch in name + value for ch in "\r\n\0")
            ):
                logger.warning("polyai_async: a request_sent hook's header %r is ignored", name)
            else:
                merged[name] = value
        return merged

    def answered(self, status: int, correlation_id: str | None) -> None:
        """Record the status and correlation id of the answer that just came."""
        self.status = status
        self.correlation_id = correlation_id

    def answer_received(self, error: BaseException | None, answer: object = None) -> None:
        """The attempt's answer was read and checked; ``error`` is what it became, if any."""
        if self.conversation_id is None and answer is not None:
            self.conversation_id = getattr(answer, "conversation_id", None)
        for tap in self.hooks.taps:
            try:
                tap.answer_received(self, error)
            except Exception:
                _tap_failed(tap, "answer_received")
        if self.hooks.answer_received:
            _run(self.hooks.answer_received, self._event("answer_received", error=error))

    def retry_scheduled(self, error: BaseException | None, delay: float) -> None:
        """The attempt failed with ``error`` and another follows in ``delay`` seconds."""
        for tap in self.hooks.taps:
            try:
                tap.retry_scheduled(self, error)
            except Exception:
                _tap_failed(tap, "retry_scheduled")
        if self.hooks.retry_scheduled:
            _run(
                self.hooks.retry_scheduled,
                self._event("retry_scheduled", error=error, delay=delay),
            )

    def call_failed(self, error: BaseException) -> None:
        """The call raises ``error``."""
        for tap in self.hooks.taps:
            try:
                tap.call_failed(self, error)
            except Exception:
                _tap_failed(tap, "call_failed")
        if self.hooks.call_failed:
            _run(self.hooks.call_failed, self._event("call_failed", error=error))
