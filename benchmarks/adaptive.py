"""The docs' adaptive concurrency chart: 200 conversations against an API that admits 8 calls.

Runs the fake server in this process with ``Faults(concurrency_limit=8)``: it processes 8
requests at once, each taking ``--latency``, and answers one more 429 with ``Retry-After:
--retry-after``. 200 conversations (create, ``--turns`` turns, close) start at once, through
one client, first with ``adaptive_concurrency=True`` and then without, with the same retry
policy (enough attempts, no budget, so that both complete every conversation, and the
comparison is of time and 429s). A third run without it and with the default RetryPolicy
shows what a bot gets out of the box. Writes the chart (cap and calls in flight over time,
429s per second, completion) into ``--out`` and the figures into ``--json``; prints them.

    python -m benchmarks.adaptive [--out docs/assets] [--json benchmarks/results/adaptive.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import attrs

from polyai_async import CallEvent, PolyAIClient, PolyAIError, RetryPolicy
from polyai_async.testing import FakePolyAI, Faults

SLOTS = 8
# Enough attempts and time for every conversation to complete in both runs; no budget, so
# that the comparison is of how long it took and how often the API said no.
PATIENT = RetryPolicy(max_attempts=100, deadline=600, retry_budget=None)


@attrs.define
class Run:
    """What one run saw."""

    name: str
    seconds: float = 0.0
    completed: int = 0
    failed: int = 0
    requests: int = 0
    rate_limited: int = 0
    # (seconds since start, status or None, the cap then or None)
    answers: list[tuple[float, int | None, int | None]] = attrs.Factory(list)
    in_flight: list[tuple[float, int]] = attrs.Factory(list)

    def figures(self, ideal: float) -> dict[str, Any]:
        return {
            "run": self.name,
            "completed": self.completed,
            "failed": self.failed,
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "rate_limited_share": round(self.rate_limited / max(self.requests, 1), 4),
            "seconds": round(self.seconds, 2),
            "vs_ideal": round(self.seconds / ideal, 2),
        }


async def conversation(client: PolyAIClient, turns: int) -> None:
    async with client.conversation() as chat:
        for turn in range(turns):
            await chat.send(f"question {turn}")


async def measure(
    name: str,
    *,
    conversations: int,
    turns: int,
    latency: float,
    retry_after: float,
    retry: RetryPolicy,
    adaptive: bool,
) -> Run:
    run = Run(name)
    faults = Faults(concurrency_limit=SLOTS, latency=latency, retry_after=retry_after)
    loop = asyncio.get_running_loop()
    started = loop.time()

    def answered(event: CallEvent) -> None:
        run.requests += 1
        run.rate_limited += event.status == 429
        run.answers.append((loop.time() - started, event.status, event.concurrency_limit))

    async with FakePolyAI(faults=faults) as fake:
        client = fake.client(
            retry=retry,
            adaptive_concurrency=adaptive,
            event_hooks={"answer_received": [answered]},
        )

        async def sample() -> None:
            while True:
                run.in_flight.append((loop.time() - started, fake.stats.in_flight))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        async with client:
            started = loop.time()
            results = await asyncio.gather(
                *(conversation(client, turns) for _ in range(conversations)),
                return_exceptions=True,
            )
            run.seconds = loop.time() - started
        sampler.cancel()
    for result in results:
        if isinstance(result, PolyAIError):
            run.failed += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            run.completed += 1
    return run


def plot(runs: list[Run], ideal: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(7, 5.6), dpi=110, sharex=True)
    top, bottom = axes
    colours = {"adaptive": "#2e86c1", "without": "#c0392b"}
    adaptive = runs[0]
    caps = [(t, cap) for t, _, cap in adaptive.answers if cap is not None]
    top.step([t for t, _ in caps], [c for _, c in caps], where="post", color="#1b4f72", lw=1.4)
    top.plot([], [], color="#1b4f72", label="adaptive: the cap")
    for run, key in ((runs[0], "adaptive"), (runs[1], "without")):
        t = [p[0] for p in run.in_flight]
        n = [p[1] for p in run.in_flight]
        top.plot(t, n, color=colours[key], alpha=0.45, lw=0.9, label=f"{key}: calls processed")
    top.axhline(SLOTS, color="k", ls=":", lw=1, label=f"the API's {SLOTS} slots")
    top.set_ylabel("calls")
    top.set_ylim(0, SLOTS * 2)
    top.legend(fontsize=7, loc="upper right")
    top.set_title(
        f"200 conversations, an API that admits {SLOTS} calls at once (429 beyond)", fontsize=10
    )
    end = max(run.seconds for run in runs[:2])
    bins = max(1, math.ceil(end))
    for run, key in ((runs[0], "adaptive"), (runs[1], "without")):
        per_second = [0] * bins
        for at, status, _ in run.answers:
            if status == 429 and at < bins:
                per_second[int(at)] += 1
        share = run.rate_limited / max(run.requests, 1)
        bottom.plot(
            [s + 0.5 for s in range(bins)],
            per_second,
            "o-",
            ms=3,
            color=colours[key],
            label=f"{key}: 429s per second ({share:.1%} of requests; done in {run.seconds:.1f} s)",
        )
        bottom.axvline(run.seconds, color=colours[key], ls="--", lw=1)
    bottom.axvline(
        ideal, color="k", ls=":", lw=1, label=f"what {SLOTS} slots allow ({ideal:.1f} s)"
    )
    bottom.set_yscale("symlog", linthresh=1)
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("429 answers / s")
    bottom.set_xlabel("seconds since start")
    bottom.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def main(args: argparse.Namespace) -> list[Run]:
    common = {
        "conversations": args.conversations,
        "turns": args.turns,
        "latency": args.latency,
        "retry_after": args.retry_after,
    }
    runs = [
        await measure("adaptive", retry=PATIENT, adaptive=True, **common),
        await measure("without", retry=PATIENT, adaptive=False, **common),
        await measure(
            "without, default RetryPolicy", retry=RetryPolicy(), adaptive=False, **common
        ),
    ]
    return runs


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--retry-after", type=float, default=1.0, help="the 429s' Retry-After")
    parser.add_argument("--out", type=Path, default=Path("docs/assets"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/adaptive.json"))
    args = parser.parse_args()
    wall = time.perf_counter()
    runs = asyncio.run(main(args))
    requests_per_conversation = args.turns + 2
    ideal = args.conversations * requests_per_conversation * args.latency / SLOTS
    figures = {
        "settings": {
            "conversations": args.conversations,
            "turns": args.turns,
            "latency": args.latency,
            "retry_after": args.retry_after,
            "slots": SLOTS,
            "ideal_seconds": round(ideal, 2),
        },
        "runs": [r.figures(ideal) for r in runs],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, ideal, args.out / "adaptive-concurrency.png")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"({time.perf_counter() - wall:.0f} s)")


if __name__ == "__main__":
    run()
