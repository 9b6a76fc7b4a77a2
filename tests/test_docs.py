"""The documentation's code works: the examples, and the complete programs in the pages."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import aiohttp
import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from polyai_async.testing import DEFAULT_GREETING, DemoAgent, FakePolyAI, Faults

from . import programs
from .programs import ProgramRunner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
SCRIPT_TIMEOUT = 30.0


def example(name: str) -> ModuleType:
    """Import docs/examples/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def python_blocks() -> list[tuple[str, int, str]]:
    """Every fenced python block in the pages: (page, index, code)."""
    blocks = []
    for page in PAGES:
        for index, match in enumerate(FENCE.finditer(page.read_text())):
            blocks.append((str(page.relative_to(ROOT)), index, match.group(1)))
    return blocks


BLOCKS = python_blocks()
PROGRAMS = [b for b in BLOCKS if "asyncio.run(" in b[2]]
PYTEST_MODULES = [b for b in BLOCKS if "\nasync def test_" in b[2] or "\ndef test_" in b[2]]
# The pyproject.toml section the testing page tells a new project to add.
TESTING_CONFIG = re.findall(r"^```toml\n(.*?)^```", (DOCS / "testing.md").read_text(), re.M | re.S)[
    0
]


def fake_env(fake: FakePolyAI | None) -> dict[str, str]:
    """This process's environment without POLYAI_* settings, plus the fake's if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    if fake is not None:
        env.update(
            POLYAI_BASE_URL=fake.url,
            POLYAI_API_KEY=fake.api_key,
            POLYAI_TOKEN=fake.token,
            POLYAI_ACCOUNT_ID=fake.account_id,
            POLYAI_PROJECT_ID=fake.project_id,
        )
    return env


async def run_python(
    program_runner: ProgramRunner, *args: str, env: dict[str, str], cwd: Path = ROOT
) -> tuple[int, str]:
    """Run ``python *args`` to completion; return its exit status and its stdout and stderr."""
    status, out, _ = await programs.run_python(
        program_runner, *args, env=env, cwd=cwd, timeout=SCRIPT_TIMEOUT, stderr=False
    )
    return status, out


@pytest.fixture
async def relay(
    polyai_fake: FakePolyAI,
) -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    """The relay example's app, served on 127.0.0.1 and talking to the fake."""
    app = example("aiohttp_relay").make_app(polyai_fake.client)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def test_relay_answers_with_greeting_reply_and_handoff(
    relay: TestClient[aiohttp.web.Request, aiohttp.web.Application], polyai_fake: FakePolyAI
) -> None:
    """The relay keeps the conversation in the session, shows the handoff, then starts anew."""
    first = await (await relay.post("/chat", json={"message": "hi"})).json()
    assert first == {
        "replies": [DEFAULT_GREETING, "Hello! What can I do for you?"],
        "ended": False,
        "handoff": None,
    }
    (cid,) = polyai_fake.conversations
    second = await (await relay.post("/chat", json={"message": "a human please"})).json()
    assert second["ended"] is True
    assert second["handoff"] == {
        "destination": "live_agent_queue",
        "reason": "user_requested_human",
    }
    assert polyai_fake.turns[cid] == ["hi", "a human please"]
    third = await (await relay.post("/chat", json={"message": "hello?"})).json()
    assert third["replies"][0] == DEFAULT_GREETING  # a new conversation; the ended one untouched
    assert polyai_fake.turns[cid] == ["hi", "a human please"]
    assert len(polyai_fake.conversations) == 2
    assert (await relay.post("/chat", data=b"not json")).status == 400
    assert (await relay.delete("/chat")).status == 200
    assert all(state.closed for state in polyai_fake.conversations.values() if not state.ended)


@pytest.mark.polyai(faults=Faults(latency=0.02))
async def test_relay_sends_a_double_click_in_order(
    relay: TestClient[aiohttp.web.Request, aiohttp.web.Application], polyai_fake: FakePolyAI
) -> None:
    """Requests of one session at once reach the agent one after the other, in order."""
    await relay.post("/chat", json={"message": "hi"})
    (cid,) = polyai_fake.conversations
    clicks = [f"click {i}" for i in range(4)]
    answers = await asyncio.gather(*(relay.post("/chat", json={"message": m}) for m in clicks))
    assert [a.status for a in answers] == [200] * 4
    assert polyai_fake.turns[cid] == ["hi", *clicks]
    assert polyai_fake.stats.max_in_flight == 1


@pytest.fixture
async def fastapi_relay(polyai_fake: FakePolyAI) -> AsyncIterator[httpx.AsyncClient]:
    """The FastAPI relay's app, its lifespan run, talking to the fake, through httpx's ASGI."""
    app = example("fastapi_relay").make_app(polyai_fake.client, secret_key="test-only")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            yield client


async def test_fastapi_relay_keeps_the_conversation_in_the_session(
    fastapi_relay: httpx.AsyncClient, polyai_fake: FakePolyAI
) -> None:
    """The FastAPI relay resumes the session's conversation, shows the handoff, then starts anew."""
    first = (await fastapi_relay.post("/chat", json={"message": "hi"})).json()
    assert first == {
        "replies": [DEFAULT_GREETING, "Hello! What can I do for you?"],
        "ended": False,
        "handoff": None,
    }
    (cid,) = polyai_fake.conversations
    second = (await fastapi_relay.post("/chat", json={"message": "a human please"})).json()
    assert second["ended"] is True
    assert second["handoff"] == {
        "destination": "live_agent_queue",
        "reason": "user_requested_human",
    }
    third = (await fastapi_relay.post("/chat", json={"message": "hello?"})).json()
    assert third["replies"][0] == DEFAULT_GREETING
    assert polyai_fake.turns[cid] == ["hi", "a human please"]
    assert (await fastapi_relay.post("/chat", json={"text": "hi"})).status_code == 422
    assert (await fastapi_relay.delete("/chat")).status_code == 200
    assert all(state.closed for state in polyai_fake.conversations.values() if not state.ended)


@pytest.mark.polyai(faults=Faults(latency=0.02))
async def test_fastapi_relay_sends_a_double_click_in_order(
    fastapi_relay: httpx.AsyncClient, polyai_fake: FakePolyAI
) -> None:
    """Requests of one session at once reach the agent one after the other, in order."""
    await fastapi_relay.post("/chat", json={"message": "hi"})
    (cid,) = polyai_fake.conversations
    clicks = [f"click {i}" for i in range(4)]
    answers = await asyncio.gather(
        *(fastapi_relay.post("/chat", json={"message": m}) for m in clicks)
    )
    assert [a.status_code for a in answers] == [200] * 4
    assert polyai_fake.turns[cid] == ["hi", *clicks]
    assert polyai_fake.stats.max_in_flight == 1


async def test_fastapi_relay_refuses_a_forged_state(
    fastapi_relay: httpx.AsyncClient, polyai_fake: FakePolyAI
) -> None:
    """A session cookie not signed by the app is ignored: a new conversation starts."""
    fastapi_relay.cookies.set("session", "forged")
    answer = await fastapi_relay.post("/chat", json={"message": "hi"})
    assert answer.status_code == 200
    assert answer.json()["replies"][0] == DEFAULT_GREETING


async def test_handoff_bot_routes_the_handoff(polyai_fake: FakePolyAI) -> None:
    """The bot routes the user who asks for a human to live_agent_queue and closes every chat."""
    async with polyai_fake.client() as client:
        outcomes = await example("handoff_bot").run(client)
    assert outcomes == {"ana": "ended", "ben": "live_agent_queue", "cy": "closed"}
    assert all(state.closed for state in polyai_fake.conversations.values())


@pytest.mark.polyai(agent=DemoAgent(handoff_destination="nowhere_queue"))
async def test_handoff_bot_falls_back_for_unknown_destinations(polyai_fake: FakePolyAI) -> None:
    """A handoff to a destination the bot does not know goes to the fallback queue."""
    bot = example("handoff_bot")
    async with polyai_fake.client() as client:
        outcomes = await bot.run(client, {"ben": ["get me a person"]})
    assert outcomes == {"ben": bot.FALLBACK}


async def test_many_conversations_completes_all_within_the_bound(polyai_fake: FakePolyAI) -> None:
    """Every conversation completes with no errors, and never more run at once than allowed."""
    async with polyai_fake.client() as client:
        summary = await example("many_conversations").run(client, n=60, concurrency=7)
    assert summary.completed == 60
    assert summary.errors == {}
    assert summary.turns == 60 * 4
    assert 1 <= summary.max_in_flight <= 7
    assert polyai_fake.stats.max_open_connections <= 7


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("handoff_bot.py", (), "ben: live_agent_queue"),
        (
            "many_conversations.py",
            ("30", "5"),
            "30/30 conversations, 120 turns, 0 handoffs, 0 errors",
        ),
    ],
)
async def test_examples_run_as_scripts_without_credentials(
    program_runner: ProgramRunner, script: str, args: tuple[str, ...], expected: str
) -> None:
    """With no POLYAI_* variables an example starts its own fake server and finishes."""
    status, out = await run_python(
        program_runner, str(EXAMPLES / script), *args, env=fake_env(None)
    )
    assert status == 0, out
    assert "using a fake PolyAI server at http://127.0.0.1:" in out
    assert expected in out


async def test_console_spans_prints_spans_metrics_and_the_retry(
    program_runner: ProgramRunner,
) -> None:
    """The observability example prints each call's span, the retry event and both metrics."""
    status, out = await run_python(
        program_runner, str(EXAMPLES / "console_spans.py"), env=fake_env(None)
    )
    assert status == 0, out
    for name in ("polyai.create_chat", "polyai.respond", "polyai.close_chat", "handle-user"):
        assert f'"name": "{name}"' in out
    assert '"name": "polyai.retry"' in out
    assert '"polyai.retry.reason": "http_503"' in out
    assert "polyai.client.call.duration" in out
    assert "polyai.client.retries" in out
    assert "retries: {'respond': 1}" in out


async def test_relay_runs_as_a_script_without_credentials(program_runner: ProgramRunner) -> None:
    """The relay script serves on 127.0.0.1 with its own fake server and answers a message."""
    read, write = os.pipe()
    try:  # stdout a pipe, stderr this process's, as create_subprocess_exec(stdout=PIPE) does
        proc = await program_runner.start(
            [str(EXAMPLES / "aiohttp_relay.py"), "0"], env=fake_env(None), stdout=write, stderr=2
        )
    finally:
        os.close(write)
    stdout, transport = await programs.read_pipe(read)
    try:
        url = ""
        while not url:
            line = (await asyncio.wait_for(stdout.readline(), SCRIPT_TIMEOUT)).decode()
            assert line, "the relay exited before listening"
            if line.startswith("relay listening on "):
                url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json={"message": "what are your opening hours?"}) as r:
                answer = await r.json()
        assert answer["replies"][1] == "We're open Monday to Friday, 9am to 5pm."
    finally:
        proc.terminate()
        await proc.wait()
        transport.close()


@pytest.mark.parametrize("block", PROGRAMS, ids=[f"{page}-{index}" for page, index, _ in PROGRAMS])
async def test_complete_programs_in_the_docs_run(
    program_runner: ProgramRunner, polyai_fake: FakePolyAI, block: tuple[str, int, str]
) -> None:
    """A code block that is a whole program runs against the fake through POLYAI_* variables."""
    status, out = await run_python(program_runner, "-c", block[2], env=fake_env(polyai_fake))
    assert status == 0, out
    if "FakePolyAI(" not in block[2]:  # the rest start a fake of their own
        assert polyai_fake.requests["create"] >= 1


def test_the_readme_quickstart_is_tested() -> None:
    """The README's quickstart, which names region uk-1, is among the programs run."""
    assert any(page == "README.md" and 'region="uk-1"' in code for page, _, code in PROGRAMS)
    assert len(PROGRAMS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{page}-{index}" for page, index, _ in BLOCKS])
def test_every_python_block_compiles(block: tuple[str, int, str]) -> None:
    """Every python block in the docs is valid Python (fragments may await at top level)."""
    code = block[2]
    if code.startswith("--8<--"):  # an included example: the tests above run it
        path = ROOT / code.split('"')[1]
        assert path.is_file()
        code = path.read_text()
    compile(code, block[0], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


@pytest.mark.parametrize(
    "block", PYTEST_MODULES, ids=[f"{page}-{index}" for page, index, _ in PYTEST_MODULES]
)
def test_pytest_examples_in_the_docs_pass(
    pytester: pytest.Pytester, block: tuple[str, int, str]
) -> None:
    """A code block of pytest tests passes, warning-free, in a new project configured as the
    testing page says: pytest-asyncio in its default strict mode."""
    pytester.makefile(".toml", pyproject=TESTING_CONFIG)
    pytester.makepyfile(test_block=block[2])
    # In this process (warnings, configuration and plugins are the run's own, as in a new one),
    # without hypothesis's plugin: it would re-import hypothesis on every run (a second each).
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-W", "error"
    )
    result.assert_outcomes(passed=block[2].count("def test_"), warnings=0)
    result.stdout.re_match_lines([r"(?i)asyncio: mode=(mode\.)?strict\b"])


def test_the_testing_page_configures_strict_mode() -> None:
    """The configuration the testing page gives a new project sets the loop scope and nothing
    that turns strict mode off, so the examples above are tested as a new project runs them."""
    assert 'asyncio_default_fixture_loop_scope = "function"' in TESTING_CONFIG
    assert "asyncio_mode" not in TESTING_CONFIG


def test_snippet_includes_are_well_formed() -> None:
    """Every pymdownx.snippets line names an existing file, so the page shows the example."""
    includes = 0
    for page in sorted(DOCS.rglob("*.md")):
        for line in page.read_text().splitlines():
            if line.lstrip().startswith("--8"):
                match = re.fullmatch(r'--8<-- "([^"]+)"', line.strip())
                assert match, f"{page.name}: malformed snippet line {line!r}"
                assert (ROOT / match[1]).is_file(), f"{page.name}: {match[1]} does not exist"
                includes += 1
    assert includes >= 3


@pytest.mark.parametrize(
    ("code", "status", "out", "err"),
    [
        ("import sys; print(sys.argv, __name__, sys.path[0] == '')", 0, "['-c'] __main__ True", ""),
        ("raise SystemExit(3)", 3, "", ""),
        ("import sys; sys.exit('bye')", 1, "", "bye"),
        ("1 / 0", 1, "", 'File "<string>", line 1, in <module>\nZeroDivisionError'),
        ("import atexit; atexit.register(print, 'at exit')", 0, "at exit", ""),
        ("import os, sys; print(os.getcwd(), os.environ.get('X'), 'polyai_async' in sys.modules)",
         0, f"{ROOT} 1 False", ""),
    ],
)  # fmt: skip
async def test_the_fork_server_runs_a_program_as_python_does(
    program_runner: ProgramRunner, code: str, status: int, out: str, err: str
) -> None:
    """The programs above run as ``python -c``: exit status, streams, argv, __main__, cwd,
    environment, atexit; and with polyai_async not imported yet (each program imports it)."""
    got = await programs.run_python(
        program_runner, "-c", code, env={**fake_env(None), "X": "1"}, timeout=SCRIPT_TIMEOUT
    )
    assert got[0] == status, got
    assert out in got[1]
    assert err in got[2]
    if err.startswith("File"):
        assert got[2].startswith('Traceback (most recent call last):\n  File "<string>"')


async def test_the_fork_server_kills_a_program_that_runs_too_long(
    program_runner: ProgramRunner,
) -> None:
    """A program still running at the timeout is killed (SIGKILL) and the call times out."""
    with pytest.raises(asyncio.TimeoutError):
        await programs.run_python(
            program_runner, "-c", "import time; time.sleep(60)", env=fake_env(None), timeout=0.2
        )


def test_reliability_page_names_real_tests() -> None:
    """docs/reliability.md names only tests that exist, and every finding above has a row."""
    tests = Path(__file__).resolve().parent
    page = (tests.parent / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)(?=[`\[])", page)
    assert len(named) > 30
    for module, test in named:
        (path,) = tests.rglob(module)  # test file names are unique across the topic folders
        source = path.read_text()
        assert re.search(rf"^(async )?def {test}\(", source, re.MULTILINE), f"{module}::{test}"
    for finding in range(1, 20):
        assert re.search(rf"^\| {finding} \| ", page, re.MULTILINE), f"finding {finding}"
