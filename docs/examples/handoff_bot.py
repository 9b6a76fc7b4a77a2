"""An asyncio bot that talks to a PolyAI agent for its users and routes handoffs to humans.

When the agent hands a conversation off, the bot puts it on the queue its destination names
(stand-ins for a contact-centre's queues) and stops talking: the human who takes it over
closes it. A conversation the agent ends, or that runs out of messages, the bot closes itself.

Run it: ``python handoff_bot.py``. With POLYAI_API_KEY set it talks to the API configured by
the POLYAI_* variables; without, to a fake PolyAI server it starts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import attrs

from polyai_async import PolyAIClient, PolyAIError

FALLBACK = "fallback_queue"
USERS = {
    "ana": ["hi", "what are your opening hours?", "bye"],
    "ben": ["I was charged twice", "can I talk to a human please?"],
    "cy": ["hello", "thanks"],
}


@attrs.frozen
class Ticket:
    """A conversation handed to a human, with what they need to pick it up."""

    conversation_id: str
    destination: str | None
    reason: str | None
    transcript: tuple[str, ...]


class Router:
    """One queue per known destination; a handoff anywhere else goes to the fallback queue."""

    def __init__(self, destinations: Iterable[str]) -> None:
        self.queues: dict[str, asyncio.Queue[Ticket]] = {
            name: asyncio.Queue() for name in (*destinations, FALLBACK)
        }

    async def route(self, ticket: Ticket) -> str:
        """Queue the ticket and return the queue's name."""
        name = ticket.destination if ticket.destination in self.queues else FALLBACK
        await self.queues[name].put(ticket)
        return name


async def talk(client: PolyAIClient, router: Router, user: str, messages: Sequence[str]) -> str:
    """Hold one user's conversation; return the queue it was routed to, or how it ended."""
    created = await client.create_chat(channel="webchat")
    conversation_id = created.conversation_id
    transcript = [f"agent: {created.response}"]
    ended = False
    try:
        for message in messages:
            reply = await client.respond(conversation_id, message)
            transcript += [f"{user}: {message}", f"agent: {reply.response}"]
            if reply.handoff is not None:
                # The conversation is the human's now: they close it, not us.
                ticket = Ticket(
                    conversation_id,
                    reply.handoff.destination,
                    reply.handoff.reason,
                    tuple(transcript),
                )
                return await router.route(ticket)
            if reply.end_conversation:
                ended = True
                break
    except PolyAIError as error:
        print(f"{user}: the conversation failed: {error}")
        with contextlib.suppress(PolyAIError):
            await client.close_chat(conversation_id)
        return "failed"
    await client.close_chat(conversation_id)
    return "ended" if ended else "closed"


async def human_agent(client: PolyAIClient, queue_name: str, queue: asyncio.Queue[Ticket]) -> None:
    """A stand-in for the people on one queue: take each conversation over, then close it."""
    while True:
        ticket = await queue.get()
        print(f"[{queue_name}] took over {ticket.conversation_id} ({ticket.reason}):")
        for line in ticket.transcript:
            print(f"    {line}")
        with contextlib.suppress(PolyAIError):
            await client.close_chat(ticket.conversation_id)
        queue.task_done()


async def run(
    client: PolyAIClient,
    users: Mapping[str, Sequence[str]] = USERS,
    destinations: Iterable[str] = ("live_agent_queue", "billing_queue"),
) -> dict[str, str]:
    """Talk to the agent for every user at once; return each user's outcome."""
    router = Router(destinations)
    humans = [
        asyncio.create_task(human_agent(client, name, queue))
        for name, queue in router.queues.items()
    ]
    try:
        outcomes = await asyncio.gather(
            *(talk(client, router, user, messages) for user, messages in users.items())
        )
        for queue in router.queues.values():
            await queue.join()
    finally:
        for task in humans:
            task.cancel()
        await asyncio.gather(*humans, return_exceptions=True)
    return dict(zip(users, outcomes, strict=True))


@contextlib.asynccontextmanager
async def polyai_client() -> AsyncIterator[PolyAIClient]:
    """The API the POLYAI_* variables name, or a fake PolyAI server when POLYAI_API_KEY is unset."""
    if os.environ.get("POLYAI_API_KEY"):
        async with PolyAIClient() as client:
            yield client
        return
    from polyai_async.testing import FakePolyAI  # noqa: PLC0415 - only without credentials

    async with FakePolyAI() as fake, fake.client() as client:
        print(f"POLYAI_API_KEY is not set: using a fake PolyAI server at {fake.url}")
        yield client


async def main() -> None:
    """Run the bot for the sample users and print each outcome."""
    async with polyai_client() as client:
        outcomes = await run(client)
    for user, outcome in outcomes.items():
        print(f"{user}: {outcome}")


if __name__ == "__main__":
    asyncio.run(main())
