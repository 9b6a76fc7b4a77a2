"""The benchmark suite's smoke run works and its results hold every figure, so it cannot rot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks._suite import counted_instructions
from benchmarks.generators import ceilings_of, honest, ratios_of

from .conftest import SMOKE_RUN, SmokeRun, missing_bench_tools

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("polyai_async", "aiohttp", "httpx", "polyai_async_no_retry")
FIGURES = ("rps", "p50_ms", "p99_ms", "cpu_s_per_1k", "rss_peak_mb", "server_cpu_per_wall")
RATIOS = ("polyai_async/aiohttp", "polyai_async/httpx", "retries_on/retries_off")
LEVEL_FIGURES = (
    "rps",
    "p50_ms",
    "p99_ms",
    "cpu_s_per_1k",
    "rss_peak_mb",
    "memory_per_conversation_kb",
    "server_cpu_per_wall",
)


# The benchmark suite's own tools (conftest's BENCH_TOOLS) are the `bench` extra, which CI
# installs (the `test` one does not, so a plain `pip install -e ".[test]"` runs the rest).


@pytest.fixture
def bench_tools() -> None:
    """Skip, naming what is missing, unless the benchmark suite's tools are installed."""
    missing = missing_bench_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: install polyai-async[bench]")


def _run(module: str, *args: str) -> None:
    """Run ``python -m module args`` from the project's root; fail with its stderr."""
    done = subprocess.run(  # noqa: S603 - our interpreter, our module
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # Generous: a smoke run takes some 10 s on an idle 2-core machine, but a loaded one
        # (valgrind most of all) can take many times that.
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.fixture
def smoke_run(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The directory ``python -m benchmarks --smoke`` wrote, once it has exited 0.

    The run was started when collection ended (conftest.py) and has been running beside the
    other tests; started here if it was not.
    """
    run = request.config.stash.get(SMOKE_RUN, None)
    own = run is None
    if run is None:
        run = SmokeRun()
    try:
        # Generous: some 10 s on an idle 2-core machine, many times that on a loaded one.
        code, stderr = run.wait(timeout=600)
        assert code == 0, stderr
        yield run.out
    finally:
        if own:
            run.close()


@pytest.mark.usefixtures("bench_tools")
@pytest.mark.timeout(900)
def test_smoke_run_writes_every_figure(smoke_run: Path) -> None:
    """``python -m benchmarks --smoke`` runs every phase and writes JSON, tables and a chart."""
    tmp_path = smoke_run
    result = json.loads((tmp_path / "benchmarks.json").read_text())
    assert (tmp_path / "scale.png").read_bytes().startswith(b"\x89PNG")
    assert "Targets" in (tmp_path / "tables.md").read_text()

    assert result["smoke"] is True
    assert {"nproc", "cpu_model", "python"} <= set(result["machine"])
    contenders = result["contenders"]
    assert contenders["conversations_failed"] == 0
    for name in CONTENDERS:
        assert len(contenders["runs"][name]) == contenders["rounds"]
        for figure in FIGURES:
            spread = contenders["summary"][name][figure]
            assert set(spread) == {"median", "min", "max"}
            if figure != "server_cpu_per_wall":  # a tiny run can fall under psutil's tick
                assert _number(spread["median"]), (name, figure)
    for ratio in RATIOS:
        for kind in ("throughput", "cpu_per_request"):
            assert _number(contenders["ratios"][ratio][kind]["median"]), (ratio, kind)

    levels = result["scale"]["levels"]
    assert [level["concurrency"] for level in levels] == [1, 10]
    for level in levels:
        assert level["conversations_failed"] == 0
        assert level["conversations_completed"] == level["conversations"]
        for figure in LEVEL_FIGURES:
            assert _number(level[figure]), figure

    on, off = result["faults"]["retry_ambiguous_on"], result["faults"]["retry_ambiguous_off"]
    assert on["conversations_failed"] == 0
    assert _number(on["duplicated_turns"])
    assert off["duplicated_turns"] == 0
    assert _number(off["failed_calls_total"])
    assert on["server_turns_recorded"] == on["turns_sent"] + on["duplicated_turns"]

    assert {t["target"].split(" >=")[0] for t in result["targets"]} >= {
        "polyai_async/aiohttp throughput",
        "polyai_async/httpx throughput",
        "retries_on/retries_off throughput",
    }
    assert all(isinstance(t["met"], bool) for t in result["targets"])

    instructions = result["instructions"]
    if shutil.which("valgrind") is None:
        assert instructions == {"skipped": "valgrind is not installed"}
    else:
        counted = instructions["contenders"]["polyai_async"]
        small, large = counted["runs"]
        assert large["requests"] > small["requests"] > 0
        assert large["instructions"] > small["instructions"]
        assert counted["instructions_per_request"] > 10_000  # an HTTP request, not a no-op
        assert "Instructions per request" in (tmp_path / "tables.md").read_text()
    # Every contender measured on the same workload, httpx included.
    assert len(set(contenders["conversations"].values())) == 1

    generator = json.loads((tmp_path / "generator.json").read_text())
    assert [run["loop"] for run in generator["runs"]] == ["asyncio", "uvloop"]
    for run in generator["runs"]:
        assert run["conversations_failed"] == 0
        assert run["conversations_per_second"] > 0
        # The server answers after 100 ms: the measured p50 is at least that.
        assert run["respond_p50_ms"] >= 100
    assert "p50 error ms" in (tmp_path / "generator.md").read_text()


@pytest.mark.usefixtures("bench_tools")
@pytest.mark.timeout(900)
def test_smoke_run_puts_the_generators_side_by_side(smoke_run: Path) -> None:
    """The smoke run measures bench, k6 and Locust against nginx, or says why it skipped one."""
    side = json.loads((smoke_run / "generators.json").read_text())
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        assert side["skipped"] == {"all": "nginx is not installed (apt-get install -y nginx)"}
    else:
        measured = {step["name"] for step in side["steps"]}
        assert measured | set(side["skipped"]) >= {"bench-asyncio", "bench-uvloop", "k6", "locust"}
        assert "bench-asyncio" in measured
        for step in side["steps"]:
            assert step["started_per_second"] > 0, step
            assert step["requests_per_second"] > 0, step
            assert step["respond_p50_ms"] is not None, step
            assert step["failed"] == 0, step
        assert "honest" in (smoke_run / "generators.md").read_text()


def _step(name: str, rate: float, started: float, lag: float | None, rps: float) -> dict[str, Any]:
    return {
        "name": name,
        "rate": rate,
        "seconds": 5.0,
        "started_per_second": started,
        "lag_p99_ms": lag,
        "requests_per_second": rps,
    }


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (_step("k6", 1000, 975, None, 2925), True),  # 2.5% dropped
        (_step("k6", 1000, 965, None, 2895), False),  # 3.5% dropped
        (_step("bench-uvloop", 1000, 1000, 9.9, 3000), True),
        (_step("bench-uvloop", 1000, 1000, 10.1, 3000), False),  # the generator lagged
        (_step("bench-asyncio", 1000, 1000, None, 3000), False),  # bench's lag is required
    ],
)
def test_a_generator_step_is_honest_under_3_percent_dropped_and_10_ms_of_lag(
    step: dict[str, Any], expected: bool
) -> None:
    """Honest: at least 97% of the arrivals started and, for bench, a lag p99 of at most 10 ms."""
    assert honest(step) is expected


def test_the_ceiling_is_the_highest_honest_rate_and_2x_the_next_step_at_twice_it() -> None:
    """The ceiling is the highest honest rate; "at 2x" the first step at twice it or more."""
    steps = [
        _step("bench-uvloop", 1000, 1000, 2.0, 3000),
        _step("bench-uvloop", 2000, 2000, 8.0, 6000),
        _step("bench-uvloop", 3000, 2500, 40.0, 7500),
        _step("bench-uvloop", 4000, 2600, 50.0, 7800),
        _step("bench-uvloop", 6000, 2400, 60.0, 7200),
        _step("k6", 1000, 700, None, 2100),
    ]
    for step in steps:
        step["honest"] = honest(step)
    ceilings = ceilings_of(steps, ["bench-uvloop", "k6"])
    assert ceilings["bench-uvloop"] == {
        "rate": 2000,
        "started_per_second": 2000,
        "peak_requests_per_second": 7800,
        "at_2x_rate": 4000,
        "at_2x_requests_per_second": 7800,
    }
    assert ceilings["k6"]["rate"] is None
    assert ceilings["k6"]["at_2x_rate"] is None


def test_bench_is_compared_with_k6_and_locust_per_core_and_past_its_ceiling() -> None:
    """Ceilings over ceilings; started per CPU-second over k6's and Locust's best; 2x over peak."""
    steps = [
        _step("bench-asyncio", 2000, 2000, 5.0, 6000) | {"cpu_share": 0.5},
        _step("bench-asyncio", 4000, 3000, 40.0, 9000) | {"cpu_share": 1.0},
        _step("k6", 2000, 1000, None, 3000) | {"cpu_share": 0.5},
        _step("k6", 4000, 1600, None, 4800) | {"cpu_share": 1.0},
        _step("locust", 2000, 500, None, 1500) | {"cpu_share": 0.25},
    ]
    for step in steps:
        step["honest"] = honest(step)
    ratios = ratios_of(steps, ceilings_of(steps, ["bench-asyncio", "k6", "locust"]))
    assert set(ratios) == {"bench-asyncio"}
    assert ratios["bench-asyncio"] == {
        "ceiling_over_k6": None,  # k6 dropped too much at every step: no ceiling to divide by
        "ceiling_over_locust": None,
        "peak_per_cpu_over_k6": 2.0,  # 4,000 a CPU-second (2,000 at half a core) over 2,000
        "peak_per_cpu_over_locust": 2.0,
        "at_2x_over_peak": 1.0,  # 9,000 req/s at 4,000 asked, the peak itself
    }


def test_instruction_count_is_read_from_cachegrind_output() -> None:
    """The count valgrind prints on exit is found among its other lines, commas removed."""
    stderr = (
        "==4242== Cachegrind, a cache and branch-prediction profiler\n"
        "==4242== \n"
        "==4242== I   refs:      1,332,353,626\n"
    )
    assert counted_instructions(stderr) == 1_332_353_626


def test_a_forked_child_s_count_is_found_by_its_pid() -> None:
    """A parent and its forked children each report a count; the one asked for is returned."""
    stderr = (
        "==101== I   refs:      1,400,000,000\n"
        "==102== I   refs:      1,300,000,000\n"
        "==100== I   refs:      1,200,000,000\n"
    )
    assert counted_instructions(stderr, pid=102) == 1_300_000_000
    assert counted_instructions(stderr, pid=101) == 1_400_000_000
    with pytest.raises(RuntimeError, match="for process 7"):
        counted_instructions(stderr, pid=7)


def test_a_missing_instruction_count_is_an_error_not_a_zero() -> None:
    with pytest.raises(RuntimeError, match="no instruction count"):
        counted_instructions("==4242== valgrind: failed to start tool\n")


@pytest.mark.usefixtures("bench_tools")
def test_profile_sorts_frames_by_where_their_file_lives() -> None:
    from benchmarks._profile import OTHER, group_of

    assert group_of("/venv/lib/python3.11/site-packages/aiohttp/client.py").startswith("aiohttp")
    assert group_of("/usr/lib/python3.11/asyncio/base_events.py").startswith("asyncio")
    assert group_of("/repo/polyai_async/_client.py").startswith("the client's own code")
    assert group_of("/usr/lib/python3.11/json/decoder.py").startswith("the client's own code")
    assert group_of("/usr/lib/python3.11/selectors.py").startswith("waiting")
    assert group_of("/repo/benchmarks/_workload.py") == "the benchmark's driver"
    assert group_of(None) == OTHER
    assert group_of("<frozen importlib._bootstrap>") == OTHER


@pytest.mark.e2e
@pytest.mark.usefixtures("bench_tools")
@pytest.mark.timeout(900)
def test_profile_run_writes_shares_that_add_up(tmp_path: Path) -> None:
    """``python -m benchmarks._profile`` profiles both contenders and accounts for all the time."""
    _run("benchmarks._profile", "--conversations", "40", "--out", str(tmp_path))
    shares = json.loads((tmp_path / "profile.json").read_text())
    for contender in ("polyai_async", "aiohttp"):
        figures = shares[contender]
        assert figures["requests"] == 40 * 7
        groups = {
            k: v
            for k, v in figures.items()
            if k not in {"requests", "busy_s", "busy_us_per_request"}
        }
        assert abs(sum(groups.values()) - 1.0) < 1e-6
        assert figures["busy_us_per_request"] > 0
        assert (tmp_path / f"profile-{contender}.txt").read_text().strip()
    assert shares["aiohttp"]["aiohttp's request path (with yarl, multidict)"] > 0.2
    assert "aiohttp's request path" in (tmp_path / "profile.md").read_text()


@pytest.mark.usefixtures("bench_tools")
def test_the_adaptive_concurrency_benchmark_writes_its_chart_and_figures(tmp_path: Path) -> None:
    """benchmarks.adaptive with tiny counts writes the chart and every run's figures."""
    figures_path = tmp_path / "adaptive.json"
    _run(
        "benchmarks.adaptive", "--conversations", "12", "--turns", "1", "--latency", "0.01",
        "--retry-after", "0", "--out", str(tmp_path), "--json", str(figures_path),
    )  # fmt: skip
    figures = json.loads(figures_path.read_text())
    runs = {run["run"]: run for run in figures["runs"]}
    assert list(runs) == ["adaptive", "without", "without, default RetryPolicy"]
    assert runs["adaptive"]["completed"] == runs["without"]["completed"] == 12
    for run in runs.values():
        assert run["completed"] + run["failed"] == 12
        assert 0 <= run["rate_limited_share"] <= 1
    assert (tmp_path / "adaptive-concurrency.png").stat().st_size > 10_000
