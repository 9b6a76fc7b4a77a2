"""Where a request's time goes: ``python -m benchmarks._profile [--out DIR]``.

Runs the contenders' workload (200 conversations in flight, as in the suite) in this process
under pyinstrument, polyai_async and then hand-written aiohttp, against the fake server in its
own process, and sorts every sample's innermost Python frame into a few groups: aiohttp's
request path, the event loop, the client's own code, the benchmark's driver. Prints the shares
side by side; writes ``profile.md``, ``profile.json`` and each contender's call tree as text.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from ._report import markdown_table
from ._server import ServerProcess, cpu_plan, pin
from ._suite import Plan
from ._workload import Run, make_api

CONTENDERS = ("polyai_async", "aiohttp")
# (group, path fragments), first match wins; the frame's file decides, C calls count for the
# Python frame that made them (a socket's recv counts for asyncio's selector_events).
IDLE = "waiting in select (idle)"
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (IDLE, ("/selectors.py",)),
    ("aiohttp's request path (with yarl, multidict)", ("/aiohttp/", "/yarl/", "/multidict/")),
    ("asyncio event loop, tasks, sockets", ("/asyncio/",)),
    (
        "the client's own code (polyai_async: models, checks, orjson, cattrs, retry "
        "bookkeeping; hand-written: stdlib json)",
        ("/polyai_async/", "/cattrs/", "/attr/", "/json/", "/tenacity/"),
    ),
    ("the benchmark's driver", ("/benchmarks/",)),
)
OTHER = "the rest (interpreter, GC, other libraries)"


def group_of(file_path: str | None) -> str:
    """The group a frame's file belongs to."""
    path = (file_path or "").replace("\\", "/")
    for name, fragments in GROUPS:
        if any(fragment in path for fragment in fragments):
            return name
    return OTHER


def _frames(frame: Any) -> Iterator[Any]:
    yield frame
    for child in frame.children:
        yield from _frames(child)


def self_time_by_group(root: Any) -> dict[str, float]:
    """Seconds of self time per group, over the whole call tree."""
    totals = {name: 0.0 for name, _ in GROUPS} | {OTHER: 0.0}
    for frame in _frames(root):
        # pyinstrument's synthetic leaves ("[self]") are in their parent's total_self_time.
        if not frame.is_synthetic:
            totals[group_of(frame.file_path)] += frame.total_self_time
    return totals


async def _profile(contender: str, url: str, conversations: int) -> tuple[Any, int]:
    from pyinstrument import Profiler

    plan = Plan()  # the suite's workload: turns, conversations in flight, connections
    api = make_api({"contender": contender, "url": url, "max_connections": plan.max_connections})
    try:
        # The warm-up opens the pool's connections.
        await Run(api, plan.turns, False).run(plan.warmup, plan.concurrency)
        run = Run(api, plan.turns, False)
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        await run.run(conversations, plan.concurrency)
        profiler.stop()
    finally:
        await api.aclose()
    return profiler, len(run.latencies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._profile", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--conversations", type=int, default=2000)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    client_cpu, server_cpu = cpu_plan()
    if client_cpu is not None:
        pin(0, client_cpu)  # this process: the client
    shares: dict[str, dict[str, float]] = {}
    with ServerProcess(cpu=server_cpu) as server:
        for contender in CONTENDERS:
            profiler, requests = asyncio.run(_profile(contender, server.url, args.conversations))
            (args.out / f"profile-{contender}.txt").write_text(
                profiler.output_text(unicode=True, show_all=False)
            )
            root = profiler.last_session.root_frame(trim_stem=False)
            busy = {k: v for k, v in self_time_by_group(root).items() if k != IDLE}
            total = sum(busy.values())
            shares[contender] = {
                "requests": requests,
                "busy_s": total,
                "busy_us_per_request": total / requests * 1e6,
                **{k: v / total for k, v in busy.items()},
            }
    busy_groups = [name for name, _ in GROUPS if name != IDLE] + [OTHER]
    rows = [[name, *(f"{shares[c][name]:.0%}" for c in CONTENDERS)] for name in busy_groups]
    rows.append(
        [
            "busy time per request, under the profiler",
            *(f"{shares[c]['busy_us_per_request']:.0f} µs" for c in CONTENDERS),
        ]
    )
    table = markdown_table(["share of the client's busy time", *CONTENDERS], rows) + "\n"
    (args.out / "profile.md").write_text(table)
    (args.out / "profile.json").write_bytes(orjson.dumps(shares, option=orjson.OPT_INDENT_2))
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
