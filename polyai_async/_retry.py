"""The retry rules, all of them: what is retried, how long to wait, and when to give up.

- Retried: the statuses in ``retry_statuses`` (429, 500, 502, 503, 504) and transport errors.
  Never retried: other 4xx, answers that fail validation, a closed client.
- create and respond are not idempotent. With ``retry_ambiguous=False`` they are retried only
  when the request provably never reached the server (the connection could not be made) or
  the server said it did not take it (429, 503). close is a PUT and is always retried.
- Backoff is exponential with full jitter, capped by ``max_backoff``; ``Retry-After``
  (seconds or an HTTP date) or ``retry-after-ms`` replaces it, up to ``max_retry_after``.
- ``deadline`` bounds the whole call: no attempt starts and no sleep is taken past it, and each
  attempt's timeout shrinks to the time left.
- A retry budget shared by the client (botocore's "standard" mode) stops retry storms: every
  retry spends tokens, every success refunds one; with the budget spent, failures raise at once.

The success path does not touch tenacity: the first attempt runs directly, and the tenacity
machinery, built once per client, is entered only after a retryable failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

import attrs
import tenacity

from ._config import positive_int, positive_seconds, seconds_or_zero
from ._errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    PolyAIError,
    one_line,
)

__all__ = ["RetryPolicy"]

T = TypeVar("T")
logger = logging.getLogger("polyai_async")
#: The warning logged before each retry (the load engine, which counts retries, filters it out).
RETRY_LOG_MESSAGE = "polyai_async: %s attempt %d of %d failed (%s); retrying in %.2fs%s"

# Statuses that mean the server did not take the request, so even a non-idempotent call is safe.
_NOT_PROCESSED = frozenset({429, 503})
# Budget costs, as in botocore's standard retry mode.
_RETRY_COST = 5
_TIMEOUT_RETRY_COST = 10
_SUCCESS_REFUND = 1


def _statuses(value: Iterable[int]) -> frozenset[int]:
    """retry_statuses as a frozenset of 4xx and 5xx codes, or a ConfigurationError."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(
            "RetryPolicy.retry_statuses must be a set of status codes such as {429, 503}, "
            f"not {type(value).__name__}"
        )
    statuses = frozenset(value)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int):
            raise ConfigurationError(
                "RetryPolicy.retry_statuses must hold whole numbers such as 503, "
                f"got {status!r} ({type(status).__name__})"
            )
    bad = sorted(s for s in statuses if not 400 <= s <= 599)
    if bad:
        raise ConfigurationError(f"RetryPolicy.retry_statuses must be 4xx or 5xx codes, got {bad}")
    return statuses


def _bool(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be True or False, got {value!r}"
        )


def _budget(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{type(instance).__name__}.{attribute.name} must be a whole number of tokens >= 0 "
            f"or None, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a call is retried, and how long it may take in all.

    Every field is checked: a wrong type, NaN or infinity is a ConfigurationError naming it.

    Args:
        max_attempts: HTTP attempts per call, the first included; 1 turns retries off.
        initial_backoff: the first backoff's upper bound, in seconds; it doubles per retry.
        max_backoff: the cap on any computed backoff, in seconds.
        deadline: seconds the whole call may take, every attempt and sleep included.
        retry_statuses: statuses that are retried (4xx or 5xx codes).
        retry_ambiguous: retry create and respond even when the server may already have
            processed the request (which can duplicate a turn). Set False where a duplicated
            turn is worse than a failed one.
        max_retry_after: the most a server's ``Retry-After`` may make us wait, in seconds.
        retry_budget: tokens in the client-wide retry budget (a retry costs 5, a retry after
            a timeout 10, a success refunds 1); None turns the budget off.
    """

    max_attempts: int = attrs.field(default=3, validator=positive_int)
    initial_backoff: float = attrs.field(default=0.5, validator=seconds_or_zero)
    max_backoff: float = attrs.field(default=8.0, validator=seconds_or_zero)
    deadline: float = attrs.field(default=60.0, validator=positive_seconds)
    retry_statuses: frozenset[int] = attrs.field(
        default=frozenset({429, 500, 502, 503, 504}), converter=_statuses
    )
    retry_ambiguous: bool = attrs.field(default=True, validator=_bool)
    max_retry_after: float = attrs.field(default=60.0, validator=seconds_or_zero)
    retry_budget: int | None = attrs.field(default=500, validator=_budget)


@attrs.define
class RetryBudget:
    """A token bucket shared by every call of one client."""

    capacity: int
    tokens: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.tokens = self.capacity

    def spend(self, cost: int) -> bool:
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def refund(self) -> None:
        if self.tokens < self.capacity:
            self.tokens = min(self.capacity, self.tokens + _SUCCESS_REFUND)


@attrs.define(eq=False)
class _Call(Generic[T]):
    """One call's state while it is retried."""

    attempt: Callable[[float], Awaitable[T]]
    what: str
    idempotent: bool
    deadline: float
    first_error: PolyAIError | None
    # The call's event hooks (a _hooks.CallState), when the client has any.
    observer: Any = None
    attempts: int = 1

    async def next_attempt(self) -> T:
        # tenacity's attempt 1 replays the failure that sent us here, without a request.
        if self.first_error is not None:
            error, self.first_error = self.first_error, None
            raise error
        self.attempts += 1
        return await self.attempt(self.deadline - asyncio.get_running_loop().time())


def _error(state: tenacity.RetryCallState) -> BaseException | None:
    """The exception the attempt tenacity just ran raised, if any."""
    return state.outcome.exception() if state.outcome is not None else None


class Retrier:
    """Runs calls under one RetryPolicy; built once per client."""

    def __init__(self, policy: RetryPolicy, *, share_budget_of: Retrier | None = None) -> None:
        self.policy = policy
        self._budget: RetryBudget | None
        if share_budget_of is not None:
            # Another policy for the same client (with_options): one budget for both.
            self._budget = share_budget_of._budget
        elif policy.retry_budget is not None:
            self._budget = RetryBudget(policy.retry_budget)
        else:
            self._budget = None
        # Built at the first retry: a client made per call (with_options) never pays for it.
        self._template: tenacity.AsyncRetrying | None = None

    @property
    def _retrying(self) -> tenacity.AsyncRetrying:
        # The template is copied per failing call: tenacity keeps per-run state on the object.
        if self._template is None:
            self._backoff = tenacity.wait_random_exponential(
                multiplier=self.policy.initial_backoff, max=self.policy.max_backoff
            )
            self._template = tenacity.AsyncRetrying(
                retry=self._should_retry,
                wait=self._wait,
                stop=self._stop,
                before_sleep=self._before_sleep,
                reraise=True,
            )
        return self._template

    @property
    def budget_tokens(self) -> float | None:
        """Tokens left in the retry budget (None without one)."""
        return self._budget.tokens if self._budget is not None else None

    def succeeded(self) -> None:
        """Record a call that succeeded: it refunds the budget a little."""
        if self._budget is not None:
            self._budget.refund()

    async def retry(
        self,
        attempt: Callable[[float], Awaitable[T]],
        error: PolyAIError,
        *,
        started: float,
        what: str,
        idempotent: bool,
        observer: Any = None,
    ) -> T:
        """Continue a call whose first attempt failed with ``error``, or raise it.

        The caller ran the first attempt itself (the success path never gets here); this runs
        ``attempt(seconds_left)`` again until it succeeds or the policy gives up. ``observer``
        (the call's event hooks) hears of every retry scheduled.
        """
        deadline = started + self.policy.deadline
        if self.policy.max_attempts == 1 or not self._retryable(error, idempotent):
            raise self._final(error, 1, deadline)
        call = _Call(attempt, what, idempotent, deadline, error, observer)
        try:
            result: T = await self._retrying.copy()(call.next_attempt)
        except PolyAIError as final:
            self._final(final, call.attempts, deadline)
            raise
        self.succeeded()
        return result

    def _final(self, error: PolyAIError, attempts: int, deadline: float) -> PolyAIError:
        error.attempts = attempts
        if isinstance(error, APITimeoutError) and asyncio.get_running_loop().time() >= deadline:
            error.message += f"; the call's deadline of {self.policy.deadline:g}s passed"
        return error

    def _retryable(self, error: BaseException, idempotent: bool) -> bool:
        if isinstance(error, APIStatusError):
            if error.status not in self.policy.retry_statuses:
                return False
            return idempotent or self.policy.retry_ambiguous or error.status in _NOT_PROCESSED
        if isinstance(error, APIConnectionError):
            return idempotent or self.policy.retry_ambiguous or not error.request_sent
        return False

    # The hooks below get tenacity's state; the call is the function tenacity runs.
    @staticmethod
    def _call(state: tenacity.RetryCallState) -> _Call[object]:
        call = state.fn.__self__  # type: ignore[union-attr]
        assert isinstance(call, _Call)  # noqa: S101 - tenacity only runs _Call.next_attempt
        return call

    def _should_retry(self, state: tenacity.RetryCallState) -> bool:
        error = _error(state)
        return error is not None and self._retryable(error, self._call(state).idempotent)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        error = _error(state)
        if isinstance(error, APIStatusError):
            asked = error.retry_after
            if asked is not None:
                return min(asked, self.policy.max_retry_after)
        return float(self._backoff(state))

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        call = self._call(state)
        error = _error(state)
        if state.attempt_number >= self.policy.max_attempts:
            return True
        # No sleep is taken past the deadline, nor one that leaves no time for an attempt.
        if asyncio.get_running_loop().time() + state.upcoming_sleep >= call.deadline:
            return True
        if self._budget is not None:
            cost = _TIMEOUT_RETRY_COST if isinstance(error, APITimeoutError) else _RETRY_COST
            if not self._budget.spend(cost):
                if isinstance(error, PolyAIError):
                    error.message += "; not retried: the client's retry budget is spent"
                return True
        return False

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        call = self._call(state)
        error = _error(state)
        correlation = getattr(error, "correlation_id", None)
        logger.warning(
            RETRY_LOG_MESSAGE,
            call.what,
            state.attempt_number,
            self.policy.max_attempts,
            error,
            state.upcoming_sleep,
            f" (correlation id {one_line(correlation, 80)})" if correlation else "",
        )
        if call.observer is not None:
            call.observer.retry_scheduled(error, state.upcoming_sleep)
