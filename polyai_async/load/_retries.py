"""Counting the client's retries: the one place that knows how (private).

The client tells its event hooks of every retry (``retry_scheduled``, before the backoff
sleep); a call that succeeds after retries raises nothing, so only a hook sees them. The load
engine and the Locust bridge both count through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from .._client import PolyAIClient
from .._hooks import CallEvent

__all__ = ["count_retries", "retry_counter"]

# The client's names for its calls (CallEvent.endpoint), as the load engine names them.
_ENDPOINTS = {"create_chat": "create", "respond": "respond", "close_chat": "close"}


def retry_counter(on_retry: Callable[[str], None]) -> Callable[[CallEvent], None]:
    """A ``retry_scheduled`` hook that calls ``on_retry(endpoint)`` once per retry."""

    def hook(event: CallEvent) -> None:
        on_retry(_ENDPOINTS.get(event.endpoint, "other"))

    return hook


@contextlib.contextmanager
def count_retries(client: PolyAIClient, on_retry: Callable[[str], None]) -> Iterator[None]:
    """Within the block, call ``on_retry(endpoint)`` once per retry ``client`` makes.

    The hook is shared by every client ``with_options`` made from ``client``, and removed on
    the way out, which gives the client back its hook-free hot path.
    """
    hook = retry_counter(on_retry)
    client.add_event_hook("retry_scheduled", hook)
    try:
        yield
    finally:
        client.remove_event_hook("retry_scheduled", hook)
