"""The load generator's own ceiling: how many conversations a second one process drives honestly.

Against the fake server (its own process) answering every call after a fixed 100 ms, the open
model runs at rising rates, on asyncio and on uvloop: 3 short rounds per loop and rate, the
loops interleaved, medians reported; a run lasts 3 s, or long enough for 300 arrivals. A rate
is *honest* while the generator's lag stays at or under 10 ms (p99: how late conversations
start against their schedule); past that the figures describe the generator, not the server.
For each rate: conversations/s and requests/s achieved, the lag, the client's CPU, and the
error of the measured respond p50 against the server's 100 ms.

    python -m benchmarks.generator [--smoke] [--out DIR]

``python -m benchmarks`` runs it too, after the suite (``--smoke``: one short rate per loop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from polyai_async import PoolLimits
from polyai_async.load import Load, Persona, Scenario, TurnSpec, run_load
from polyai_async.testing import DEFAULT_CREDENTIALS, FakeServerProcess

LATENCY_S = 0.1
LAG_LIMIT_MS = 10.0
RATES = (25, 50, 100, 200, 400, 800, 1600)
SMOKE_RATES = (20,)
SECONDS = 3.0
# A p99 needs samples: a run lasts long enough for this many arrivals.
MIN_ARRIVALS = 300
ROUNDS = 3
SMOKE_SECONDS = 0.5
LOOPS = ("asyncio", "uvloop")
# One turn: create, respond, close, three calls of 100 ms each.
SCENARIO = Scenario(
    name="one-turn", personas=(Persona(name="p", turns=(TurnSpec(say=("hello",)),)),)
)


def measure(url: str, loop: str, rate: float, seconds: float) -> dict[str, Any]:
    """One open-model run at ``rate`` for ``seconds``: its figures."""
    settings = {
        "base_url": url,
        **DEFAULT_CREDENTIALS,
        # Enough connections that no call waits for one: the latency is the server's.
        "limits": PoolLimits(max_connections=10_000),
    }
    load = Load.open(rate=rate, duration=seconds, arrival="constant", graceful_stop=10)
    result = run_load(load, SCENARIO, client_settings=settings, loop=loop)
    s = result.summary
    p50 = s["respond_p50_ms"]
    return {
        "loop": loop,
        "rate": rate,
        "conversations_per_second": round(s["conversations_started"] / seconds, 1),
        "requests_per_second": round(s["requests"] / s["wall_seconds"], 1),
        "generator_lag_p99_ms": s["generator_lag_p99_ms"],
        "client_cpu_share": s["client_cpu_share"],
        "respond_p50_ms": p50,
        "p50_error_ms": None if p50 is None else round(p50 - LATENCY_S * 1000, 2),
        "conversations_failed": s["conversations_failed"],
        "honest": s["generator_lag_p99_ms"] is not None
        and s["generator_lag_p99_ms"] <= LAG_LIMIT_MS,
    }


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _summarize(loop: str, rate: float, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One (loop, rate) step: the median of its rounds, figure by figure."""
    lags = [r["generator_lag_p99_ms"] for r in rounds if r["generator_lag_p99_ms"] is not None]
    errors = [r["p50_error_ms"] for r in rounds if r["p50_error_ms"] is not None]
    lag = round(_median(lags), 3) if lags else None
    return {
        "loop": loop,
        "rate": rate,
        "rounds": len(rounds),
        "conversations_per_second": _median([r["conversations_per_second"] for r in rounds]),
        "requests_per_second": _median([r["requests_per_second"] for r in rounds]),
        "generator_lag_p99_ms": lag,
        "generator_lag_p99_ms_all": [r["generator_lag_p99_ms"] for r in rounds],
        "client_cpu_share": _median([r["client_cpu_share"] for r in rounds]),
        "respond_p50_ms": _median([r["respond_p50_ms"] for r in rounds]),
        "p50_error_ms": round(_median(errors), 2) if errors else None,
        "conversations_failed": sum(r["conversations_failed"] for r in rounds),
        "honest": lag is not None and lag <= LAG_LIMIT_MS,
    }


def run_generator(smoke: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Climb the rates until a loop's median lag passes 10 ms; every step's figures.

    At each rate the loops take turns, ``ROUNDS`` times (interleaved, so the machine's noise
    falls on both alike); a step is honest when the median of its rounds' lag p99 is at most
    10 ms, and a loop stops climbing after its first dishonest step.
    """
    rates, seconds, rounds = (SMOKE_RATES, SMOKE_SECONDS, 1) if smoke else (RATES, SECONDS, ROUNDS)
    load_before = round(os.getloadavg()[0], 2)
    server = FakeServerProcess("--latency", str(LATENCY_S))
    server.start()
    steps: list[dict[str, Any]] = []
    climbing = list(LOOPS)
    started = time.perf_counter()
    try:
        for rate in rates:
            if not climbing:
                break
            measured: dict[str, list[dict[str, Any]]] = {loop: [] for loop in climbing}
            for _ in range(rounds):
                for loop in climbing:
                    length = seconds if smoke else max(seconds, MIN_ARRIVALS / rate)
                    measured[loop].append(measure(server.url, loop, rate, length))
            for loop in list(climbing):
                step = _summarize(loop, rate, measured[loop])
                steps.append(step)
                log(
                    f"generator {loop} {rate}/s: lag p99 {step['generator_lag_p99_ms']} ms "
                    f"(median of {rounds}), p50 error {step['p50_error_ms']} ms, "
                    f"CPU {step['client_cpu_share']:.0%}"
                )
                if not step["honest"]:
                    climbing.remove(loop)
    finally:
        server.stop()
    best = {}
    for loop in LOOPS:
        honest = [r for r in steps if r["loop"] == loop and r["honest"]]
        best[loop] = max(honest, key=lambda r: r["rate"]) if honest else None
    return {
        "smoke": smoke,
        "latency_ms": LATENCY_S * 1000,
        "lag_limit_ms": LAG_LIMIT_MS,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "runs": steps,
        "highest_honest": best,
        "wall_s": round(time.perf_counter() - started, 1),
        # The machine is shared: how busy it was says how much to trust the lag.
        "load_average_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "nproc": os.cpu_count(),
    }


def table(result: dict[str, Any]) -> str:
    """The runs as a markdown table, then the highest honest rate per loop."""
    lines = [
        "| loop | rate asked /s | conversations/s | requests/s | generator lag p99 ms | "
        "client CPU | respond p50 ms | p50 error ms | honest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['loop']} | {r['rate']:,} | {r['conversations_per_second']:,.1f} | "
            f"{r['requests_per_second']:,.0f} | {r['generator_lag_p99_ms']} | "
            f"{r['client_cpu_share']:.0%} | {r['respond_p50_ms']} | {r['p50_error_ms']} | "
            f"{'yes' if r['honest'] else 'no'} |"
        )
    load = result["load_average_1m"]
    lines.append("")
    lines.append(
        f"Load average (1 min) on the {result['nproc']}-core machine: {load['before']} before, "
        f"{load['after']} after."
    )
    lines.append("")
    for loop, best in result["highest_honest"].items():
        if best is None:
            lines.append(f"- {loop}: no rate stayed under {LAG_LIMIT_MS:g} ms of lag")
        else:
            lines.append(
                f"- {loop}: {best['conversations_per_second']:,.0f} conversations/s, "
                f"{best['requests_per_second']:,.0f} requests/s (p50 error "
                f"{best['p50_error_ms']} ms)"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generator", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one short rate per loop")
    parser.add_argument("--out", type=Path, default=None, help="write generator.json/.md here")
    args = parser.parse_args(argv)
    result = run_generator(args.smoke, lambda line: print(line, file=sys.stderr, flush=True))
    text = table(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "generator.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "generator.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
