"""Counting the client's retries: the one place that knows how (private).

The client logs exactly one WARNING per retry on the ``polyai_async`` logger, before its
backoff sleep, with the call's name (``create_chat``, ``respond``, ``close_chat``) as the
first argument: a call that succeeds after retries raises nothing, so only the log sees them.
When the client grows event hooks, this module is what changes; nothing else counts retries.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

__all__ = ["count_retries"]

# The client's names for its calls (the retry record's first argument), by endpoint.
_CALL_NAMES = {"create_chat": "create", "respond": "respond", "close_chat": "close"}


class _RetryCounter(logging.Filter):
    """A filter on the ``polyai_async`` logger: counts each retry record and drops it."""

    def __init__(self, on_retry: Callable[[str], None]) -> None:
        super().__init__()
        self.on_retry = on_retry

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or "retrying in" not in record.msg:
            return True
        args = record.args
        what = args[0] if isinstance(args, tuple) and args else None
        self.on_retry(_CALL_NAMES.get(what, "other") if isinstance(what, str) else "other")
        return False


@contextlib.contextmanager
def count_retries(on_retry: Callable[[str], None]) -> Iterator[None]:
    """Within the block, call ``on_retry(endpoint)`` once per retry the client makes.

    The retry records are counted, not printed (one line each would bury the live view);
    the logger's other records go on as before.
    """
    logger = logging.getLogger("polyai_async")
    counter = _RetryCounter(on_retry)
    saved_level = logger.level
    # A record below the logger's level never reaches its filters.
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addFilter(counter)
    try:
        yield
    finally:
        logger.removeFilter(counter)
        logger.setLevel(saved_level)
