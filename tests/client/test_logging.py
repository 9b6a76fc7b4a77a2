"""POLYAI_LOG=info|debug: the polyai_async logger on stderr; debug logs one line per request."""

from __future__ import annotations

import os

import pytest

from polyai_async import ConfigurationError, PolyAIClient
from polyai_async.testing import FakePolyAI, Faults
from tests import programs
from tests.programs import ProgramRunner

SCRIPT = """
import asyncio
from polyai_async import PolyAIClient, RetryPolicy

async def main():
    policy = RetryPolicy(initial_backoff=0, max_backoff=0)
    async with PolyAIClient(retry=policy) as client:
        chat = await client.create_chat()
        await client.respond(chat.conversation_id, "hello")
        await client.close_chat(chat.conversation_id)

asyncio.run(main())
"""


async def run(program_runner: ProgramRunner, fake: FakePolyAI, level: str) -> tuple[int, str, str]:
    """Run SCRIPT against the fake with POLYAI_LOG=level; its status, stdout and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    env.update(
        POLYAI_LOG=level,
        POLYAI_BASE_URL=fake.url,
        POLYAI_API_KEY=fake.api_key,
        POLYAI_TOKEN=fake.token,
        POLYAI_ACCOUNT_ID=fake.account_id,
        POLYAI_PROJECT_ID=fake.project_id,
    )
    return await programs.run_python(program_runner, "-c", SCRIPT, env=env, timeout=60)


@pytest.mark.polyai(faults=Faults(script=("ok", "503")))
async def test_debug_logs_one_line_per_request(
    program_runner: ProgramRunner, polyai_fake: FakePolyAI
) -> None:
    """POLYAI_LOG=debug: a line per HTTP request with method, path, status, attempt, id."""
    status, _, err = await run(program_runner, polyai_fake, "debug")
    assert status == 0, err
    lines = [line for line in err.splitlines() if " -> " in line]
    assert len(lines) == 4  # create, respond (503 then 200), close
    path = f"/v1/{polyai_fake.account_id}/{polyai_fake.project_id}/chat"
    assert f"POST {path}/create -> 200 attempt 1" in lines[0]
    assert f"POST {path}/respond -> 503 attempt 1" in lines[1]
    assert f"POST {path}/respond -> 200 attempt 2" in lines[2]
    assert f"PUT {path}/close -> 200 attempt 1" in lines[3]
    assert all("DEBUG" in line and "correlation id " in line and " ms" in line for line in lines)
    assert "WARNING" in err  # the retry warning shows too
    assert polyai_fake.api_key not in err
    assert polyai_fake.token not in err


@pytest.mark.polyai(faults=Faults(script=("ok", "503")))
async def test_info_shows_warnings_but_no_request_lines(
    program_runner: ProgramRunner, polyai_fake: FakePolyAI
) -> None:
    """POLYAI_LOG=info: the retry warning on stderr, no per-request debug line."""
    status, _, err = await run(program_runner, polyai_fake, "info")
    assert status == 0, err
    assert "retrying in" in err
    assert " -> " not in err


async def test_unset_logs_nothing(program_runner: ProgramRunner, polyai_fake: FakePolyAI) -> None:
    """Without POLYAI_LOG nothing is configured: a run that goes well prints nothing."""
    status, out, err = await run(program_runner, polyai_fake, "")
    assert status == 0, err
    assert out == err == ""


def test_a_bad_level_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """POLYAI_LOG=verbose is a ConfigurationError that names the variable and the choices."""
    monkeypatch.setenv("POLYAI_LOG", "verbose")
    with pytest.raises(ConfigurationError, match=r"POLYAI_LOG='verbose'.*info or debug"):
        PolyAIClient(api_key="k", token="t", account_id="A", project_id="P")
