"""FakeServerProcess: the fake server in a child process, started, read and stopped."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from polyai_async import PolyAIClient
from polyai_async.testing import FakeServerError, FakeServerProcess
from tests.conftest import FAST_RETRY

CREDENTIALS: dict[str, Any] = {
    "api_key": "test-api-key",
    "token": "test-token",
    "account_id": "ACCOUNT-test",
    "project_id": "PROJECT-test",
}


def gone(pid: int) -> bool:
    """True when no process ``pid`` exists (it exited and was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_serves_counts_and_stops_cleanly() -> None:
    """Its URL answers; once stopped, its counters and CPU time are known and no process is left."""
    server = FakeServerProcess("--agent", "echo", "--script", "503")
    async with server:
        assert server.url.startswith("http://127.0.0.1:")
        pid = server.pid
        assert pid is not None
        assert server.counters == {}
        assert server.cpu_seconds is None
        async with PolyAIClient(base_url=server.url, retry=FAST_RETRY, **CREDENTIALS) as client:
            created = await client.create_chat()
            reply = await client.respond(created.conversation_id, "ping")
        assert reply.response == "ping"
    assert server.counters["requests"] == {"create": 2, "respond": 1}
    assert server.counters["faults"] == {"503": 1}
    # Starting Python and aiohttp alone costs tenths of a CPU second.
    assert server.cpu_seconds is not None
    assert server.cpu_seconds > 0.05
    assert server.pid is None
    assert gone(pid)


def test_sync_context_manager_and_reuse_refused() -> None:
    """As a sync context manager it starts and stops; a stopped one refuses to start again."""
    with FakeServerProcess() as server:
        assert server.url.startswith("http://127.0.0.1:")
    assert "requests" in server.counters
    server.stop()  # a second stop does nothing
    with pytest.raises(FakeServerError, match="already stopped: start a new one"):
        server.start()


def test_no_url_before_start() -> None:
    """Asking for the URL of a server not started says so, instead of returning nothing."""
    with pytest.raises(FakeServerError, match="not been started"):
        _ = FakeServerProcess().url


def test_a_server_that_cannot_start_says_why() -> None:
    """A bad option: the error quotes the server's own one-line reason; no process is left."""
    server = FakeServerProcess("--error-rate", "2")
    with pytest.raises(FakeServerError, match=r"failed to start: .*--error-rate must be between"):
        server.start()
    assert server.pid is None


def test_a_crash_of_the_child_is_reported() -> None:
    """A server killed under us: stop() says it exited on its own, with its status."""
    server = FakeServerProcess()
    server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(FakeServerError, match=r"exited on its own .*status -9"):
        server.stop()
    assert gone(pid)
    assert server.counters == {}


def test_a_server_that_prints_no_url_in_time_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that never prints a URL is killed after start_timeout, not waited for forever."""
    (tmp_path / "silent_server.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    server = FakeServerProcess(module="silent_server", start_timeout=0.5)
    with pytest.raises(FakeServerError, match=r"printed no URL within 0\.5s"):
        server.start()
    assert server.pid is None
