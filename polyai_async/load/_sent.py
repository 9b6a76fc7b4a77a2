"""Counting every HTTP request the client sends, with its outcome.

The client tells its taps (``_hooks.Tap``) of each attempt it sends (``request_sent``), of
each answer it reads (``answer_received``), of each retry (``retry_scheduled``) and of each
call that raises (``call_failed``, cancellation included). From those, every request that left the
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
from .._hooks import CallState, Tap

__all__ = ["OUTCOMES", "count_requests", "request_tap"]

OUTCOMES = ("ok", "failed", "cancelled")
# The client's names for its calls (CallEvent.endpoint), as the load engine names them.
_ENDPOINTS = {"create_chat": "create", "respond": "respond", "close_chat": "close"}


class _RequestCounter:
    """The counting tap: the requests still out, by call id, and how each ended.

    A ``_hooks.Tap``: told of each event with the call itself, no CallEvent built.
    """

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

    def request_sent(self, call: CallState) -> None:
        endpoint = _ENDPOINTS.get(call.endpoint, "other")
        self.out[call.call_id] = endpoint
        self.on_sent(endpoint)

    def _end(self, call: CallState, outcome: str) -> None:
        endpoint = self.out.pop(call.call_id, None)
        if endpoint is not None:
            self.on_outcome(endpoint, outcome)

    def answer_received(self, call: CallState, error: BaseException | None) -> None:
        self._end(call, "ok" if error is None else "failed")

    def retry_scheduled(self, call: CallState, error: BaseException | None) -> None:
        # The attempt failed with no answer read (a timeout, a reset): it ends here.
        self._end(call, "failed")

    def call_failed(self, call: CallState, error: BaseException) -> None:
        cancelled = isinstance(error, asyncio.CancelledError)
        self._end(call, "cancelled" if cancelled else "failed")
        if cancelled:
            self.on_call_cancelled(_ENDPOINTS.get(call.endpoint, "other"))


def request_tap(
    on_sent: Callable[[str], None],
    on_outcome: Callable[[str, str], None],
    on_call_cancelled: Callable[[str], None],
) -> Tap:
    """A tap that counts requests (see ``count_requests``), for ``PolyAIClient._add_tap``.

    For a client that keeps it for its whole life (the Locust bridge's).
    """
    return _RequestCounter(on_sent, on_outcome, on_call_cancelled)


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
    # A tap, not four event hooks: no CallEvent is built for each of a run's requests.
    counter = request_tap(on_sent, on_outcome, on_call_cancelled)
    client._add_tap(counter)
    try:
        yield
    finally:
        client._remove_tap(counter)
