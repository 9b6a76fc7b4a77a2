"""Only for the type checker: the public API used as a user would, so mypy --strict checks it.

Nothing here runs under pytest (no test_ prefix); `mypy` covers tests/ and fails if a public
signature stops accepting, or returning, what users write.
"""

from __future__ import annotations

import asyncio

import attrs

from polyai_async import (
    Channel,
    CloseChatResponse,
    Conversation,
    CreateChatResponse,
    Handoff,
    PolyAIClient,
    PolyAIError,
    PoolLimits,
    RespondChatResponse,
    RetryPolicy,
    SessionPool,
    Timeouts,
)
from polyai_async.testing import AgentReply, EchoAgent, FakePolyAI, Faults, ScriptedAgent


async def typical_use() -> None:
    policy = attrs.evolve(RetryPolicy(), retry_ambiguous=False, deadline=10.0)
    async with SessionPool(limits=PoolLimits(max_connections=50)) as pool:
        client = PolyAIClient(
            api_key="k", token="t", account_id="a", project_id="p", pool=pool, retry=policy
        )
        client_with_number = PolyAIClient(timeout=2.5)
        client_with_timeouts = PolyAIClient(timeout=Timeouts(connect=1, read=5))
        created: CreateChatResponse = await client.create_chat(channel=Channel.WEBCHAT)
        created = await client.create_chat(channel="sms", integration_attributes={"a": 1})
        reply: RespondChatResponse = await client.respond(
            created.conversation_id, "hi", metadata={"user": "u1"}
        )
        handoff: Handoff | None = reply.handoff
        destination: str | None = handoff.destination if handoff else None
        closed: CloseChatResponse = await client.close_chat(created.conversation_id)
        ok: bool = closed.success and not reply.end_conversation and destination is None
        async with client.conversation(channel=Channel.API) as chat:
            conversation: Conversation = chat
            answer: RespondChatResponse = await chat.send("hello", metadata={"k": "v"})
            ended: bool = conversation.ended or answer.end_conversation
        try:
            await client.respond("c", None)
        except PolyAIError as error:
            attempts: int = error.attempts
        await client.aclose()
        await client_with_number.aclose()
        await client_with_timeouts.aclose()
        del ok, ended, attempts


async def testing_use() -> None:
    agent = ScriptedAgent(["hi", AgentReply("bye", end_conversation=True)])
    async with FakePolyAI(agent=agent, faults=Faults(error_rate=0.1), seed=1) as fake:
        async with fake.client() as client:
            await client.create_chat()
    async with FakePolyAI(agent=EchoAgent()) as fake, fake.client() as client:
        await client.create_chat()


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(testing_use())


def fake_from_the_package() -> None:
    # The lazy export is typed as the class itself, and a typo is still an error.
    from polyai_async import FakePolyAI as PackageFake

    fake: FakePolyAI = PackageFake(seed=1)
    assert not fake.running
