"""``polyai-async serve``: a fake PolyAI Chat API server in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .._commandline import port_number
from ..testing import FakePolyAI, run_server
from ._common import (
    add_agent_options,
    add_fault_options,
    agent_capacity_from,
    fail,
    faults_from,
    make_fake,
)


def add_parser(commands: Any) -> None:
    """Add the ``serve`` command to the subparsers ``commands``."""
    serve = commands.add_parser(
        "serve",
        help="run a fake PolyAI Chat API server until Ctrl-C",
        description="Run a fake PolyAI Chat API server (the demo agent) with optional faults, "
        "until Ctrl-C. Prints its URL on the first line, then the (fake) settings to use.",
    )
    where = serve.add_argument_group("server")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    where.add_argument(
        "--port",
        type=port_number,
        default=8000,
        help="port to listen on, 0 to 65535; 0 picks a free one (default 8000)",
    )
    where.add_argument(
        "--agent", choices=("demo", "echo"), default="demo", help="who answers (default demo)"
    )
    add_agent_options(serve)
    add_fault_options(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``polyai-async serve`` with the parsed ``args``; returns the exit status."""
    fake = make_fake(
        host=args.host,
        port=args.port,
        agent=args.agent,
        faults=faults_from(args),
        seed=args.seed,
        **agent_capacity_from(args),
    )

    def ready(running: FakePolyAI) -> None:
        print(running.url)
        if running.agent_turns_per_second is not None:
            print(
                f"The agent takes {running.agent_capacity} turns at once: at most "
                f"{running.agent_turns_per_second:g} turns a second."
            )
        print("Fake credentials, for this server only (export them, or pass them to the client):")
        print(f"  POLYAI_BASE_URL={running.url}")
        print(f"  POLYAI_API_KEY={running.api_key}")
        print(f"  POLYAI_TOKEN={running.token}")
        print(f"  POLYAI_ACCOUNT_ID={running.account_id}")
        print(f"  POLYAI_PROJECT_ID={running.project_id}")
        print("Press Ctrl-C to stop.", flush=True)

    try:
        stats = asyncio.run(run_server(fake, on_ready=ready))
    except OSError as exc:
        fail(f"could not listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 1
    requests = sum(stats.requests.values())
    print(f"Stopped after {requests:,} requests.", flush=True)
    return 0
