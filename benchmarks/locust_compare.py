"""Locust side by side: ``polyai-async bench``, Locust with PolyAIUser, Locust with FastHttpUser.

The same scenario (create, five small-talk turns, close; no think time, no expectations) runs
against the fake server (its own process, on a CPU of its own, answering every call after a
fixed 50 ms), driven in turn by:

- ``bench``: ``polyai-async bench --loop asyncio`` (closed model, one process);
- ``polyai_user``: one Locust process with ``polyai_async.locust.PolyAIUser``;
- ``fasthttp``: one Locust process with a FastHttpUser hand-written for the three endpoints
  (what a Locust user writes today).

Each generator runs on one CPU (pinned), with as many users (conversations in flight) as
given and as many connections as users, and retries off. Two loads:

- *saturation* (many users): the generator's CPU is the limit. The figure is requests per
  CPU-second (requests/s per core): the requests and CPU time of the run less those of a
  one-user, one-second run of the same tool, so start-up and shutdown (imports, Locust's
  runner) cancel out;
- *moderate* (few users, far from saturation): the error of the measured respond p50 and p99
  against the server's fixed 50 ms (Locust's percentiles from its CSV; PolyAIUser's also from
  the exact HDR report).

Rounds interleave the contenders, each round starting with the next one; medians reported.

    python -m benchmarks.locust_compare [--smoke] [--rounds N] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._server import ServerProcess, cpu_plan, pin

__all__ = ["main", "markdown", "run_comparison", "run_once"]

LATENCY_S = 0.05
CONTENDERS = ("bench", "polyai_user", "fasthttp")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
CREDENTIALS = {
    "POLYAI_API_KEY": "test-api-key",
    "POLYAI_TOKEN": "test-token",
    "POLYAI_ACCOUNT_ID": "ACCOUNT-test",
    "POLYAI_PROJECT_ID": "PROJECT-test",
}
MESSAGES = (
    "Hello there",
    "What are your opening hours?",
    "Can you check the status of my order?",
    "Do you deliver on weekends?",
    "Thanks, that helps",
)
SCENARIO = "name: small-talk\npersonas:\n  - name: talker\n    turns:\n" + "".join(
    f"      - say: [{', '.join(repr(m) for m in MESSAGES)}]\n" for _ in range(5)
)
POLYAI_USER = """
from polyai_async import PoolLimits, RetryPolicy
from polyai_async.locust import PolyAIUser


class Chat(PolyAIUser):
    scenario = "small-talk.yaml"
    limits = PoolLimits(max_connections={users})
    retry = RetryPolicy(max_attempts=1)
"""
# What a Locust user writes today: the three calls by hand, on Locust's fastest HTTP client.
FAST_HTTP_USER = f"""
import os
import shutil
import random

import gevent
from locust import FastHttpUser, constant, events, task

MESSAGES = {MESSAGES!r}
PATH = "/v1/" + os.environ["POLYAI_ACCOUNT_ID"] + "/" + os.environ["POLYAI_PROJECT_ID"] + "/chat"
HEADERS = {{
    "X-API-KEY": os.environ["POLYAI_API_KEY"],
    "X-TOKEN": os.environ["POLYAI_TOKEN"],
    "Content-Type": "application/json",
}}



@events.quit.add_listener
def _last_csv_write(**_):
    # As polyai_async.locust does: Locust rewrites --csv once a second and closes the files
    # without a last write; give it one, so the last second's calls are counted too.
    gevent.sleep(1.25)


class Chat(FastHttpUser):
    wait_time = constant(0)

    @task
    def conversation(self):
        created = self.client.post(PATH + "/create", json={{}}, headers=HEADERS, name="create")
        if not created.ok:
            return
        conversation_id = created.json()["conversation_id"]
        for _ in range(5):
            reply = self.client.post(
                PATH + "/respond",
                json={{"conversation_id": conversation_id, "message": random.choice(MESSAGES)}},
                headers=HEADERS,
                name="respond",
            )
            if not reply.ok or reply.json().get("end_conversation"):
                break
        self.client.put(
            PATH + "/close", json={{"conversation_id": conversation_id}}, headers=HEADERS,
            name="close",
        )
"""


def _argv(name: str, url: str, users: int, seconds: float, work: Path) -> list[str]:
    if name == "bench":
        return [
            *(sys.executable, "-m", "polyai_async.cli", "bench", "--base-url", url),
            *("--scenario", str(work / "small-talk.yaml"), "--concurrency", str(users)),
            *("--duration", f"{seconds}s", "--graceful-stop", "2s", "--loop", "asyncio"),
            *("--max-connections", str(users), "--retry-attempts", "1"),
            *("--json", str(work / "bench.json"), "-q"),
        ]
    locustfile = work / f"{name}.py"
    template = POLYAI_USER if name == "polyai_user" else FAST_HTTP_USER
    locustfile.write_text(template.replace("{users}", str(users)))
    argv = [
        *(sys.executable, "-m", "locust", "-f", str(locustfile), "--headless"),
        *("-u", str(users), "-r", str(users), "--run-time", f"{round(seconds)}s", "--host", url),
        *("--csv", str(work / name), "--only-summary", "--stop-timeout", "2"),
    ]
    if name == "polyai_user":
        argv += ["--polyai-json", str(work / "polyai.json")]
    return argv


def run_once(name: str, url: str, users: int, seconds: float, cpu: int | None) -> dict[str, Any]:
    """One run of one contender: requests made, CPU seconds, respond p50/p99 (ms)."""
    with tempfile.TemporaryDirectory(prefix="locust-bench-") as tmp:
        work = Path(tmp)
        (work / "small-talk.yaml").write_text(SCENARIO)
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            _argv(name, url, users, seconds, work),
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **CREDENTIALS},
        )
        if cpu is not None:
            pin(process.pid, cpu)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.returncode not in (0, 1):  # Locust exits 1 when any request failed
            raise RuntimeError(f"{name} exited {process.returncode}: {err[-2000:]}")
        figures: dict[str, Any] = {
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": time.monotonic() - started,
        }
        if name == "bench":
            summary = json.loads((work / "bench.json").read_text())
            figures["requests"] = summary["requests"]
            figures["failures"] = summary["errors_total"]
            figures["p50_ms"] = summary["respond_p50_ms"]
            figures["p99_ms"] = summary["respond_p99_ms"]
            return figures
        with (work / f"{name}_stats.csv").open() as rows:
            stats = {row["Name"]: row for row in csv.DictReader(rows)}
        endpoints = ("create", "respond", "close")
        figures["requests"] = sum(int(stats[e]["Request Count"]) for e in endpoints if e in stats)
        figures["failures"] = sum(int(stats[e]["Failure Count"]) for e in endpoints if e in stats)
        figures["p50_ms"] = float(stats["respond"]["50%"])
        figures["p99_ms"] = float(stats["respond"]["99%"])
        if name == "polyai_user":
            report = json.loads((work / "polyai.json").read_text())
            figures["hdr_p50_ms"] = report["respond_p50_ms"]
            figures["hdr_p99_ms"] = report["respond_p99_ms"]
        return figures


def _rounds(
    rounds: int, run: Callable[[str], dict[str, Any]], log: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    for r in range(rounds):
        order = CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]
        for name in order:
            figures = run(name)
            log(f"  round {r + 1} {name}: {json.dumps(figures)}")
            results[name].append(figures)
    return results


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def run_comparison(*, smoke: bool, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Run both loads for every contender; returns the medians and every run."""
    client_cpu, server_cpu = cpu_plan()
    heavy, light = (40, 5) if smoke else (1000, 20)
    heavy_s, light_s = (2.0, 2.0) if smoke else (15.0, 10.0)
    with ServerProcess("--latency", str(LATENCY_S), cpu=server_cpu) as server:
        url = server.url
        log(f"baseline (1 user, 1 s), against {url}")
        base = _rounds(rounds, lambda n: run_once(n, url, 1, 1.0, client_cpu), log)
        log(f"saturation: {heavy} users for {heavy_s:g} s")
        sat = _rounds(rounds, lambda n: run_once(n, url, heavy, heavy_s, client_cpu), log)
        log(f"moderate: {light} users for {light_s:g} s")
        mod = _rounds(rounds, lambda n: run_once(n, url, light, light_s, client_cpu), log)
    table: dict[str, dict[str, Any]] = {}
    for name in CONTENDERS:
        per_core = []
        for base_run, sat_run in zip(base[name], sat[name], strict=True):
            cpu = sat_run["cpu_s"] - base_run["cpu_s"]
            per_core.append((sat_run["requests"] - base_run["requests"]) / cpu)
        table[name] = {
            "requests_per_cpu_second": round(statistics.median(per_core), 1),
            "saturation_requests": _median(sat[name], "requests"),
            "saturation_cpu_s": _median(sat[name], "cpu_s"),
            "saturation_wall_s": _median(sat[name], "wall_s"),
            "failures": sum(run["failures"] for run in sat[name] + mod[name]),
            "p50_error_ms": _error(_median(mod[name], "p50_ms")),
            "p99_error_ms": _error(_median(mod[name], "p99_ms")),
            "hdr_p50_error_ms": _error(_median(mod[name], "hdr_p50_ms")),
            "hdr_p99_error_ms": _error(_median(mod[name], "hdr_p99_ms")),
        }
    return {
        "latency_ms": LATENCY_S * 1000,
        "users": {"saturation": heavy, "moderate": light},
        "seconds": {"saturation": heavy_s, "moderate": light_s},
        "rounds": rounds,
        "pinned": {"client_cpu": client_cpu, "server_cpu": server_cpu},
        "table": table,
        "runs": {"baseline": base, "saturation": sat, "moderate": mod},
    }


def _error(measured: float | None) -> float | None:
    return None if measured is None else round(measured - LATENCY_S * 1000, 2)


def markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table."""
    names = {
        "bench": "`polyai-async bench` (asyncio)",
        "polyai_user": "Locust + `PolyAIUser`",
        "fasthttp": "Locust + `FastHttpUser` by hand",
    }
    fasthttp = result["table"]["fasthttp"]["requests_per_cpu_second"]
    lines = [
        "| generator | requests/s per core | vs FastHttpUser | respond p50 error | "
        "respond p99 error | failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in CONTENDERS:
        row = result["table"][name]
        p50 = f"{row['p50_error_ms']:+.1f} ms"
        p99 = f"{row['p99_error_ms']:+.1f} ms"
        if row["hdr_p50_error_ms"] is not None:
            p50 += f" ({row['hdr_p50_error_ms']:+.2f} HDR)"
            p99 += f" ({row['hdr_p99_error_ms']:+.2f} HDR)"
        lines.append(
            f"| {names[name]} | {row['requests_per_cpu_second']:,.0f} | "
            f"{row['requests_per_cpu_second'] / fasthttp:.2f}x | {p50} | {p99} | "
            f"{row['failures']} |"
        )
    return "\n".join(lines)


# What the profile summary groups samples under: (label, thread, a frame that marks it); the
# thread is "asyncio" (the loop's), "gevent" (Locust's) or "" (either).
_PROFILE_GROUPS = (
    ("asyncio thread: all", "asyncio", "LoopThread._run ("),
    (
        "asyncio thread: aiohttp's request (ClientSession._request)",
        "asyncio",
        "ClientSession._request (",
    ),
    (
        "asyncio thread: reading answers (data_received)",
        "asyncio",
        "ResponseHandler.data_received (",
    ),
    ("asyncio thread: the load engine's Metrics", "asyncio", "Metrics."),
    ("asyncio thread: handing results to gevent (_Relay)", "asyncio", "_Relay."),
    ("gevent thread: all", "gevent", ""),
    ("gevent thread: Locust's events.request (stats)", "gevent", "EventHook.fire ("),
    ("gevent thread: the inbox drain (Inbox._drain)", "gevent", "Inbox._drain ("),
    ("gevent thread: users waiting, submitting (Bridge.converse)", "gevent", "Bridge.converse ("),
    ("gevent thread: the hub's own loop (Hub.run)", "gevent", "Hub.run ("),
    ("start-up: imports", "gevent", "_find_and_load ("),
    ("end: the merged report (Collector.write)", "gevent", "Collector.write ("),
)


def profile(url: str, users: int, seconds: float, cpu: int | None, out: Path) -> str | None:
    """A py-spy profile of Locust + PolyAIUser at saturation: where its CPU goes, by part.

    Returns the markdown table (also written to ``out/locust-profile.md``), or None when
    py-spy is not installed (``pip install py-spy``).
    """
    if shutil.which("py-spy") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="locust-profile-") as tmp:
        work = Path(tmp)
        (work / "small-talk.yaml").write_text(SCENARIO)
        raw = work / "profile.txt"
        argv = ["py-spy", "record", "--threads", "--format", "raw", "-r", "250", "-o", str(raw)]
        process = subprocess.Popen(  # noqa: S603 - py-spy on our own interpreter
            [*argv, "--", *_argv("polyai_user", url, users, seconds, work)],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **CREDENTIALS},
        )
        if cpu is not None:
            pin(process.pid, cpu)
        process.wait()
        samples = {label: 0 for label, _, _ in _PROFILE_GROUPS}
        total = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            total += int(count)
            thread = "asyncio" if "LoopThread._run (" in stack else "gevent"
            for label, where, marker in _PROFILE_GROUPS:
                if where in ("", thread) and marker in stack:
                    samples[label] += int(count)
    lines = [
        f"py-spy, {users} users for {seconds:g} s, {total:,} samples of the Locust process "
        "(both threads; a part's share includes what it calls):",
        "",
        "| part | share of the process's samples |",
        "| --- | ---: |",
        *(f"| {label} | {samples[label] / total:.1%} |" for label, _, _ in _PROFILE_GROUPS),
    ]
    table = "\n".join(lines)
    (out / "locust-profile.md").write_text(table + "\n")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.locust_compare")
    parser.add_argument("--smoke", action="store_true", help="a very short run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT}")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only profile PolyAIUser (needs py-spy)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.smoke else 3)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    out: Path = args.out or (Path(tempfile.mkdtemp()) if args.smoke else DEFAULT_OUT)
    if args.profile:
        out.mkdir(parents=True, exist_ok=True)
        client_cpu, server_cpu = cpu_plan()
        with ServerProcess("--latency", str(LATENCY_S), cpu=server_cpu) as server:
            table = profile(server.url, 1000, 15.0, client_cpu, out)
        print(table or "py-spy is not installed: pip install py-spy")
        return 0 if table else 1
    result = run_comparison(smoke=args.smoke, rounds=rounds, log=log)
    out.mkdir(parents=True, exist_ok=True)
    (out / "locust.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "locust.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
