"""``python -m polyai_async.testing``: run the fake PolyAI server as its own process.

The first line on stdout is the server's URL (read it to learn the port when ``--port 0``);
SIGINT or SIGTERM stops it cleanly, and its counters go to stderr as one line of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import orjson

from .._commandline import OneLineParser, option_names, port_number
from ._agents import AGENTS, Agent
from ._faults import Faults
from ._server import DEFAULT_CREDENTIALS, FakePolyAI, run_server


def build_parser() -> argparse.ArgumentParser:
    """Make the command line parser (shared with ``benchmarks/_fake.py``)."""
    parser = OneLineParser(
        prog="python -m polyai_async.testing",
        description="Run a fake PolyAI Chat API server; prints its URL on the first line.",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument(
        "--port", type=port_number, default=0, help="0 to 65535; 0 picks a free port (default)"
    )
    for name, value in DEFAULT_CREDENTIALS.items():
        server.add_argument("--" + name.replace("_", "-"), default=value, help=f"(default {value})")
    server.add_argument("--version", default="v1", help="the API version in the path")
    server.add_argument("--agent", choices=sorted(AGENTS), default="demo")
    server.add_argument("--seed", type=int, default=None)
    server.add_argument("--legacy-errors", action="store_true", help="old error body shape")
    agent = parser.add_argument_group("agent capacity")
    agent.add_argument(
        "--agent-capacity",
        type=int,
        default=None,
        help="respond turns the agent works on at once; more wait their turn (default: no limit)",
    )
    agent.add_argument(
        "--agent-latency", type=float, default=0.1, help="seconds a turn holds its slot (0.1)"
    )
    agent.add_argument("--agent-latency-jitter", type=float, default=0.0)
    faults = parser.add_argument_group("faults")
    faults.add_argument("--error-rate", type=float, default=0.0)
    faults.add_argument("--error-status", type=int, default=500)
    faults.add_argument("--rate-limit-rate", type=float, default=0.0)
    faults.add_argument("--retry-after", type=float, default=1.0)
    faults.add_argument("--reset-rate", type=float, default=0.0)
    faults.add_argument("--malformed-rate", type=float, default=0.0)
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    faults.add_argument("--latency-jitter", type=float, default=0.0)
    faults.add_argument(
        "--after-processing", action="store_true", help="fail after recording the turn"
    )
    faults.add_argument("--script", default="", help="fault names in order, e.g. 500,reset,ok")
    faults.add_argument(
        "--fault-endpoints",
        default="create,respond,close",
        help="the endpoints faults apply to, comma-separated",
    )
    return parser


def fake_from_args(args: argparse.Namespace) -> FakePolyAI:
    """Build the FakePolyAI the parsed arguments describe.

    Raises:
        ValueError: a fault option is out of range; the message names it.
    """
    faults = Faults(
        error_rate=args.error_rate,
        error_status=args.error_status,
        rate_limit_rate=args.rate_limit_rate,
        retry_after=args.retry_after,
        reset_rate=args.reset_rate,
        malformed_rate=args.malformed_rate,
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        after_processing=args.after_processing,
        script=args.script,
        endpoints=[e.strip() for e in args.fault_endpoints.split(",") if e.strip()],
    )
    agent: Agent = AGENTS[args.agent]()
    return FakePolyAI(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        token=args.token,
        account_id=args.account_id,
        project_id=args.project_id,
        version=args.version,
        agent=agent,
        faults=faults,
        seed=args.seed,
        legacy_errors=args.legacy_errors,
        agent_capacity=args.agent_capacity,
        agent_latency=args.agent_latency,
        agent_latency_jitter=args.agent_latency_jitter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fake = fake_from_args(args)
    except ValueError as exc:
        # Faults names its arguments (error_rate); the user typed options (--error-rate).
        parser.error(option_names(str(exc), vars(args)))
    try:
        stats = asyncio.run(
            run_server(fake, on_ready=lambda running: print(running.url, flush=True))
        )
    except OSError as exc:
        parser.exit(
            1,
            f"{parser.prog}: error: could not listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}\n",
        )
    print(orjson.dumps(stats.as_dict()).decode(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
