"""Counting every HTTP request the client sends, with its outcome.

The client tells its event hooks of each attempt it sends (``request_sent``), of each answer
it reads (``answer_received``), of each retry (``retry_scheduled``) and of each call that
raises (``call_failed``, cancellation included). From those, every request that left the
client ends as exactly one of:

- ``ok``: an answer came and was good;
- ``failed``: an error answer, a timeout, a reset connection...;
- ``cancelled``: the call was cancelled while the request was out (the graceful stop ran out,
  or the run was stopped), so the client never learnt its outcome.

A call cancelled at any point is also counted once as a cancelled call. An attempt that never
left (no connection came free in time) is not a request: the server never saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

from .._client import PolyAIClient
from .._hooks import CallEvent

__all__ = ["OUTCOMES", "count_requests", "request_hooks"]

OUTCOMES = ("ok", "failed", "cancelled")
# The client's names for its calls (CallEvent.endpoint), as the load engine names them.
_ENDPOINTS = {"create_chat": "create", "respond": "respond", "close_chat": "close"}


class _RequestCounter:
    """The four hooks, sharing the requests still out (by call id)."""

    def __init__(
        self,
        on_sent: Callable[[str], None],
        on_outcome: Callable[[str, str], None],
        on_call_cancelled: Callable[[str], None],
    ) -> None:
        self.on_sent = on_sent
        self.on_outcome = on_outcome
        self.on_call_cancelled = on_call_cancelled
        self.out: dict[int, str] = {}  # call id -> endpoint, while its request is out

    def sent(self, event: CallEvent) -> None:
        endpoint = _ENDPOINTS.get(event.endpoint, "other")
        self.out[event.call_id] = endpoint
        self.on_sent(endpoint)

    def _end(self, event: CallEvent, outcome: str) -> None:
        endpoint = self.out.pop(event.call_id, None)
        if endpoint is not None:
            self.on_outcome(endpoint, outcome)

    def answered(self, event: CallEvent) -> None:
        self._end(event, "ok" if event.error is None else "failed")

    def retrying(self, event: CallEvent) -> None:
        # The attempt failed with no answer read (a timeout, a reset): it ends here.
        self._end(event, "failed")

    def call_failed(self, event: CallEvent) -> None:
        cancelled = isinstance(event.error, asyncio.CancelledError)
        self._end(event, "cancelled" if cancelled else "failed")
        if cancelled:
            self.on_call_cancelled(_ENDPOINTS.get(event.endpoint, "other"))


def request_hooks(
    on_sent: Callable[[str], None],
    on_outcome: Callable[[str, str], None],
    on_call_cancelled: Callable[[str], None],
) -> tuple[tuple[str, Callable[[CallEvent], None]], ...]:
    """The ``(event name, hook)`` pairs that count requests (see ``count_requests``).

    For a client that keeps them for its whole life (the Locust bridge's).
    """
    counter = _RequestCounter(on_sent, on_outcome, on_call_cancelled)
    return (
        ("request_sent", counter.sent),
        ("answer_received", counter.answered),
        ("retry_scheduled", counter.retrying),
        ("call_failed", counter.call_failed),
    )


@contextlib.contextmanager
def count_requests(
    client: PolyAIClient,
    on_sent: Callable[[str], None],
    on_outcome: Callable[[str, str], None],
    on_call_cancelled: Callable[[str], None],
) -> Iterator[None]:
    """Within the block, report every request ``client`` sends and how it ended.

    Args:
        client: the client to observe (and every client ``with_options`` made from it).
        on_sent: called with the endpoint (``create``, ``respond``, ``close``) as a request
            leaves.
        on_outcome: called once per request sent, with its endpoint and its outcome (one of
            ``OUTCOMES``).
        on_call_cancelled: called with the endpoint of each call that was cancelled.
    """
    hooks = request_hooks(on_sent, on_outcome, on_call_cancelled)
    for name, hook in hooks:
        client.add_event_hook(name, hook)
    try:
        yield
    finally:
        for name, hook in hooks:
            client.remove_event_hook(name, hook)
