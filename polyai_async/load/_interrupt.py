"""Interrupting a run: the first SIGINT or SIGTERM stops it and keeps what was measured.

As k6 and Locust do, the first signal stops starting conversations, closes those in flight
and lets the run end with a result marked interrupted (``LoadResult.interrupted``); the
command then writes its reports and exits 130 (SIGINT) or 143 (SIGTERM). A second signal
quits at once (``KeyboardInterrupt``), without waiting for closes or reports. Worker
processes never quit on a second signal: the parent decides, and stops them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["EXIT_CODES", "SIGNALS", "Interrupt", "on_loop_signals", "on_signals", "stop_notes"]

logger = logging.getLogger("polyai_async.load")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How the command exits after each, as a shell reports a process killed by it (128 + N).
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class Interrupt:
    """The signal handler: the first signal calls ``on_stop`` once, a second one quits now.

    Args:
        on_stop: called once, at the first signal.
        force_quit: a second signal raises KeyboardInterrupt (False: it is ignored).
        say: log one warning line at the first signal (what happens, how to quit at once).
    """

    def __init__(
        self, on_stop: Callable[[], None], *, force_quit: bool = True, say: bool = True
    ) -> None:
        self._on_stop = on_stop
        self._force_quit = force_quit
        self._say = say
        #: The first signal's name (``SIGINT``, ``SIGTERM``), None before one came.
        self.signal: str | None = None

    def __call__(self, signum: int, frame: Any = None) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            if self._force_quit:
                raise KeyboardInterrupt
            return
        self.signal = name
        if self._say:
            logger.warning(
                "%s: stopping the load; closing the conversations in flight, then the report "
                "of what was measured (%s again to quit at once)",
                name,
                "Ctrl-C" if name == "SIGINT" else name,
            )
        self._on_stop()


@contextlib.contextmanager
def on_loop_signals(loop: asyncio.AbstractEventLoop, interrupt: Interrupt) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call ``interrupt`` on ``loop`` (asyncio or uvloop).

    Only the main thread can handle signals: elsewhere (and where the loop cannot, as on
    Windows) nothing changes. The handlers found are put back on the way out.
    """
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    installed = []
    for sig in SIGNALS:
        try:
            loop.add_signal_handler(sig, interrupt, sig)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            handler = previous[sig]
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def on_signals(interrupt: Interrupt) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM call ``interrupt`` (main thread, no event loop)."""
    previous: dict[signal.Signals, Any] = {}
    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, interrupt)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def stop_notes(summary: Mapping[str, Any]) -> list[str]:
    """What the reports say first when the run was interrupted, aborted or is partial."""
    notes = []
    if summary.get("interrupted"):
        notes.append(
            f"INTERRUPTED ({summary.get('interrupted_by') or 'stop'}): the load was stopped "
            "early; these figures cover what was measured until then"
        )
    aborted = summary.get("aborted")
    if isinstance(aborted, Mapping):
        at, window = aborted.get("at_seconds"), aborted.get("window_seconds")
        value = aborted.get("value")
        notes.append(
            f"ABORTED at {at if at is None else round(at)} s (--abort-on-fail): "
            f"{aborted.get('threshold')} failed over the last {window} s"
            + ("" if value is None else f" (measured {value:g})")
            + "; these figures cover the run until then"
        )
    for worker in summary.get("workers_missing") or ():
        if isinstance(worker, Mapping):  # bench: index, name, reason
            what = f"worker {worker.get('worker')} ({worker.get('name')}) {worker.get('reason')}"
        else:  # the Locust bridge: the worker's id
            what = f"worker {worker} sent no figures"
        notes.append(f"PARTIAL: {what}; these figures are the other workers' only")
    return notes
