"""The fake server for the benchmarks: ``python -m polyai_async.testing`` plus turn counters.

It takes the same arguments and prints its URL first, the same way; on SIGTERM or SIGINT it
writes one JSON line to stderr: the server's Stats, and the turns it recorded and how many of
them ambiguous retries duplicated (FakePolyAI.duplicated_turns, which the Stats do not carry).
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from polyai_async.testing import FakePolyAI, run_server
from polyai_async.testing.__main__ import build_parser, fake_from_args


def counters(fake: FakePolyAI) -> dict[str, object]:
    """The Stats (attempts summed), plus the turns recorded and the duplicated ones."""
    return {
        **fake.stats.as_dict(),
        "conversations_created": len(fake.conversations),
        "turns_recorded": sum(len(turns) for turns in fake.turns.values()),
        "duplicated_turns": sum(fake.duplicated_turns().values()),
        # Attempts per conversation id are tens of thousands of keys: only their sum is useful.
        "attempts": sum(fake.stats.attempts.values()),
    }


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    fake = fake_from_args(args)
    asyncio.run(run_server(fake, on_ready=lambda running: print(running.url, flush=True)))
    print(orjson.dumps(counters(fake)).decode(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
