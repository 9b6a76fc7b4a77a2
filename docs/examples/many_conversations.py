"""Drive many conversations at once, at most `concurrency` in flight, and print a summary.

Run it: ``python many_conversations.py [N] [CONCURRENCY]``. With POLYAI_API_KEY set it talks to
the API configured by the POLYAI_* variables; without, to a fake PolyAI server it starts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence

import attrs

from polyai_async import PolyAIClient, PolyAIError

SCRIPT = ("hi", "what are your opening hours?", "thanks", "bye")


@attrs.define
class Summary:
    """What a run did."""

    conversations: int = 0
    completed: int = 0
    turns: int = 0
    handoffs: int = 0
    errors: dict[str, int] = attrs.Factory(dict)
    max_in_flight: int = 0
    seconds: float = 0.0


async def run(
    client: PolyAIClient, n: int = 100, concurrency: int = 10, script: Sequence[str] = SCRIPT
) -> Summary:
    """Hold ``n`` conversations, at most ``concurrency`` at a time, and count what happened."""
    summary = Summary(conversations=n)
    limit = asyncio.Semaphore(concurrency)
    in_flight = 0

    async def one() -> None:
        nonlocal in_flight
        async with limit:
            in_flight += 1
            summary.max_in_flight = max(summary.max_in_flight, in_flight)
            try:
                async with client.conversation(channel="webchat") as chat:
                    for message in script:
                        reply = await chat.send(message)
                        summary.turns += 1
                        if reply.end_conversation:
                            summary.handoffs += reply.handoff is not None
                            break
                summary.completed += 1
            except PolyAIError as error:
                name = type(error).__name__
                summary.errors[name] = summary.errors.get(name, 0) + 1
            finally:
                in_flight -= 1

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    summary.seconds = time.perf_counter() - start
    return summary


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


async def main(n: int = 100, concurrency: int = 10) -> None:
    """Run the conversations and print the summary."""
    async with polyai_client() as client:
        summary = await run(client, n, concurrency)
    errors = sum(summary.errors.values())
    detail = f" {summary.errors}" if summary.errors else ""
    print(
        f"{summary.completed}/{summary.conversations} conversations, {summary.turns} turns, "
        f"{summary.handoffs} handoffs, {errors} errors{detail} "
        f"in {summary.seconds:.2f}s (at most {summary.max_in_flight} at once)"
    )


if __name__ == "__main__":
    asyncio.run(main(*(int(arg) for arg in sys.argv[1:3])))
