"""``POLYAI_LOG=info|debug``, and the one-line-per-request debug log (a hook subscriber)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigurationError, one_line
from ._hooks import CallEvent, Hooks
from ._redact import RedactingFormatter

logger = logging.getLogger("polyai_async")

_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG}
configured: list[logging.Handler] = []


def configure_from_env() -> None:
    """Send the ``polyai_async`` logger to stderr at ``POLYAI_LOG``'s level.

    As ``OPENAI_LOG`` does: for a quick look without configuring logging. Once per process;
    unset or empty, it does nothing, so an application's own logging set-up stands. Its lines
    are redacted (``_redact``: no secret, control characters shown as escapes). When a
    handler was adopted (the command line's), that one handler takes the level instead, so
    no line is printed twice.
    """
    value = os.environ.get("POLYAI_LOG", "").strip().lower()
    if not value:
        return
    level = _LEVELS.get(value)
    if level is None:
        raise ConfigurationError(
            f"POLYAI_LOG={value!r} is not a log level: use info or debug, or unset it"
        )
    attached = (*logger.handlers, *logging.getLogger().handlers)
    if configured and configured[0] not in attached:
        configured.clear()  # the adopted handler was taken away: ours again
    if not configured:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        configured.append(handler)
    configured[0].setLevel(level)
    logger.setLevel(level)


def adopt(handler: logging.Handler) -> None:
    """Make ``handler`` the one ``POLYAI_LOG`` sets the level of.

    The command line logs everything through one handler of its own (redacted, one line a
    record); ``POLYAI_LOG`` then sets that handler's level instead of adding a second one.
    The handler must hide secrets itself.
    """
    for previous in configured:
        if previous is not handler:
            logger.removeHandler(previous)
    configured[:] = [handler]
    configure_from_env()


def subscribe(hooks: Hooks, endpoints: Mapping[str, Any]) -> None:
    """Log each request at debug level, if the logger shows debug now.

    Decided when the client is made, so a client that logs nothing pays nothing.
    """
    if not logger.isEnabledFor(logging.DEBUG):
        return
    targets = {name: (e.method, e.url.path) for name, e in endpoints.items()}

    def log(event: CallEvent) -> None:
        # One line per HTTP request: when its answer came, or when it failed without one.
        if event.name != "answer_received" and event.status is not None:
            return
        method, path = targets[event.endpoint]
        outcome = str(event.status) if event.status is not None else f"no answer ({event.reason})"
        logger.debug(
            "polyai_async: %s %s -> %s attempt %d in %.1f ms%s",
            method,
            path,
            outcome,
            event.attempt,
            event.elapsed * 1000,
            # A server may put anything in it: no secret reaches any handler.
            f" (correlation id {one_line(event.correlation_id, 80)})"
            if event.correlation_id
            else "",
        )

    hooks.add("answer_received", log)
    hooks.add("retry_scheduled", log)
    hooks.add("call_failed", log)
