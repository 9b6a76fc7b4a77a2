"""Shared fixtures: credentials in the environment are cleared so every test says what it uses."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core

from polyai_async import PolyAIClient, RetryPolicy, _redact

from .programs import ProgramRunner

pytest_plugins = ["pytester"]

ENV = ("POLYAI_API_KEY", "POLYAI_TOKEN", "POLYAI_ACCOUNT_ID", "POLYAI_PROJECT_ID")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove POLYAI_* settings that the machine running the tests might have."""
    for name in (*ENV, "POLYAI_REGION", "POLYAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Each test starts with no credential remembered by another test's clients (_redact)."""
    _redact.forget()
    yield
    _redact.forget()


CREDS: dict[str, Any] = {
    "api_key": "key-123",
    "token": "tok-456",
    "account_id": "ACCOUNT-1",
    "project_id": "PROJ-1",
}
BASE = "https://api.us-1.platform.polyai.app/v1/ACCOUNT-1/PROJ-1/chat"
# Zero backoff keeps retry tests fast; the deadline and Retry-After rules still apply.
FAST_RETRY = RetryPolicy(initial_backoff=0, max_backoff=0)
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
async def client() -> AsyncIterator[PolyAIClient]:
    """A client for us-1 with fast retries; aioresponses intercepts its requests."""
    async with PolyAIClient(**CREDS, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
async def once() -> AsyncIterator[PolyAIClient]:
    """A client that never retries, so each test sees exactly one answer."""
    async with PolyAIClient(**CREDS, retry=RetryPolicy(max_attempts=1)) as client:
        yield client


class _SentRequest:
    """Stands in for the stream writer of a request aioresponses never really sent."""

    output_size = 0


class _MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required ``stream_writer`` (its issue #289)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(*args, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    """aioresponses, passing loopback through so local servers still work."""
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _MockResponse)
    with aioresponses(passthrough=["http://127.0.0.1"]) as m:
        yield m


@pytest.fixture
def cli_state() -> Iterator[None]:
    """Put back what running the command in this process changes (``tests/cli_runner.py``)."""
    from .cli_runner import restored_cli_state

    with restored_cli_state():
        yield


# -- the benchmark smoke run, started at collection and checked last ---------------------------
# ``python -m benchmarks --smoke`` is some 10 s of a CPU that the rest of the suite, often
# waiting on loopback servers, leaves idle: when test_benchmarks.py's smoke test is selected it
# starts as soon as collection ends, runs beside the other tests at a lower priority, and its
# test (moved to the end) checks what it wrote.
SMOKE_TEST = "test_smoke_run_writes_every_figure"
BENCH_TOOLS = ("httpx", "matplotlib", "psutil", "pyinstrument")


def missing_bench_tools() -> list[str]:
    """The benchmark suite's tools (the `bench` extra) that are not installed."""
    return [name for name in BENCH_TOOLS if importlib.util.find_spec(name) is None]


class SmokeRun:
    """``python -m benchmarks --smoke --out DIR`` in the background."""

    def __init__(self) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="polyai-smoke-"))
        self._stderr = (self.out / "stderr.txt").open("w+b")
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(self.out)],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        # Niced (its children inherit it): it takes the CPU the tests leave idle, and the
        # timing tests keep theirs.
        os.setpriority(os.PRIO_PROCESS, self.process.pid, 10)

    def wait(self, timeout: float) -> tuple[int, str]:
        """Its exit status and stderr, once it has ended (killed after ``timeout``)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._stderr.seek(0)
        return code, self._stderr.read().decode(errors="replace")

    def close(self) -> None:
        """Stop it if it still runs; remove what it wrote."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
        shutil.rmtree(self.out, ignore_errors=True)


SMOKE_RUN = pytest.StashKey[SmokeRun]()


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what they do
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move the smoke test last and, when its tools are installed, start its run now."""
    smoke = [item for item in items if getattr(item, "originalname", None) == SMOKE_TEST]
    if not smoke:
        return
    for item in smoke:
        items.remove(item)
        items.append(item)
    # Not in an xdist worker: every worker collects every test, one of them runs it (and its
    # fixture starts the run then).
    in_worker = hasattr(config, "workerinput")
    if not in_worker and not missing_bench_tools():
        config.stash[SMOKE_RUN] = SmokeRun()


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(SMOKE_RUN, None)
    if run is not None:
        run.close()


@pytest.fixture(scope="session")
def program_runner() -> Iterator[ProgramRunner]:
    """The session's fork server (tests/programs.py): each program a new process, with aiohttp
    and the like already imported and polyai_async imported afresh."""
    runner = ProgramRunner({k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")})
    try:
        yield runner
    finally:
        runner.close()
