"""The fake server in its own process on 127.0.0.1, started and stopped by the suite."""

from __future__ import annotations

import os

from polyai_async.testing import FakeServerProcess


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


class ServerProcess(FakeServerProcess):
    """``python -m benchmarks._fake ARGS`` (seed 1) through FakeServerProcess, on CPU ``cpu``.

    ``url`` and ``pid`` while it runs; once stopped, its ``counters`` (the fake's Stats plus
    the turns it recorded) and ``cpu_seconds``.
    """

    def __init__(self, *args: str, cpu: int | None = None) -> None:
        super().__init__("--seed", "1", *args, module="benchmarks._fake")
        self.cpu = cpu

    def start(self) -> str:
        """Start the server, then pin it to its CPU (when there is one to give it)."""
        url = super().start()
        if self.cpu is not None and self.pid is not None:
            pin(self.pid, self.cpu)
        return url
