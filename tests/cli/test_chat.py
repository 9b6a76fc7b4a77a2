"""polyai-async chat: its target, its commands, Ctrl-C, and a real terminal.

Piped chats run ``main()`` in this process, in a thread (this test's event loop serves the
fake); Ctrl-C and the terminal are about the process, so those chats are real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from polyai_async.testing import AgentReply, ConversationState, FakePolyAI, Faults
from tests.cli_runner import CliRunner

TIMEOUT = 30.0


class SlowAgent:
    """Echoes, except that "slow" is answered only after ``delay`` seconds (or when released)."""

    greeting = "Hi, slow agent here."

    def __init__(self, delay: float = 3600.0) -> None:
        self.delay = delay
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, message: str | None, state: ConversationState) -> AgentReply | str:
        if message == "slow":
            self.waiting.set()
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
            return "finally"
        if message == "bye":
            return AgentReply("Goodbye!", end_conversation=True)
        return f"echo {message}"


def fake_settings(fake: FakePolyAI) -> dict[str, str]:
    """The POLYAI_* settings of ``fake``, as serve prints them."""
    return {
        "POLYAI_BASE_URL": fake.url,
        "POLYAI_API_KEY": fake.api_key,
        "POLYAI_TOKEN": fake.token,
        "POLYAI_ACCOUNT_ID": fake.account_id,
        "POLYAI_PROJECT_ID": fake.project_id,
    }


def chat_env(fake: FakePolyAI, **extra: str) -> dict[str, str]:
    """This process's environment, POLYAI_* replaced by the settings of ``fake``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    env.update(fake_settings(fake), **extra)
    return env


# Whatever a run of main() here changes for the whole process is put back (conftest.py).
pytestmark = pytest.mark.usefixtures("cli_state")


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRunner:
    """``await asyncio.to_thread(chat, *args, stdin=...)``: polyai-async chat in this process."""
    return CliRunner(monkeypatch, capsys, command="chat")


async def start_chat(env: dict[str, str], *args: str, **streams: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polyai_async.cli", "chat", *args, env=env, **streams
    )


async def interrupt_while_waiting(
    fake: FakePolyAI, agent: SlowAgent
) -> tuple[asyncio.subprocess.Process, float, str, str]:
    """A piped chat sends "slow", gets Ctrl-C while the agent answers, and runs to its end: the
    process, when it was interrupted, and its stdout and stderr."""
    proc = await start_chat(
        chat_env(fake),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"slow\n")
    await proc.stdin.drain()
    await asyncio.wait_for(agent.waiting.wait(), TIMEOUT)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    return proc, interrupted, out.decode(), err.decode()


@pytest.fixture
async def slow_fake() -> AsyncIterator[tuple[FakePolyAI, SlowAgent]]:
    agent = SlowAgent()
    async with FakePolyAI(agent=agent) as fake:
        yield fake, agent
        agent.release.set()


async def test_chat_talks_to_polyai_base_url_and_says_so(
    chat: CliRunner, slow_fake: tuple[FakePolyAI, SlowAgent]
) -> None:
    """With POLYAI_BASE_URL set (as serve says to), chat talks to that server, not a fake of its
    own, and its first line names the agent: account, project and origin."""
    fake, _ = slow_fake
    done = await asyncio.wait_for(
        asyncio.to_thread(chat, stdin="hello\n/quit\n", env=fake_settings(fake)), TIMEOUT
    )
    first, *rest = done.stdout.splitlines()
    assert first == (
        f"Chatting with the agent of account {fake.account_id}, project {fake.project_id} at "
        f"{fake.url} (from POLYAI_BASE_URL)."
    )
    assert "agent: echo hello" in rest
    assert done.returncode == 0
    assert fake.turns == {next(iter(fake.turns)): ["hello"]}


async def test_ctrl_c_while_waiting_closes_the_conversation_promptly(
    slow_fake: tuple[FakePolyAI, SlowAgent],
) -> None:
    """Ctrl-C while the agent answers says the conversation is being closed, closes it at once
    and exits 130."""
    fake, agent = slow_fake
    proc, interrupted, out, err = await interrupt_while_waiting(fake, agent)
    assert time.monotonic() - interrupted < 5.0  # the close, not the agent, is waited for
    assert proc.returncode == 130
    (cid,) = fake.conversations
    assert fake.conversations[cid].closed
    assert f"-- interrupted: closing conversation {cid} (at most 5 s)" in out
    assert f"Conversation {cid} closed." in out
    assert err == ""


async def test_a_failed_close_after_ctrl_c_gives_its_reason_once(
    slow_fake: tuple[FakePolyAI, SlowAgent],
) -> None:
    """When closing fails, the one error line says why, with one prefix."""
    fake, agent = slow_fake
    fake.faults = Faults(error_rate=1.0, error_status=403, endpoints=["close"])
    proc, _, out, err = await interrupt_while_waiting(fake, agent)
    assert proc.returncode == 130
    (cid,) = fake.conversations
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"polyai-async chat: error: closing conversation {cid} failed: ")
    assert "403" in lines[0] or "permission" in lines[0].lower()
    assert lines[0].count("polyai") == 1 + lines[0].count("polyai_async")  # no doubled prefix
    assert "Traceback" not in err
    assert f"closing conversation {cid}" in out


async def test_a_close_that_hangs_is_given_up_within_the_bound(
    chat: CliRunner, slow_fake: tuple[FakePolyAI, SlowAgent]
) -> None:
    """/quit against a server that never answers the close leaves after --close-timeout,
    saying so."""
    fake, _ = slow_fake
    fake.faults = Faults(latency=3600.0, endpoints=["close"])  # create and respond still answer
    started = time.monotonic()
    done = await asyncio.wait_for(
        asyncio.to_thread(chat, "--close-timeout", "0.5", stdin="/quit\n", env=fake_settings(fake)),
        TIMEOUT,
    )
    assert 0.45 < time.monotonic() - started < 15.0
    assert "agent: Hi, slow agent here." in done.stdout
    assert done.returncode == 1
    assert "closing conversation" in done.stdout
    assert "(at most 0.5 s)" in done.stdout
    assert "failed: no answer in time" in done.stderr
    assert done.stderr.count("\n") == 1


async def test_commands_are_never_sent_to_the_agent(
    chat: CliRunner, slow_fake: tuple[FakePolyAI, SlowAgent]
) -> None:
    """/help, /new and an unknown /command are answered by chat; //x sends /x; /new starts a
    fresh conversation after closing the first."""
    fake, _ = slow_fake
    stdin = "/help\none\n/new\n/nope\n//two\n"
    done = await asyncio.wait_for(
        asyncio.to_thread(chat, stdin=stdin, env=fake_settings(fake)), TIMEOUT
    )
    text = done.stdout
    assert done.returncode == 0
    assert "/new    close this conversation and start a new one" in text
    assert "-- /nope is not a command (not sent): /help lists them" in text
    first, second = fake.conversations
    assert fake.turns == {first: ["one"], second: ["/two"]}
    assert fake.conversations[first].closed
    assert fake.conversations[second].closed
    assert text.count(" closed.") == 2


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pseudo-terminal")
async def test_in_a_terminal_lines_are_edited_remembered_and_answers_awaited_visibly(
    slow_fake: tuple[FakePolyAI, SlowAgent],
) -> None:
    """In a terminal: arrow keys edit the line and recall the last one (readline), a waiting
    indicator shows while the agent is slow, a conversation the agent ended offers /new, and
    Ctrl-C at the prompt leaves cleanly."""
    pytest.importorskip("readline", reason="line editing needs Python's readline module")
    fake, agent = slow_fake
    agent.delay = 1.5  # answered sooner, once the indicator has shown
    master, slave = os.openpty()
    proc = await start_chat(chat_env(fake, TERM="xterm"), stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    loop = asyncio.get_running_loop()
    screen = ""
    changed = asyncio.Event()

    def on_output() -> None:
        nonlocal screen
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the chat closed the terminal
            chunk = b""
        if not chunk:
            loop.remove_reader(master)
        screen += chunk.decode(errors="replace")
        changed.set()

    matched = 0  # how much of the screen earlier expectations have used

    async def expect(text: str) -> None:
        """Wait until ``text`` appears after what the previous expectation matched."""
        nonlocal matched
        deadline = time.monotonic() + TIMEOUT
        while (found := screen.find(text, matched)) < 0:
            changed.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {text!r} in {screen[matched:]!r}"
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        matched = found + len(text)

    loop.add_reader(master, on_output)
    try:
        await expect("you> ")
        os.write(master, b"helo\x1b[Dl\r")  # left arrow, then insert the missing l
        await expect("agent: echo hello\r\nyou> ")
        os.write(master, b"\x1b[A\r")  # up arrow: the line before
        await expect("agent: echo hello\r\nyou> ")
        os.write(master, b"slow\r")
        await expect("agent is answering")
        agent.release.set()
        await expect("agent: finally")
        await expect("you> ")
        os.write(master, b"bye\r")  # the agent ends it: in a terminal, the chat goes on
        await expect("-- /new starts another conversation, /quit leaves")
        await expect("you> ")
        os.write(master, b"anyone?\r")
        await expect("-- the agent has ended this conversation: /new starts another")
        await expect("you> ")
        os.write(master, b"/new\r")
        await expect("-- new conversation")
        await expect("you> ")
        # The prompt is drawn just before readline waits for input, and a signal that lands in
        # between is seen only at the next one (CPython's readline): let it start waiting.
        await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        await expect(" closed.")
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 130
    finally:
        loop.remove_reader(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    first, second = fake.conversations
    assert fake.turns[first] == ["hello", "hello", "slow", "bye"]  # "anyone?" was not sent
    assert fake.conversations[first].closed
    assert fake.conversations[second].closed
    assert "^[[" not in screen
    assert f"-- /new: closing conversation {first}" in screen
    assert f"-- interrupted: closing conversation {second}" in screen
