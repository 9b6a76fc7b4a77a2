"""FakePolyAI(agent_capacity=N): an agent that saturates, with a known capacity."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from polyai_async import RetryPolicy
from polyai_async.testing import FakePolyAI
from polyai_async.testing.__main__ import build_parser, fake_from_args
from tests.cli_runner import CliRunner


async def test_turns_beyond_the_slots_wait_first_come_first_served() -> None:
    """With 2 slots of 50 ms, 6 turns at once end in 3 waves, in the order they came."""
    async with FakePolyAI(agent_capacity=2, agent_latency=0.05) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            chats = [await client.create_chat() for _ in range(6)]
            ended: list[int] = []

            async def turn(index: int) -> float:
                start = time.perf_counter()
                await client.respond(chats[index].conversation_id, "hi")
                ended.append(index)
                return time.perf_counter() - start

            tasks = []
            for index in range(6):
                tasks.append(asyncio.create_task(turn(index)))
                await asyncio.sleep(0.002)  # arrive in order
            latencies = await asyncio.gather(*tasks)
    assert ended == [0, 1, 2, 3, 4, 5]
    assert max(latencies[:2]) < 0.09  # served at once
    assert min(latencies[4:]) > 0.09  # waited two turns' latency
    assert fake.stats.max_agent_waiting == 4
    assert fake.stats.agent_waiting == 0


async def test_a_turn_whose_client_left_gives_its_slot_back_at_once() -> None:
    """Turns queued behind the one slot whose clients hung up do not hold it for their latency."""
    async with FakePolyAI(agent_capacity=1, agent_latency=0.2) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            chats = [await client.create_chat() for _ in range(4)]
            first = asyncio.create_task(client.respond(chats[0].conversation_id, "hi"))
            await asyncio.sleep(0.02)
            queued = [
                asyncio.create_task(client.respond(c.conversation_id, "hi")) for c in chats[1:3]
            ]
            await asyncio.sleep(0.02)
            for task in queued:  # their clients give up while they wait for the slot
                task.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            await first
            start = time.perf_counter()
            await client.respond(chats[3].conversation_id, "hi")
            elapsed = time.perf_counter() - start
    # Served after at most its own 200 ms, not after two abandoned turns of 200 ms each.
    assert elapsed < 0.35
    assert fake.stats.agent_waiting == 0


async def test_create_and_close_take_no_slot() -> None:
    """A turn holding the only slot does not delay create or close."""
    async with FakePolyAI(agent_capacity=1, agent_latency=0.5) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            busy = await client.create_chat()
            turn = asyncio.create_task(client.respond(busy.conversation_id, "hi"))
            await asyncio.sleep(0.02)
            start = time.perf_counter()
            other = await client.create_chat()
            await client.close_chat(other.conversation_id)
            elapsed = time.perf_counter() - start
            turn.cancel()
    assert elapsed < 0.2


async def test_stopping_cancels_turns_waiting_for_a_slot() -> None:
    """Turns queued behind a slow agent do not hold the server's shutdown."""
    fake = FakePolyAI(agent_capacity=1, agent_latency=30)
    await fake.start()
    client = fake.client(retry=RetryPolicy(max_attempts=1))
    chats = [await client.create_chat() for _ in range(3)]
    turns = [asyncio.create_task(client.respond(c.conversation_id, "hi")) for c in chats]
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    await fake.aclose()
    assert time.perf_counter() - start < 2
    await asyncio.gather(*turns, return_exceptions=True)
    await client.aclose()


def test_theoretical_capacity() -> None:
    """N slots of a mean latency L sustain N / L turns a second; no limit gives None."""
    assert FakePolyAI(agent_capacity=4, agent_latency=0.1).agent_turns_per_second == 40
    jittered = FakePolyAI(agent_capacity=4, agent_latency=0.08, agent_latency_jitter=0.04)
    assert jittered.agent_turns_per_second == pytest.approx(40)
    assert FakePolyAI().agent_turns_per_second is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"agent_capacity": 0}, "agent_capacity must be a whole number >= 1"),
        ({"agent_capacity": 2.5}, "agent_capacity must be a whole number >= 1"),
        ({"agent_capacity": True}, "agent_capacity must be a whole number >= 1"),
        ({"agent_latency": -1}, "agent_latency must be a number of seconds >= 0"),
        ({"agent_latency_jitter": float("nan")}, "agent_latency_jitter must be a number"),
        ({"agent_latency": float("inf")}, "agent_latency must be a finite number"),
    ],
)
def test_bad_capacity_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    """Each setting is checked when the fake is made, naming it."""
    with pytest.raises(ValueError, match=match):
        FakePolyAI(**kwargs)


def test_the_server_process_takes_the_capacity_options() -> None:
    """The fake's own process takes --agent-capacity and --agent-latency."""
    args = build_parser().parse_args(["--agent-capacity", "4", "--agent-latency", "0.2"])
    fake = fake_from_args(args)
    assert fake.agent_capacity == 4
    assert fake.agent_turns_per_second == pytest.approx(20)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--agent-latency", "0.2"], "--agent-latency: give --agent-capacity too"),
        (["serve", "--agent-capacity", "0"], "argument --agent-capacity: 0 is below the minimum"),
        (
            ["bench", "--base-url", "http://127.0.0.1:9", "--agent-capacity", "4"],
            "--agent-capacity: only the embedded fake server takes these options",
        ),
    ],
)
@pytest.mark.usefixtures("cli_state")
def test_capacity_options_are_checked(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A capacity option without a capacity, out of range, or for a real target: exit 2."""
    creds = ("POLYAI_API_KEY", "POLYAI_TOKEN", "POLYAI_ACCOUNT_ID", "POLYAI_PROJECT_ID")
    done = CliRunner(monkeypatch, capsys)(*argv, env=dict.fromkeys(creds, "x"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert message in done.stderr


@pytest.mark.e2e
@pytest.mark.usefixtures("cli_state")
def test_bench_drives_an_embedded_fake_of_limited_capacity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench --agent-capacity 1: four turns at once wait for one slot; the max shows the queue."""
    path = tmp_path / "bench.json"
    done = CliRunner(monkeypatch, capsys)(
        "bench",
        *("--concurrency", "4", "--conversations", "8", "--turns", "1", "--quiet"),
        *("--agent-capacity", "1", "--agent-latency", "0.05", "--json", str(path)),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(path.read_text())
    assert report["settings"]["agent_capacity"] == 1
    # Alone, a turn takes 50 ms; the fourth in the queue waits for three before it.
    assert report["respond_max_ms"] >= 150
