"""The fake server in its own process on 127.0.0.1, started and stopped by the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import TracebackType
from typing import Any

import orjson


def cpu_plan() -> tuple[int, int] | tuple[None, None]:
    """(client CPU, server CPU) when this process may run on two or more CPUs, else Nones.

    The client and the server each get a core of their own: the scheduler then never puts
    both on one core, nor moves them mid-measurement, which costs every contender alike but
    at random (up to 15% of throughput here).
    """
    getaffinity = getattr(os, "sched_getaffinity", None)  # Linux only
    cpus = sorted(getaffinity(0)) if getaffinity is not None else []
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)


def pin(pid: int, cpu: int) -> None:
    """Keep process ``pid`` (and the threads it starts later) on one CPU."""
    os.sched_setaffinity(pid, {cpu})


class ServerProcess:
    """Runs ``python -m benchmarks._fake ARGS``, on CPU ``cpu`` if given; ``url`` and ``pid``.

    On exit it is stopped with SIGTERM and its counters (one JSON line on stderr) are read
    into ``counters``.
    """

    def __init__(self, *args: str, cpu: int | None = None) -> None:
        self.cpu = cpu
        self.args = ["--host", "127.0.0.1", "--port", "0", "--seed", "1", *args]
        self.url = ""
        self.pid = 0
        self.counters: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServerProcess:
        # Our own interpreter and module, arguments from this suite.
        self._proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "benchmarks._fake", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        try:
            if self.cpu is not None:
                pin(self._proc.pid, self.cpu)
            self.url = self._proc.stdout.readline().strip()
        except BaseException:
            self._proc.kill()
            self._proc.communicate()
            raise
        if not self.url.startswith("http://127.0.0.1:"):
            self._proc.kill()
            _, err = self._proc.communicate()
            raise RuntimeError(f"the fake server did not start: {self.url!r} {err}")
        self.pid = self._proc.pid
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        lines = [line for line in err.splitlines() if line.startswith("{")]
        if lines:
            self.counters = orjson.loads(lines[-1])
