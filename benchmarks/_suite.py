"""The phases of the suite and their summaries: contenders, scale, fault run, targets."""

from __future__ import annotations

import concurrent.futures
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import attrs
import orjson

from ._server import ServerProcess, cpu_plan, pin

SCHEMA = "polyai-async-benchmarks/1"
CONTENDERS = ("polyai_async", "aiohttp", "httpx", "polyai_async_no_retry")
# The figures summarised per contender as median, min and max over the rounds.
FIGURES = ("rps", "p50_ms", "p99_ms", "cpu_s_per_1k", "rss_peak_mb", "server_cpu_per_wall")
# name: (numerator, denominator); a throughput ratio above 1 means the numerator is faster.
RATIOS = {
    "polyai_async/aiohttp": ("polyai_async", "aiohttp"),
    "polyai_async/httpx": ("polyai_async", "httpx"),
    "retries_on/retries_off": ("polyai_async", "polyai_async_no_retry"),
}
# The instruction phase: the contenders it counts, and so the RATIOS it prices (httpx would take
# an hour under valgrind, and its ratio is far from its threshold).
INSTRUCTION_CONTENDERS = ("polyai_async", "aiohttp", "polyai_async_no_retry")
_INSTRUCTIONS = re.compile(r"^==(\d+)== I\s+refs:\s+([\d,]+)\s*$", re.MULTILINE)
# The fault run: 5% of requests fail after the server processed them (2.5% 500, 2.5% reset).
FAULT_ARGS = ("--error-rate", "0.025", "--reset-rate", "0.025", "--after-processing")


@attrs.frozen(kw_only=True)
class Plan:
    """How much of everything to run; ``Plan.smoke_plan()`` is the short run CI makes."""

    smoke: bool = False
    turns: int = 5
    max_connections: int = 100
    rounds: int = 15
    concurrency: int = 200
    # The same for every contender, httpx included (some 20x slower: most of the suite's time).
    conversations: int = 800
    warmup: int = 100
    # Instructions per request are the difference between these two runs, divided by the
    # difference in requests: start-up and warm-up cancel out.
    instruction_conversations: tuple[int, int] = (100, 300)
    instruction_contenders: tuple[str, ...] = INSTRUCTION_CONTENDERS
    # Client and server on a CPU each, when there are two.
    pin_cpus: bool = True
    # (concurrency, conversations): each level at least one wave of conversations.
    scale: tuple[tuple[int, int], ...] = (
        (1, 100),
        (10, 200),
        (100, 1000),
        (1000, 3000),
        (10000, 10000),
    )
    fault_conversations: int = 1000
    fault_concurrency: int = 200

    @classmethod
    def smoke_plan(cls) -> Plan:
        return cls(
            smoke=True,
            max_connections=10,
            rounds=1,
            concurrency=4,
            conversations=4,
            warmup=2,
            instruction_conversations=(1, 2),
            instruction_contenders=("polyai_async",),
            scale=((1, 2), (10, 10)),
            fault_conversations=20,
            fault_concurrency=10,
            # The instruction phase runs beside the others (see run_suite): no pinning of
            # both onto one core.
            pin_cpus=False,
        )


def _cpus(plan: Plan) -> tuple[int, int] | tuple[None, None]:
    """(client CPU, server CPU) to pin to, or (None, None) for the scheduler to choose."""
    return cpu_plan() if plan.pin_cpus else (None, None)


def _spec(
    plan: Plan,
    url: str,
    contender: str,
    *,
    conversations: int,
    concurrency: int,
    warmup: int,
    **extra: Any,
) -> dict[str, Any]:
    """One measurement's spec for ``benchmarks._workload``: the plan's turns and pool limit."""
    return {
        "contender": contender,
        "url": url,
        "conversations": conversations,
        "concurrency": concurrency,
        "turns": plan.turns,
        "max_connections": plan.max_connections,
        "warmup": warmup,
        **extra,
    }


def _run_workload(
    spec: dict[str, Any], cpu: int | None, prefix: Sequence[str] = ()
) -> tuple[dict[str, Any], str]:
    """Run ``benchmarks._workload`` in a fresh process (on ``cpu``); its figures and stderr."""
    proc = subprocess.Popen(  # noqa: S603 - our interpreter and module, or valgrind running them
        [*prefix, sys.executable, "-m", "benchmarks._workload", orjson.dumps(spec).decode()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with proc:
        try:
            if cpu is not None:
                pin(proc.pid, cpu)
            out, err = proc.communicate()
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec['contender']} failed:\n{err}")
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result, err


def _measure(spec: dict[str, Any], cpu: int | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh client process and return its figures."""
    return _run_workload(spec, cpu)[0]


def counted_instructions(valgrind_stderr: str, pid: int | None = None) -> int:
    """The instruction count cachegrind reports on exit (``==PID== I   refs:  1,234,567``).

    With ``pid``, the count of that process (a forked child reports its own).
    """
    for found in _INSTRUCTIONS.finditer(valgrind_stderr):
        if pid is None or int(found.group(1)) == pid:
            return int(found.group(2).replace(",", ""))
    whose = "" if pid is None else f" for process {pid}"
    raise RuntimeError(
        f"cachegrind reported no instruction count{whose}:\n{valgrind_stderr[-2000:]}"
    )


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max of the values that were measured."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def run_contenders(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """The four contenders, interleaved with a rotating start, against one server process."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    client_cpu, server_cpu = _cpus(plan)
    with ServerProcess(cpu=server_cpu) as server:
        for round_ in range(plan.rounds):
            # Each round starts with the next contender (A B C D, B C D A, ...): no contender
            # always runs first or last in a round, where the machine's drift would favour it.
            shift = round_ % len(CONTENDERS)
            for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
                spec = _spec(
                    plan,
                    server.url,
                    name,
                    conversations=plan.conversations,
                    concurrency=plan.concurrency,
                    warmup=plan.warmup,
                    server_pid=server.pid,
                )
                result = _measure(spec, client_cpu)
                runs[name].append(result)
                log(
                    f"round {round_ + 1}/{plan.rounds} {name:<22} {result['rps']:8.0f} req/s  "
                    f"cpu {result['cpu_s_per_1k']:.3f} s/1k  p99 {result['p99_ms']:.0f} ms  "
                    f"server {result['server_cpu_per_wall']:.2f} cpu/wall"
                )
    summary = {
        name: {figure: spread([r[figure] for r in results]) for figure in FIGURES}
        for name, results in runs.items()
    }
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    for ratio, (top, bottom) in RATIOS.items():
        pairs = list(zip(runs[top], runs[bottom], strict=True))
        ratios[ratio] = {
            # Per round, side by side, then summarised: the machine's drift cancels out.
            "throughput": spread([a["rps"] / b["rps"] for a, b in pairs]),
            "cpu_per_request": spread([a["cpu_s_per_1k"] / b["cpu_s_per_1k"] for a, b in pairs]),
        }
    errors = sum(r["conversations_failed"] for results in runs.values() for r in results)
    return {
        "concurrency": plan.concurrency,
        "rounds": plan.rounds,
        "conversations": {n: runs[n][0]["conversations"] for n in CONTENDERS},
        "pinned": {"client_cpu": client_cpu, "server_cpu": server_cpu},
        "server": server.counters,
        "conversations_failed": errors,
        "summary": summary,
        "ratios": ratios,
        "runs": runs,
    }


def run_scale(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """polyai_async alone at each concurrency, each level in a fresh client process."""
    levels = []
    client_cpu, server_cpu = _cpus(plan)
    with ServerProcess(cpu=server_cpu) as server:
        for concurrency, conversations in plan.scale:
            spec = _spec(
                plan,
                server.url,
                "polyai_async",
                conversations=conversations,
                concurrency=concurrency,
                warmup=min(concurrency, plan.max_connections),
                server_pid=server.pid,
            )
            result = _measure(spec, client_cpu)
            levels.append(result)
            log(
                f"scale {concurrency:>6} in flight: {result['rps']:8.0f} req/s  "
                f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
                f"{result['memory_per_conversation_kb']:.1f} KiB/conversation  "
                f"failed {result['conversations_failed']}"
            )
    return {"levels": levels, "server": server.counters}


def run_faults(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """The fault run, with retry_ambiguous on and then off, each against a fresh server."""
    runs: dict[str, Any] = {}
    client_cpu, server_cpu = _cpus(plan)
    for label, ambiguous in (("retry_ambiguous_on", True), ("retry_ambiguous_off", False)):
        with ServerProcess(*FAULT_ARGS, cpu=server_cpu) as server:
            spec = _spec(
                plan,
                server.url,
                "polyai_async",
                conversations=plan.fault_conversations,
                concurrency=plan.fault_concurrency,
                warmup=0,
                tolerate_errors=True,
                # Five attempts, so a call fails only if 5 in a row do (0.05**5); short
                # backoffs keep the run short.
                retry={
                    "max_attempts": 5,
                    "initial_backoff": 0.01,
                    "max_backoff": 0.1,
                    "retry_ambiguous": ambiguous,
                },
            )
            client = _measure(spec, client_cpu)
        counters = server.counters
        runs[label] = {
            "conversations": client["conversations"],
            "conversations_completed": client["conversations_completed"],
            "conversations_failed": client["conversations_failed"],
            "failed_calls": client["failed_calls"],
            "failed_calls_total": sum(client["failed_calls"].values()),
            "errors": client["errors"],
            "turns_sent": client["calls"].get("respond", 0),
            "server_requests": sum(counters.get("requests", {}).values()),
            "server_faults": counters.get("faults", {}),
            "server_lost_answers": counters.get("lost_answers", {}),
            "server_turns_recorded": counters.get("turns_recorded"),
            "server_conversations_created": counters.get("conversations_created"),
            "duplicated_turns": counters.get("duplicated_turns"),
        }
        log(
            f"faults {label}: {runs[label]['conversations_completed']}/{client['conversations']} "
            f"conversations completed, {runs[label]['failed_calls_total']} calls failed, "
            f"{runs[label]['duplicated_turns']} turns duplicated"
        )
    return {"faults": "2.5% HTTP 500 + 2.5% connection resets, after processing", **runs}


def run_instructions(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Client instructions per request, counted by valgrind: a figure the machine's noise spares.

    Each contender runs the workload twice under ``valgrind --tool=cachegrind`` (small and large
    ``instruction_conversations``), in two children forked by one process after its imports
    (``benchmarks._workload.forked``); the difference in instructions over the difference in
    requests is what one more request costs, start-up and warm-up cancelled out. Skipped,
    saying so, when valgrind is not installed.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        log("instructions: skipped, valgrind is not installed")
        return {"skipped": "valgrind is not installed"}
    # No cache simulation: the count of instructions executed is all that is wanted, 2x faster.
    prefix = (valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
    small, large = plan.instruction_conversations
    client_cpu, server_cpu = _cpus(plan)
    contenders: dict[str, Any] = {}
    with ServerProcess(cpu=server_cpu) as server:
        for name in plan.instruction_contenders:
            spec = _spec(
                plan,
                server.url,
                name,
                conversations=small,
                concurrency=plan.concurrency,
                warmup=plan.warmup,
                sample_rss=False,
                fork_conversations=[small, large],
            )
            result, err = _run_workload(spec, client_cpu, prefix)
            counts = [
                (run["requests"], counted_instructions(err, pid=run["pid"]))
                for run in result["runs"]
            ]
            (requests_small, small_count), (requests_large, large_count) = counts
            per_request = (large_count - small_count) / (requests_large - requests_small)
            contenders[name] = {
                "runs": [{"requests": r, "instructions": i} for r, i in counts],
                "instructions_per_request": per_request,
            }
            log(f"instructions {name:<22} {per_request:10,.0f} per request")
    ratios = {
        # Written as throughput is (higher: the first is cheaper), so the thresholds read alike.
        ratio: contenders[bottom]["instructions_per_request"]
        / contenders[top]["instructions_per_request"]
        for ratio, (top, bottom) in RATIOS.items()
        if top in contenders and bottom in contenders
    }
    return {"conversations": [small, large], "contenders": contenders, "ratios": ratios}


def machine() -> dict[str, Any]:
    """The machine and versions the figures were taken with."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("polyai-async", "aiohttp", "httpx")},
    }


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target, its measured value and whether it was met."""
    ratios = result["contenders"]["ratios"]
    biggest = result["scale"]["levels"][-1]
    fault_on = result["faults"]["retry_ambiguous_on"]
    checks = [
        ("polyai_async/aiohttp throughput", ratios["polyai_async/aiohttp"], 1.0, 1.15),
        ("polyai_async/httpx throughput", ratios["polyai_async/httpx"], 20.0, None),
        ("retries_on/retries_off throughput", ratios["retries_on/retries_off"], 0.98, None),
    ]
    out: list[dict[str, Any]] = []
    for name, ratio, threshold, aim in checks:
        median = ratio["throughput"]["median"]
        out.append(
            {
                "target": f"{name} >= {threshold:g}" + (f" (aim {aim:g})" if aim else ""),
                "value": median,
                "met": median is not None and median >= threshold,
            }
        )
    counted = result.get("instructions", {}).get("ratios", {}).get("retries_on/retries_off")
    if counted is not None:
        out.append(
            {
                "target": "retries_on/retries_off by instructions per request >= 0.98",
                "value": counted,
                "met": counted >= 0.98,
            }
        )
    out.append(
        {
            "target": f"{biggest['concurrency']} concurrent conversations, zero errors",
            "value": biggest["conversations_failed"],
            "met": biggest["conversations_failed"] == 0
            and biggest["conversations_completed"] == biggest["conversations"],
        }
    )
    out.append(
        {
            "target": "fault run (retry_ambiguous on): every conversation completes",
            "value": fault_on["conversations_failed"],
            "met": fault_on["conversations_failed"] == 0,
        }
    )
    return out


def run_suite(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Run every phase; return the whole result (what ``benchmarks.json`` holds)."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "smoke": plan.smoke,
        "machine": machine(),
        "plan": attrs.asdict(plan),
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as beside:
        # A smoke run's timings mean nothing, and an instruction count does not depend on the
        # machine's load: it counts beside the other phases instead of after them (valgrind
        # is most of a smoke run's time). A real run measures one thing at a time.
        counting = beside.submit(run_instructions, plan, log) if plan.smoke else None
        result["contenders"] = run_contenders(plan, log)
        result["scale"] = run_scale(plan, log)
        result["faults"] = run_faults(plan, log)
        result["instructions"] = (
            counting.result() if counting is not None else run_instructions(plan, log)
        )
    result["targets"] = targets(result)
    result["wall_s"] = time.perf_counter() - started
    return result
