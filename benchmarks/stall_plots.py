"""The docs' open-vs-closed plots: the same 2-second server stall seen by both load models.

Runs the fake server in this process with a gate that holds every request for 2 s once, drives
it with the open model (30 conversations/s) and then the closed model (10 users), and draws
each run's create latency per second (p50, p99) and conversations started per second into
``docs/assets/load-stall-open.png`` and ``docs/assets/load-stall-closed.png``. Prints the
figures the docs quote.

    python -m benchmarks.stall_plots [--out docs/assets]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from polyai_async.load import Load, LoadResult, Persona, Scenario, TurnSpec, run_load_async
from polyai_async.testing import FakePolyAI

ONE_TURN = Scenario(name="one-turn", personas=(Persona(name="p", turns=(TurnSpec(say=("hi",)),)),))
STALL_AT, STALL_FOR, DURATION = 3.0, 2.0, 10.0


class StallingFake(FakePolyAI):
    """The fake, but every request waits while the gate is closed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = asyncio.Event()
        self.gate.set()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await self.gate.wait()
        return await super()._handle(request)

    async def stall(self) -> None:
        await asyncio.sleep(STALL_AT)
        self.gate.clear()
        await asyncio.sleep(STALL_FOR)
        self.gate.set()


async def measure(load: Load) -> LoadResult:
    fake = StallingFake()
    async with fake, fake.client() as client:
        stall = asyncio.create_task(fake.stall())
        result = await run_load_async(client, load, ONE_TURN)
        await stall
    return result


def plot(result: LoadResult, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.summary["timeseries"]
    t = [row["t"] + 0.5 for row in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.axvspan(STALL_AT, STALL_AT + STALL_FOR, color="#f4cccc", alpha=0.5, label="server stalled")
    p99 = [row["create_p99_ms"] for row in rows]
    p50 = [row["create_p50_ms"] for row in rows]
    ax.plot(t, p99, "o-", color="#c0392b", label="create p99 (that second)")
    ax.plot(t, p50, "o-", color="#2e86c1", label="create p50 (that second)")
    run_p99 = result.figure("create_p99_ms")
    ax.axhline(run_p99, color="#c0392b", ls="--", lw=1, label="create p99 (run)")
    ax.set_yscale("log")
    ax.set_ylim(0.1, 5000)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("create latency (ms)")
    ax.set_title(title, fontsize=10)
    started = ax.twinx()
    counts = [row["conversations_started"] for row in rows]
    started.bar(t, counts, width=0.6, alpha=0.18, color="k", label="started / s")
    started.set_ylabel("conversations started / s")
    ax.set_zorder(started.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


async def measure_both() -> tuple[LoadResult, LoadResult]:
    open_run = await measure(Load.open(rate=30, duration=DURATION, arrival="constant"))
    closed_run = await measure(Load.closed(concurrency=10, duration=DURATION))
    return open_run, closed_run


def main(out: Path) -> None:
    open_run, closed_run = asyncio.run(measure_both())
    out.mkdir(parents=True, exist_ok=True)
    for name, result, title in (
        ("open", open_run, "open model, 30 conversations/s"),
        ("closed", closed_run, "closed model, 10 users"),
    ):
        p99 = result.figure("create_p99_ms")
        plot(result, f"{title}: create p99 {p99:,.0f} ms", out / f"load-stall-{name}.png")
        print(
            f"{name}: started {result.figure('conversations_started')}, create p50 "
            f"{result.figure('create_p50_ms'):.1f} ms, p99 {p99:.1f} ms, max "
            f"{result.figure('create_max_ms'):.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/assets"))
    main(parser.parse_args().out)
