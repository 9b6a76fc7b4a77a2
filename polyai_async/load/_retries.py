"""Counting the client's retries: the one place that knows how.

The client tells its event hooks of every retry (``retry_scheduled``, before the backoff
sleep); a call that succeeds after retries raises nothing, so only a hook sees them. The load
engine and the Locust bridge both count through here. During a load run the client's warning
line per retry is filtered out (``quiet_retry_warnings``): the report counts them instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from .._client import PolyAIClient
from .._hooks import CallEvent
from .._retry import RETRY_LOG_MESSAGE

__all__ = ["count_retries", "quiet_retry_warnings", "retry_counter"]

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


def _not_a_retry_warning(record: logging.LogRecord) -> bool:
    return record.msg != RETRY_LOG_MESSAGE


# Runs in flight that asked for quiet (several may share a process): the filter stays while any do.
_quiet_runs = [0]


@contextlib.contextmanager
def quiet_retry_warnings() -> Iterator[None]:
    """Within the block, the client logs no warning per retry (every other record passes).

    A load run counts its retries (``count_retries``) and reports them; hundreds of warning
    lines would only bury the live view and the report.
    """
    logger = logging.getLogger("polyai_async")
    logger.addFilter(_not_a_retry_warning)
    _quiet_runs[0] += 1
    try:
        yield
    finally:
        _quiet_runs[0] -= 1
        if not _quiet_runs[0]:
            logger.removeFilter(_not_a_retry_warning)
