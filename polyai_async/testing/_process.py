"""FakeServerProcess: the fake server in a child process of its own, started and stopped.

The one runner of ``python -m polyai_async.testing`` as a subprocess: the command line's
embedded fake, the benchmarks and the tests all start the server through it. The child prints
its URL on the first line of stdout and, on SIGTERM, its counters as one line of JSON on
stderr; this class reads both, and the CPU time the child used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from types import TracebackType
from typing import IO, Any

import orjson

__all__ = ["FakeServerError", "FakeServerProcess"]


class FakeServerError(RuntimeError):
    """The fake server's process did not start, or ended before it was asked to stop."""


class FakeServerProcess:
    """The fake PolyAI server (``python -m polyai_async.testing``) in a process of its own.

    A server with a core of its own does not share the event loop, nor the CPU time, of the
    client that loads it. Use it as a context manager, sync or async::

        with FakeServerProcess("--latency", "0.1") as server:
            client = PolyAIClient(base_url=server.url, ...)
        print(server.counters["requests"], server.cpu_seconds)

    Args:
        *options: options of ``python -m polyai_async.testing`` (``--agent echo``,
            ``--error-rate 0.1``...); it listens on 127.0.0.1, on a free port, unless they
            say otherwise.
        module: the module run with ``python -m``: another that keeps the same protocol (its
            URL first on stdout; its counters as one JSON line on stderr when SIGTERM stops
            it), such as one that adds counters of its own.
        start_timeout: seconds to wait for the URL (starting Python and aiohttp takes about
            a second; a loaded machine several).
        stop_timeout: seconds to wait after SIGTERM before SIGKILL.

    One instance runs once: it refuses to start again once stopped.
    """

    def __init__(
        self,
        *options: str,
        module: str = "polyai_async.testing",
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.argv = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
        self.argv += [str(option) for option in options]
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._url = ""
        self._counters: dict[str, Any] = {}
        self._cpu_seconds: float | None = None
        self._state = "new"  # then "running", then "stopped"
        # Its stderr goes to a file: a pipe nobody reads could fill up and stall the server.
        self._stderr: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL, such as ``http://127.0.0.1:41234``.

        Raises:
            FakeServerError: the server has not been started.
        """
        if not self._url:
            raise FakeServerError("the fake server has not been started: no URL yet")
        return self._url

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return None if self._process is None else self._process.pid

    @property
    def counters(self) -> dict[str, Any]:
        """The server's counters (``Stats.as_dict()``: requests, faults, connections...).

        Known once the server has stopped; empty before.
        """
        return dict(self._counters)

    @property
    def cpu_seconds(self) -> float | None:
        """CPU seconds (user and system) the server used, known once it has stopped.

        None before, or where the platform cannot say (no ``os.wait4``: Windows).
        """
        return self._cpu_seconds

    def start(self) -> str:
        """Start the server and return its URL.

        Raises:
            FakeServerError: it was started before, it exited without a URL (its last line
                of stderr says why), or it printed none within ``start_timeout``.
        """
        if self._state != "new":
            raise FakeServerError(
                f"this FakeServerProcess was already {self._state}: start a new one"
            )
        self._state = "running"
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        # In a session of its own: a terminal's Ctrl-C reaches our process group, and the
        # server must outlive it to see the conversations in flight closed; stop() stops it.
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and a module
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        stdout = self._process.stdout
        assert stdout is not None  # noqa: S101 - stdout=PIPE above
        lines: queue.Queue[bytes] = queue.Queue()
        # A daemon thread reads the line, so a server that never prints cannot hang us.
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=self.start_timeout)
        except queue.Empty:
            self._halt()
            self._close_stderr()
            raise FakeServerError(
                f"the fake server printed no URL within {self.start_timeout:g}s"
            ) from None
        url = line.decode(errors="replace").strip()
        if not url.startswith("http"):
            self._halt()
            error = self._last_error()
            self._close_stderr()
            raise FakeServerError(f"the fake server failed to start: {error}")
        self._url = url
        return url

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout``); read its counters.

        Stopping twice, or a server never started, does nothing.

        Raises:
            FakeServerError: the server had exited on its own (it crashed, or was killed):
                its exit status and last line of stderr say how.
        """
        if self._state != "running":
            self._state = "stopped"
            return
        status = self._halt()
        for line in reversed(self._stderr_lines()):
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    self._counters = orjson.loads(line)
                break
        error = self._last_error()
        self._close_stderr()
        # SIGTERM makes the server exit 0; SIGKILL after stop_timeout is ours (None).
        if status:
            raise FakeServerError(
                f"the fake server exited on its own before it was stopped (status {status}): "
                f"{error}"
            )

    def _halt(self) -> int | None:
        """SIGTERM, wait, SIGKILL if need be; the exit status (None if we killed it).

        Reads the child's CPU time.
        """
        process, self._process = self._process, None
        self._state = "stopped"
        if process is None:
            return None
        killed = False
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            if not self._reap(process, self.stop_timeout):
                process.kill()
                self._reap(process, None)
                killed = True
        # Closed once the child is gone: the reader thread may still hold the pipe's lock.
        if process.stdout is not None:
            process.stdout.close()
        return None if killed else process.returncode

    def _reap(self, process: subprocess.Popen[bytes], timeout: float | None) -> bool:
        """Wait for ``process`` (up to ``timeout``); True once it has exited.

        ``os.wait4`` reaps it and says the CPU time of that one child, where
        ``RUSAGE_CHILDREN`` would add every other child that exits meanwhile.
        """
        wait4 = getattr(os, "wait4", None)
        if wait4 is None:  # pragma: no cover - Windows
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, status, usage = wait4(process.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:  # reaped already (poll() saw it exit)
                process.wait()
                return True
            if pid == process.pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                self._cpu_seconds = usage.ru_utime + usage.ru_stime
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _stderr_lines(self) -> list[str]:
        if self._stderr is None or self._stderr.closed:
            return []
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip().splitlines()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()

    def _last_error(self) -> str:
        lines = self._stderr_lines()
        return lines[-1] if lines else "it exited without a word"

    def __enter__(self) -> FakeServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FakeServerProcess:
        # Starting blocks until the child prints its URL: off the event loop.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __del__(self) -> None:
        # No work here beyond a warning: stop() is the caller's to call.
        if self._state == "running" and self._process is not None:
            warnings.warn(
                f"FakeServerProcess {self._url or self.argv} was never stopped",
                ResourceWarning,
                stacklevel=1,
            )
