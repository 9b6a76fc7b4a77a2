"""Adaptive concurrency: one cap on a client's calls in flight, moved by what the API answers.

The rules, all of them (``PolyAIClient(adaptive_concurrency=True)`` turns them on):

- Every HTTP attempt takes a slot; attempts wait for one in arrival order (the connection
  gate's FIFO, ``_gate.Gate``), bounded by the call's deadline, on asyncio primitives only.
  A call sleeping between retries holds none.
- Slow start, as TCP's: the cap starts at ``initial_limit`` and grows by one per success,
  doubling each round trip, until the first overload.
- Additive increase: after that, ``increase`` per round trip (``increase / cap`` per success),
  only while the calls use at least half the cap (an idle client does not inflate it).
- Near the cap where the API last said no, it holds (TCP CUBIC's plateau): it probes past it
  only after ten times the pause that overload imposed, and then ten times slower, so that
  a steady client spends about a tenth of its time at most paused by its probes. Past that
  cap with no overload, it grows as before.
- Multiplicative decrease: a 429 or 503 answer, or an attempt that timed out waiting for its
  answer, multiplies the cap by ``decrease_ratio`` (at least ``min_limit``), once per round
  trip: the overloads of calls that started before the last decrease are the same congestion.
  Each of them lowers by one the cap where the API said no (a slow start that overshot by 8
  calls gets 8 overloads: the API's limit is 8 below where it was crossed).
- ``Retry-After`` on such an answer (up to the retry policy's ``max_retry_after``) pauses
  every new attempt of the client until it passes, not just the retry of the call that got it.

The shape is Netflix's concurrency-limits (``AIMDLimit`` and a limiter with a queue in front)
with TCP's slow start; botocore's adaptive mode is a rate limiter that blocks the event loop
in aiobotocore, which this never does.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import attrs

from ._config import positive_int
from ._errors import APIStatusError, APITimeoutError, ConfigurationError
from ._gate import Gate

__all__ = ["AdaptiveConcurrency"]

logger = logging.getLogger("polyai_async")

# Near the last overload's cap, growth is this share of ``increase``, and starts only after
# this many times the pause the overload imposed.
_PLATEAU = 0.1
_HOLD = 10.0


def _increase(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be a finite number > 0, got {value!r}"
        )


def _ratio(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be a number between 0 and 1 "
            f"(exclusive), got {value!r}"
        )


def _statuses(value: Any) -> frozenset[int]:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ConfigurationError(
            "AdaptiveConcurrency.overload_statuses must be a set of status codes such as "
            f"{{429, 503}}, not {type(value).__name__}"
        )
    statuses = frozenset(value)
    bad = [s for s in statuses if isinstance(s, bool) or not isinstance(s, int)]
    bad += [s for s in statuses if isinstance(s, int) and not 400 <= s <= 599]
    if bad:
        raise ConfigurationError(
            f"AdaptiveConcurrency.overload_statuses must hold 4xx or 5xx codes, got {bad[0]!r}"
        )
    return statuses


@attrs.frozen(kw_only=True)
class AdaptiveConcurrency:
    """The limits of adaptive concurrency: ``PolyAIClient(adaptive_concurrency=...)``.

    The client caps its HTTP attempts in flight and moves the cap as the API answers: it
    starts small and doubles per round trip (slow start), then adds ``increase`` per round
    trip while calls succeed, and multiplies it by ``decrease_ratio`` on a 429, a 503 or a
    timeout (AIMD); a ``Retry-After`` pauses every new attempt until it passes. ``True``
    means these defaults. See the Concurrency page.

    Every field is checked: a wrong type or value is a ConfigurationError naming it.

    Args:
        initial_limit: the cap at the start, before anything is known.
        min_limit: the cap never goes below this.
        max_limit: the cap never goes above this. The pool's ``max_connections`` bounds the
            attempts in flight too.
        increase: what the cap gains per round trip of successful calls, once past slow start.
        decrease_ratio: what the cap is multiplied by on an overload (0.5 halves it, as TCP).
        overload_statuses: answers that mean "too much": they decrease the cap, and their
            ``Retry-After`` pauses the client.
    """

    initial_limit: int = attrs.field(default=4, validator=positive_int)
    min_limit: int = attrs.field(default=1, validator=positive_int)
    max_limit: int = attrs.field(default=100, validator=positive_int)
    increase: float = attrs.field(default=1.0, validator=_increase)
    decrease_ratio: float = attrs.field(default=0.5, validator=_ratio)
    overload_statuses: frozenset[int] = attrs.field(
        default=frozenset({429, 503}), converter=_statuses
    )

    def __attrs_post_init__(self) -> None:
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigurationError(
                "AdaptiveConcurrency needs min_limit <= initial_limit <= max_limit, got "
                f"{self.min_limit}, {self.initial_limit}, {self.max_limit}"
            )

    @classmethod
    def coerce(cls, value: object) -> AdaptiveConcurrency | None:
        """The client's ``adaptive_concurrency`` argument: False/None, True or a config."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, AdaptiveConcurrency):
            return value
        raise ConfigurationError(
            "adaptive_concurrency must be True, False or an AdaptiveConcurrency, "
            f"not {type(value).__name__}"
        )


class Limiter:
    """One client's cap on attempts in flight, and the pause.

    ``admit()`` or ``await acquire()`` takes a slot and returns a ticket; ``release(ticket,
    error)`` gives it back and moves the cap by what the attempt's answer was.
    """

    def __init__(self, config: AdaptiveConcurrency, *, max_pause: float) -> None:
        self.config = config
        self._max_pause = max_pause
        self._limit = float(config.initial_limit)
        self._slow_start_until = float(config.max_limit)
        self._ceiling: float | None = None  # the cap at the last overload
        self._epoch = 0  # decreases so far; an attempt's ticket is the epoch it started in
        self._paused_until = 0.0
        self._hold_until = 0.0  # no probing past the ceiling before this
        self._gate = Gate(config.initial_limit)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def limit(self) -> int:
        """The cap now."""
        return self._gate.size

    @property
    def in_flight(self) -> int:
        """Attempts holding a slot now."""
        return self._gate.in_use

    def admit(self, loop: asyncio.AbstractEventLoop) -> int | None:
        """A ticket if a slot is free, nobody waits and no pause holds; never suspends."""
        if loop is not self._loop:
            self._new_loop(loop)
        if self._paused_until and loop.time() < self._paused_until:
            return None
        return self._epoch if self._gate.try_acquire() else None

    async def acquire(self) -> int:
        """Wait for a slot in arrival order, then for any pause to pass; return the ticket.

        Cancel the task to give up waiting (the client's timer does, at the call's deadline).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._new_loop(loop)
        gate = self._gate
        if not gate.try_acquire():
            await gate.acquire()
        try:
            # The queue is kept through a pause: its head holds slots and goes first after it;
            # a time, not an event, and a later 429 may extend it while we sleep.
            while (wait := self._paused_until - loop.time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
        except BaseException:
            gate.release()
            raise
        return self._epoch

    def release(self, ticket: int, error: BaseException | None, *, neutral: bool = False) -> None:
        """Give the slot back; ``error`` is what the attempt raised (None: it succeeded).

        ``neutral``: the slot was not used (nothing was sent): the cap does not move.
        """
        if neutral:
            pass
        elif error is None:
            self._grow()
        elif isinstance(error, APIStatusError):
            if error.status in self.config.overload_statuses:
                asked = error.retry_after
                pause = min(asked, self._max_pause) if asked is not None and asked > 0 else 0.0
                self._overloaded(ticket, f"HTTP {error.status}", pause)
                if pause:
                    self._pause(pause)
        elif isinstance(error, APITimeoutError) and error.request_sent:
            self._overloaded(ticket, "a timeout", 0.0)
        self._gate.release()

    def _new_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        # A client used under a second asyncio.run: the old loop's waiters are gone.
        self._loop = loop
        self._gate = Gate(self._gate.size)
        self._paused_until = 0.0

    def _grow(self) -> None:
        limit = self._limit
        config = self.config
        if limit >= config.max_limit or self._gate.in_use * 2 < limit:
            return  # at the top, or the calls do not use the cap: nothing learnt
        if limit < self._slow_start_until:
            limit += 1.0
        elif self._ceiling is not None and limit + 1.0 >= self._ceiling:
            if self._loop is not None and self._loop.time() < self._hold_until:
                return
            limit += config.increase * _PLATEAU / limit
        else:
            limit += config.increase / limit
        if self._ceiling is not None and limit >= self._ceiling + 1.0:
            self._ceiling = None  # past the last overload with none: the API took more
        self._set(min(limit, float(config.max_limit)))

    def _overloaded(self, ticket: int, why: str, pause: float) -> None:
        if ticket != self._epoch:
            # In flight with the call that brought the last decrease: the same congestion,
            # decreased for once; but each such overload says the API took one call fewer.
            if ticket == self._epoch - 1 and self._ceiling is not None:
                self._ceiling = max(self._ceiling - 1.0, self._limit)
            return
        if self._loop is not None:
            self._hold_until = self._loop.time() + _HOLD * pause
        self._epoch += 1
        before = self._limit
        self._ceiling = before
        limit = max(float(self.config.min_limit), before * self.config.decrease_ratio)
        self._slow_start_until = limit
        self._set(limit)
        logger.info(
            "polyai_async: %s; adaptive concurrency cap %d -> %d", why, int(before), self.limit
        )

    def _pause(self, seconds: float) -> None:
        loop = self._loop
        if loop is not None:
            self._paused_until = max(self._paused_until, loop.time() + seconds)

    def _set(self, limit: float) -> None:
        self._limit = limit
        size = int(limit)
        if size != self._gate.size:
            self._gate.resize(size)
