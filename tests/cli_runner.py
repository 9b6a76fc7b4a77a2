"""Running the polyai-async command inside the test process, and a fake server in a thread.

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
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from polyai_async.cli import main
from polyai_async.cli._common import set_command
from polyai_async.testing import FakePolyAI

T = TypeVar("T")

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


class ThreadedFake:
    """A FakePolyAI on 127.0.0.1 serving from an event loop in its own thread.

    For an in-process command whose own event loop owns the main thread: ``with
    ThreadedFake(...) as fake:`` gives ``fake.url``, ``fake.env`` (the POLYAI_* settings that
    reach it) and ``fake.server`` (the FakePolyAI, to read its counters once the command ran).
    """

    def __init__(self, **options: Any) -> None:
        self.server = FakePolyAI(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Awaitable[T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return future.result(timeout=30)

    def __enter__(self) -> ThreadedFake:
        self._thread.start()
        self._run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self.server.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def env(self) -> dict[str, str]:
        """The credentials of this server, as the command reads them (no POLYAI_BASE_URL)."""
        return {
            "POLYAI_API_KEY": self.server.api_key,
            "POLYAI_TOKEN": self.server.token,
            "POLYAI_ACCOUNT_ID": self.server.account_id,
            "POLYAI_PROJECT_ID": self.server.project_id,
        }
