"""One measurement, run in its own process: ``python -m benchmarks._workload SPEC_JSON``.

It prints one JSON line: the measurement's figures. A fresh process per measurement makes
``time.process_time()`` and the peak RSS (``ru_maxrss``) belong to that measurement alone.

Every contender runs the same workload: conversations of create, ``turns`` responds and close,
``concurrency`` of them in flight at once, until ``conversations`` have run. Each request's
latency is timed around the call, the same way for every contender.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import math
import os
import resource
import sys
import threading
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson
import psutil

# Messages the demo agent answers without ending the conversation (no bye, no human).
MESSAGES = (
    "Hello there",
    "What are your opening hours?",
    "Can I move my booking to Friday?",
    "Thanks, that is useful",
    "Is there parking near the venue?",
)
API_KEY = "test-api-key"
T = TypeVar("T")
TOKEN = "test-token"  # noqa: S105 - the fake server's own credential
ACCOUNT = "ACCOUNT-test"
PROJECT = "PROJECT-test"


class Api(Protocol):
    """The three calls, as each contender makes them."""

    async def create(self) -> str: ...

    async def respond(self, conversation_id: str, message: str) -> str: ...

    async def close(self, conversation_id: str) -> bool: ...

    async def aclose(self) -> None: ...


def chat_url(base_url: str) -> str:
    return f"{base_url}/v1/{ACCOUNT}/{PROJECT}/chat"


class PolyAIApi:
    """polyai_async: models structured, RetryPolicy as given (default: retries on)."""

    def __init__(
        self,
        base_url: str,
        max_connections: int,
        retry: dict[str, Any] | None,
        observed: str | None = None,
    ) -> None:
        from polyai_async import CallEvent, PolyAIClient, PoolLimits, RetryPolicy

        policy = RetryPolicy(**retry) if retry is not None else RetryPolicy()
        options: dict[str, Any] = {}
        if observed == "hooks":
            # A hook on every event that counts it, as the load engine's counters would.
            self.events: Counter[str] = Counter()

            def count(event: CallEvent) -> None:
                self.events[event.name] += 1

            names = ("request_sent", "answer_received", "retry_scheduled", "call_failed")
            options["event_hooks"] = {name: [count] for name in names}
        elif observed == "telemetry":
            options["telemetry"] = True  # the API's global providers: no SDK, no-op spans
        self.client = PolyAIClient(
            base_url=base_url,
            api_key=API_KEY,
            token=TOKEN,
            account_id=ACCOUNT,
            project_id=PROJECT,
            retry=policy,
            limits=PoolLimits(max_connections=max_connections),
            **options,
        )

    async def create(self) -> str:
        return (await self.client.create_chat()).conversation_id

    async def respond(self, conversation_id: str, message: str) -> str:
        return (await self.client.respond(conversation_id, message)).response

    async def close(self, conversation_id: str) -> bool:
        return (await self.client.close_chat(conversation_id)).success

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpApi:
    """Hand-written aiohttp, as a user would write it: one session, post, json(), pick fields."""

    def __init__(self, base_url: str, max_connections: int) -> None:
        import aiohttp

        self.url = chat_url(base_url)
        self.headers = {"X-API-KEY": API_KEY, "X-TOKEN": TOKEN}
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
        )

    async def create(self) -> str:
        async with self.session.post(f"{self.url}/create", json={}, headers=self.headers) as resp:
            resp.raise_for_status()
            data = await resp.json()
        return str(data["conversation_id"])

    async def respond(self, conversation_id: str, message: str) -> str:
        async with self.session.post(
            f"{self.url}/respond",
            json={"conversation_id": conversation_id, "message": message},
            headers=self.headers,
        ) as resp:
            resp.raise_for_status()
            data = await resp.json()
        return str(data["response"])

    async def close(self, conversation_id: str) -> bool:
        async with self.session.put(
            f"{self.url}/close", json={"conversation_id": conversation_id}, headers=self.headers
        ) as resp:
            resp.raise_for_status()
            data = await resp.json()
        return bool(data["success"])

    async def aclose(self) -> None:
        await self.session.close()


class HttpxApi:
    """Hand-written httpx, the same way: one AsyncClient, post, json(), pick fields."""

    def __init__(self, base_url: str, max_connections: int) -> None:
        import httpx

        self.url = chat_url(base_url)
        self.headers = {"X-API-KEY": API_KEY, "X-TOKEN": TOKEN}
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            timeout=60.0,
        )

    async def create(self) -> str:
        resp = await self.client.post(f"{self.url}/create", json={}, headers=self.headers)
        resp.raise_for_status()
        return str(resp.json()["conversation_id"])

    async def respond(self, conversation_id: str, message: str) -> str:
        resp = await self.client.post(
            f"{self.url}/respond",
            json={"conversation_id": conversation_id, "message": message},
            headers=self.headers,
        )
        resp.raise_for_status()
        return str(resp.json()["response"])

    async def close(self, conversation_id: str) -> bool:
        resp = await self.client.put(
            f"{self.url}/close", json={"conversation_id": conversation_id}, headers=self.headers
        )
        resp.raise_for_status()
        return bool(resp.json()["success"])

    async def aclose(self) -> None:
        await self.client.aclose()


def make_api(spec: dict[str, Any]) -> Api:
    contender = spec["contender"]
    url, limit = spec["url"], spec["max_connections"]
    if contender == "polyai_async":
        return PolyAIApi(url, limit, spec.get("retry"))
    if contender == "polyai_async_no_retry":
        return PolyAIApi(url, limit, {**(spec.get("retry") or {}), "max_attempts": 1})
    if contender == "polyai_async_hooks":  # not in the suite's rounds: priced by instructions
        return PolyAIApi(url, limit, spec.get("retry"), observed="hooks")
    if contender == "polyai_async_telemetry":
        return PolyAIApi(url, limit, spec.get("retry"), observed="telemetry")
    if contender == "aiohttp":
        return AiohttpApi(url, limit)
    if contender == "httpx":
        return HttpxApi(url, limit)
    raise ValueError(f"unknown contender {contender!r}")


class Run:
    """Drives conversations and records latencies, failures and how many are in flight."""

    def __init__(self, api: Api, turns: int, tolerate_errors: bool) -> None:
        self.api = api
        self.turns = turns
        self.tolerate_errors = tolerate_errors
        # array('d'): 8 bytes a sample, so the record barely shows in the memory figures.
        self.latencies = array("d")
        self.calls: Counter[str] = Counter()
        self.failed_calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.completed = 0
        self.failed = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def _timed(self, name: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """Make one call, timed; a tolerated failure is counted and returns None."""
        self.calls[name] += 1
        started = time.perf_counter()
        try:
            result = await call()
        except Exception as exc:
            if not self.tolerate_errors:
                raise
            self.failed_calls[name] += 1
            self.errors[type(exc).__name__] += 1
            return None
        self.latencies.append(time.perf_counter() - started)
        return result

    async def conversation(self, index: int) -> None:
        """Create, ``turns`` responds, close; a failed respond is counted and the next sent."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        ok = True
        try:
            cid = await self._timed("create", self.api.create)
            if cid is None:
                ok = False
            else:
                for turn in range(self.turns):
                    message = MESSAGES[(index + turn) % len(MESSAGES)]
                    reply = await self._timed(
                        "respond", functools.partial(self.api.respond, cid, message)
                    )
                    ok = ok and reply is not None
                closed = await self._timed("close", functools.partial(self.api.close, cid))
                ok = ok and closed is not None
        finally:
            self.in_flight -= 1
        if ok:
            self.completed += 1
        else:
            self.failed += 1

    async def run(self, conversations: int, concurrency: int) -> None:
        indexes = iter(range(conversations))

        async def worker() -> None:
            for index in indexes:
                await self.conversation(index)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, conversations))))


def percentile_ms(ordered: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ascending seconds, in ms (NaN when empty)."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


class PeakRSS:
    """Samples this process's RSS every few milliseconds in a thread; ``peak`` is the largest.

    ``ru_maxrss`` alone will not do: the kernel updates it lazily, and it covers the warm-up.
    """

    def __init__(self, interval: float = 0.005, *, sample: bool = True) -> None:
        self.interval = interval
        self.sample = sample
        self.peak = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        if self.sample:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self.sample:
            self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the warm-up, then the measured conversations; return the figures."""
    api = make_api(spec)
    me = psutil.Process()
    server = psutil.Process(spec["server_pid"]) if spec.get("server_pid") else None
    tolerate = spec.get("tolerate_errors", False)
    try:
        warmup = spec.get("warmup", 0)
        if warmup:
            await Run(api, spec["turns"], tolerate).run(warmup, spec["concurrency"])
        gc.collect()
        run = Run(api, spec["turns"], tolerate)
        rss_before = me.memory_info().rss
        server_cpu_before = _cpu(server) if server is not None else 0.0
        # Under valgrind the sampler would run some 50 times more often per request and its
        # instructions would count against the contender: the instruction phase turns it off.
        with PeakRSS(sample=spec.get("sample_rss", True)) as rss:
            cpu_before = time.process_time()
            wall_before = time.perf_counter()
            await run.run(spec["conversations"], spec["concurrency"])
            wall = time.perf_counter() - wall_before
            cpu = time.process_time() - cpu_before
        server_cpu_after = _cpu(server) if server is not None else 0.0
    finally:
        await api.aclose()
    peak_rss = rss.peak
    latencies = sorted(run.latencies)
    requests = len(latencies)
    server_cpu = server_cpu_after - server_cpu_before if server is not None else None
    return {
        "contender": spec["contender"],
        "conversations": spec["conversations"],
        "concurrency": spec["concurrency"],
        "conversations_completed": run.completed,
        "conversations_failed": run.failed,
        "calls": dict(run.calls),
        "failed_calls": dict(run.failed_calls),
        "errors": dict(run.errors),
        "requests": requests,
        "wall_s": wall,
        "rps": requests / wall if wall else 0.0,
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "cpu_s": cpu,
        "cpu_s_per_1k": cpu / requests * 1000 if requests else float("nan"),
        "rss_before_mb": rss_before / 2**20,
        "rss_peak_mb": peak_rss / 2**20,
        "rss_lifetime_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "max_in_flight": run.max_in_flight,
        "memory_per_conversation_kb": (peak_rss - rss_before) / 1024 / run.max_in_flight
        if run.max_in_flight
        else float("nan"),
        "server_cpu_s": server_cpu,
        "server_cpu_per_wall": server_cpu / wall if server_cpu is not None and wall else None,
    }


# What each contender imports, loaded before forking so the children share it (see forked).
_LIBRARIES = {
    "polyai_async": "polyai_async",
    "polyai_async_no_retry": "polyai_async",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
}


def forked(spec: dict[str, Any], conversations: list[int]) -> list[dict[str, Any]]:
    """Measure once per number of ``conversations``, each in a child forked after the imports.

    For the instruction phase under valgrind: the process starts and imports once (most of a
    run's instructions under valgrind, and most of its time), then each child counts from the
    same point, so the difference between two children's counts is the work of the extra
    conversations alone. The children are forked back to back, before either runs, so they
    inherit the same count; they run side by side (an instruction count does not depend on
    the machine's load). Each result carries its child's ``pid``, the ``==PID==`` of its
    valgrind summary.
    """
    importlib.import_module(_LIBRARIES[spec["contender"]])
    children: list[tuple[int, int]] = []
    for count in conversations:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, write the figures, leave without cleanup of ours
            os.close(read_end)
            status = 1
            try:
                result = asyncio.run(measure({**spec, "conversations": count}))
                os.write(write_end, orjson.dumps({"pid": os.getpid(), **result}))
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((pid, read_end))
    results = []
    for pid, read_end in children:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise RuntimeError(f"the forked measurement {pid} failed (status {status})")
        results.append(orjson.loads(data))
    return results


def main(argv: list[str]) -> int:
    spec = orjson.loads(argv[0])
    if "fork_conversations" in spec:
        result: Any = {"runs": forked(spec, spec["fork_conversations"])}
    else:
        result = asyncio.run(measure(spec))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
