"""One simulated conversation: every call, expectation and end reported, close always sent."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from polyai_async import Handoff, PolyAIError, RetryPolicy
from polyai_async.load import (
    Expect,
    Persona,
    Scenario,
    ThinkTime,
    TurnSpec,
    run_conversation,
)
from polyai_async.load import _conversation as conversation_module
from polyai_async.load._conversation import Cancellations
from polyai_async.testing import AgentReply, FakePolyAI, Faults, ScriptedAgent

NO_RETRY = RetryPolicy(max_attempts=1)


class Recorder:
    """An Observer that keeps everything it is told."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, float, PolyAIError | None, int | None]] = []
        self.expectations: list[tuple[str, str, bool, str | None]] = []
        self.conversations: list[tuple[Any, ...]] = []

    def request(
        self,
        endpoint: str,
        method: str,
        seconds: float,
        error: PolyAIError | None,
        turn: int | None,
    ) -> None:
        self.requests.append((endpoint, method, seconds, error, turn))

    def expectation(self, persona: str, expectation: str, passed: bool, reply: str | None) -> None:
        self.expectations.append((persona, expectation, passed, reply))

    def conversation(
        self,
        persona: str,
        seconds: float,
        error: PolyAIError | None,
        ended: bool,
        handoff: Handoff | None,
        turns: int,
    ) -> None:
        self.conversations.append((persona, seconds, error, ended, handoff, turns))


def scenario_of(*turns: TurnSpec, **kwargs: Any) -> tuple[Scenario, Persona]:
    persona = Persona(name="p", turns=turns)
    return Scenario(name="s", personas=(persona,), **kwargs), persona


async def test_turns_expectations_and_the_agents_end_are_reported() -> None:
    """Create, each turn, close: the handoff ends it early and the expectations are judged."""
    scenario, persona = scenario_of(
        TurnSpec(say=("hello",), expect=Expect(ended=False, response_contains="Hello")),
        TurnSpec(
            say=("a human please",),
            metadata={"user_action": "clicked"},
            expect=Expect(handoff="elsewhere"),
        ),
        TurnSpec(say=("never sent",)),
        create={"channel": "webchat"},
    )
    observer = Recorder()
    async with FakePolyAI() as fake, fake.client(retry=NO_RETRY) as client:
        await run_conversation(client, scenario, persona, random.Random(1), observer)
        (state,) = fake.conversations.values()
    assert [(r[0], r[1], r[4]) for r in observer.requests] == [
        ("create", "POST", None),
        ("respond", "POST", 0),
        ("respond", "POST", 1),
        ("close", "PUT", None),
    ]
    assert all(r[3] is None and r[2] > 0 for r in observer.requests)
    assert state.turns == ["hello", "a human please"]
    assert state.channel == "webchat"
    assert state.metadata == {"user_action": "clicked"}
    assert state.closed
    assert [(e[1], e[2]) for e in observer.expectations] == [
        ("ended=false", True),
        ("response_contains='Hello'", True),
        ("handoff=elsewhere", False),
    ]
    ((name, seconds, error, ended, handoff, turns),) = observer.conversations
    assert (name, error, ended, turns) == ("p", None, True, 2)
    assert handoff == Handoff(destination="live_agent_queue", reason="user_requested_human")
    assert seconds >= sum(r[2] for r in observer.requests) * 0.99


async def test_a_failed_turn_is_reported_and_the_conversation_still_closed() -> None:
    """A respond that fails ends the turns, never raises, and close is still sent."""
    scenario, persona = scenario_of(TurnSpec(say=("a",)), TurnSpec(say=("b",)))
    observer = Recorder()
    faults = Faults(script=["ok", "500"])  # create ok, the first respond fails
    async with FakePolyAI(faults=faults) as fake, fake.client(retry=NO_RETRY) as client:
        await run_conversation(client, scenario, persona, random.Random(1), observer)
        (state,) = fake.conversations.values()
    endpoints = [(r[0], type(r[3]).__name__ if r[3] else None) for r in observer.requests]
    assert endpoints == [("create", None), ("respond", "InternalServerError"), ("close", None)]
    assert state.closed
    (conversation,) = observer.conversations
    assert type(conversation[2]).__name__ == "InternalServerError"
    assert conversation[5] == 0


async def test_a_failed_create_reports_a_failed_conversation() -> None:
    """When create fails there is nothing to close: one request, one failed conversation."""
    scenario, persona = scenario_of(TurnSpec(say=("a",)))
    observer = Recorder()
    async with FakePolyAI(faults=Faults(error_rate=1.0)) as fake:
        async with fake.client(retry=NO_RETRY) as client:
            await run_conversation(client, scenario, persona, random.Random(1), observer)
    assert [r[0] for r in observer.requests] == ["create"]
    assert observer.conversations[0][2] is not None


async def test_scheduled_start_counts_in_create_latency() -> None:
    """In the open model create's latency runs from the scheduled start, not the call."""
    scenario, persona = scenario_of(TurnSpec(say=("a",)))
    observer = Recorder()
    async with FakePolyAI() as fake, fake.client() as client:
        scheduled = time.perf_counter() - 0.5
        await run_conversation(
            client, scenario, persona, random.Random(1), observer, scheduled=scheduled
        )
    create = observer.requests[0]
    respond = observer.requests[1]
    assert create[2] >= 0.5
    assert respond[2] < 0.5
    assert observer.conversations[0][1] >= 0.5


async def test_think_time_pauses_before_each_message() -> None:
    """A think time override of 0.2 s before each of two messages makes it last >= 0.4 s."""
    scenario, persona = scenario_of(
        TurnSpec(say=("a",)), TurnSpec(say=("b",)), think_time=ThinkTime(seconds=5)
    )
    observer = Recorder()
    async with FakePolyAI() as fake, fake.client() as client:
        started = time.perf_counter()
        await run_conversation(
            client,
            scenario,
            persona,
            random.Random(1),
            observer,
            think_time=ThinkTime(seconds=0.2),
        )
        took = time.perf_counter() - started
    assert 0.4 <= took < 4


async def test_cancellation_still_closes_the_conversation() -> None:
    """Cancelled during a turn, the conversation is closed before the cancellation goes on."""

    released = asyncio.Event()

    async def slow(message: str | None, state: Any) -> AgentReply:
        await released.wait()  # until the test is done: the fake need not wait it out at stop
        return AgentReply("late")

    scenario, persona = scenario_of(TurnSpec(say=("a",)))
    observer = Recorder()
    async with FakePolyAI(agent=slow) as fake, fake.client() as client:
        task = asyncio.create_task(
            run_conversation(client, scenario, persona, random.Random(1), observer)
        )
        while not fake.conversations or not next(iter(fake.conversations.values())).turns:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (state,) = fake.conversations.values()
        assert state.closed
        released.set()


async def test_messages_are_drawn_from_the_turns_choices() -> None:
    """A turn with several messages sends one of them, drawn from the seeded rng."""
    scenario, persona = scenario_of(TurnSpec(say=("one", "two", "three")))
    sent = set()
    async with FakePolyAI(agent=ScriptedAgent(["ok"])) as fake, fake.client() as client:
        for seed in range(12):
            await run_conversation(client, scenario, persona, random.Random(seed), Recorder())
        for state in fake.conversations.values():
            sent.update(state.turns)
    assert sent == {"one", "two", "three"}


@pytest.mark.parametrize("create_fails", [False, True])
async def test_asked_to_stop_in_its_create_a_conversation_ends_it_then_stops(
    create_fails: bool,
) -> None:
    """Through the runner's Cancellations (its create awaited in its own task, not shielded in
    another), a conversation asked to stop during its create lets the create end: what it
    created is closed, a failed create is reported, and the task ends cancelled."""
    faults = Faults(latency=0.3, endpoints={"create"}, error_rate=1.0 if create_fails else 0.0)
    scenario, persona = scenario_of(TurnSpec(say=("a",)))
    observer = Recorder()
    cancellations = Cancellations()
    async with FakePolyAI(faults=faults) as fake, fake.client(retry=NO_RETRY) as client:
        task = asyncio.create_task(
            run_conversation(
                client, scenario, persona, random.Random(1), observer, cancellations=cancellations
            )
        )
        await asyncio.sleep(0.1)  # in its create (0.3 s)
        cancellations.cancel(task)
        await asyncio.sleep(0.05)
        assert not task.done()  # not cancelled in flight: the create goes on
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r[0] for r in observer.requests] == (
            ["create"] if create_fails else ["create", "close"]
        )
        assert (observer.requests[0][3] is not None) is create_fails
        assert observer.conversations == []  # interrupted, not ended
        assert all(state.closed for state in fake.conversations.values())
        assert len(fake.conversations) == (0 if create_fails else 1)


async def test_a_create_that_outlasts_the_close_bound_is_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A conversation asked to stop whose create does not end within the bound is cancelled
    then, as a shielded create is; one asked twice is cancelled at once."""
    monkeypatch.setattr(conversation_module, "CLOSE_ON_CANCEL_SECONDS", 0.2)
    scenario, persona = scenario_of(TurnSpec(say=("a",)))
    cancellations = Cancellations()
    faults = Faults(latency=5.0, endpoints={"create"})
    async with FakePolyAI(faults=faults) as fake, fake.client(retry=NO_RETRY) as client:
        tasks = [
            asyncio.create_task(
                run_conversation(
                    client,
                    scenario,
                    persona,
                    random.Random(1),
                    Recorder(),
                    cancellations=cancellations,
                )
            )
            for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        for task in tasks:
            cancellations.cancel(task)
        cancellations.cancel(tasks[1])  # asked twice: at once
        with pytest.raises(asyncio.CancelledError):
            await tasks[1]
        assert time.perf_counter() - started < 0.15
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]
        assert 0.15 <= time.perf_counter() - started < 2
        assert not cancellations.creating
