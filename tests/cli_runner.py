"""Running the polyai-async command inside the test process (and, from threaded_fake, a fake
server in a thread for it to talk to).

``CliRunner`` calls ``polyai_async.cli.main(argv)`` the way click's CliRunner does: the
environment set by monkeypatch (POLYAI_* cleared, then the test's), stdin replaced, stdout and
stderr captured by capsys; it returns what ``subprocess.run`` would (returncode, stdout,
stderr). Starting no interpreter saves about half a second of CPU per command; tests about the
process itself (the console script, signals, a terminal, one whole bench) still start one.

``restored_cli_state()`` puts back what a run of the command may change for the whole
process: the logging handler it adds to the root logger, the subcommand named in its error
prefix, the SIGINT and SIGTERM handlers and the signal wakeup fd, the event loop policy, the
warnings filters and os.environ.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from polyai_async.cli import main
from polyai_async.cli._common import set_command

from .threaded_fake import ThreadedFake

__all__ = ["CliResult", "CliRunner", "ThreadedFake", "restored_cli_state"]


@dataclass(frozen=True)
class CliResult:
    """What one run of the command did: its exit status and everything it printed."""

    returncode: int
    stdout: str
    stderr: str


class CliRunner:
    """Run ``polyai-async [COMMAND] ARGS`` in this process; see the module's docstring."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        *,
        command: str | None = None,
    ) -> None:
        self._monkeypatch = monkeypatch
        self._capsys = capsys
        self._command = [command] if command else []

    def __call__(self, *args: str, stdin: str = "", env: dict[str, str] | None = None) -> CliResult:
        """Run the command with a clean POLYAI_* environment plus ``env``, ``stdin`` as input."""
        self._capsys.readouterr()  # only this run's output
        with self._monkeypatch.context() as patch:
            for name in [name for name in os.environ if name.startswith("POLYAI_")]:
                patch.delenv(name)
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            patch.setattr("sys.stdin", io.StringIO(stdin))
            code = main([*self._command, *args])
        out, err = self._capsys.readouterr()
        return CliResult(code, out, err)


@contextlib.contextmanager
def restored_cli_state() -> Iterator[None]:
    """Put back, on the way out, the process-wide state a run of the command may change."""
    root = logging.getLogger()
    library = logging.getLogger("polyai_async")
    loggers = [
        (logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled)
        for logger in (root, library)
    ]
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    wakeup_fd = signal.set_wakeup_fd(-1) if in_main_thread else -1
    if in_main_thread:
        signal.set_wakeup_fd(wakeup_fd)
    policy = asyncio.get_event_loop_policy()
    environ = dict(os.environ)
    try:
        with warnings.catch_warnings():
            yield
    finally:
        set_command(None)
        for logger, kept, level, propagate, disabled in loggers:
            logger.handlers[:] = kept
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled
        if in_main_thread:
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
            signal.set_wakeup_fd(wakeup_fd)
        asyncio.set_event_loop_policy(policy)
        if os.environ != environ:
            os.environ.clear()
            os.environ.update(environ)
