"""Lossless bench results, exact merges, and ``polyai-async compare`` as a regression gate."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from polyai_async import ConfigurationError, RetryPolicy
from polyai_async.load import (
    Load,
    Rule,
    compare,
    demo_scenario,
    merge_summaries,
    read_summary,
    run_load_async,
)
from polyai_async.load._compare import mann_whitney
from polyai_async.testing import FakePolyAI, Faults
from tests.cli_runner import CliRunner, ThreadedFake, restored_cli_state

ENDPOINTS = ("create", "respond", "close")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[CliRunner]:
    with restored_cli_state():
        yield CliRunner(monkeypatch, capsys)


async def _summary(
    conversations: int = 12, *, error_rate: float = 0.0, latency: float = 0.0, seed: int = 1
) -> dict[str, Any]:
    """A small real run against an in-process fake, as its JSON reads back."""
    async with FakePolyAI(faults=Faults(error_rate=error_rate, latency=latency), seed=seed) as fake:
        async with fake.client(retry=RetryPolicy(max_attempts=1)) as client:
            result = await run_load_async(
                client,
                Load.closed(concurrency=4, conversations=conversations),
                demo_scenario(turns=2),
                max_error_rate=1.0,
            )
    summary: dict[str, Any] = json.loads(json.dumps(result.summary))
    return summary


def _decode(summary: dict[str, Any], name: str) -> Any:
    return HdrHistogram.decode(summary["histograms"][name].encode("ascii"))


# --- lossless results -------------------------------------------------------------------------


async def test_histograms_decode_with_hdrhistogram_and_count_every_call() -> None:
    """Every latency histogram is in the JSON, decodes with hdrh, and counts every call."""
    summary = await _summary(30, error_rate=0.1)
    assert summary["schema"] == "polyai-async-bench/4"
    encoding = summary["histogram_encoding"]
    assert encoding["unit"] == "us"
    assert encoding["significant_figures"] == 3
    assert summary["errors_total"] > 0  # failed calls are counted apart from successful ones
    for endpoint in ENDPOINTS:
        every = _decode(summary, endpoint)
        ok = _decode(summary, f"{endpoint}.ok")
        assert every.get_total_count() == summary[f"{endpoint}_count"]
        assert ok.get_total_count() == summary[f"{endpoint}_ok_count"]
        assert every.get_value_at_percentile(50) / 1000 == pytest.approx(
            summary[f"{endpoint}_p50_ms"], abs=0.001
        )
    ended = summary["conversations_completed"] + summary["conversations_failed"]
    assert _decode(summary, "conversation").get_total_count() == ended
    assert (
        _decode(summary, "conversation.ok").get_total_count()
        == (summary["conversations_completed"])
    )
    turns = [name for name in summary["histograms"] if name.startswith("respond[")]
    assert turns == ["respond[0]", "respond[1]"]
    per_turn = sum(_decode(summary, name).get_total_count() for name in turns)
    assert per_turn == summary["respond_count"]
    # The settings given are the histogram's own.
    decoded = _decode(summary, "create")
    assert decoded.lowest_trackable_value == encoding["lowest_trackable_value"]
    assert decoded.highest_trackable_value == encoding["highest_trackable_value"]
    assert decoded.significant_figures == encoding["significant_figures"]


async def test_runs_of_one_setup_merge_exactly() -> None:
    """Merged: histograms added, counters summed, series one after the other, rates per run."""
    first, second = await _summary(8, seed=1), await _summary(12, seed=2)
    merged = merge_summaries([first, second])
    assert merged["runs"] == 2
    for key in ("conversations_started", "calls", "requests", "respond_count", "turns_completed"):
        assert merged[key] == first[key] + second[key]
    for name in ("create", "respond.ok", "conversation", "respond[1]"):
        expected = _decode(first, name)
        expected.add(_decode(second, name))
        assert _decode(merged, name).get_total_count() == expected.get_total_count()
        assert _decode(merged, name).get_value_at_percentile(99) == (
            expected.get_value_at_percentile(99)
        )
    window = first["load_window_seconds"] + second["load_window_seconds"]
    assert merged["load_window_seconds"] == pytest.approx(window, abs=1e-3)
    started = first["conversations_started"] + second["conversations_started"]
    assert merged["conversations_per_second"] == pytest.approx(started / window, rel=0.01)
    assert len(merged["timeseries"]) == len(first["timeseries"]) + len(second["timeseries"])
    assert merged["conversations"] == 20


async def test_runs_of_different_setups_do_not_merge() -> None:
    """A setting that differs (the concurrency, the fake's latency...) refuses the merge."""
    first = await _summary(4)
    second = json.loads(json.dumps(first))
    second["concurrency"] = 99
    with pytest.raises(ConfigurationError, match="concurrency is 99"):
        merge_summaries([first, second], ["a.json", "b.json"])
    second = json.loads(json.dumps(first))
    second["settings"]["latency"] = 0.13
    with pytest.raises(ConfigurationError, match=r"b.json: latency is 0.13 where a.json has None"):
        merge_summaries([first, second], ["a.json", "b.json"])


# --- the statistics and the rules ---------------------------------------------------------------


def _brute_force_u(base: list[int], new: list[int]) -> float:
    """U of the new sample from average ranks over the pooled raw values."""
    pooled = sorted([(v, 0) for v in base] + [(v, 1) for v in new])
    ranks: dict[int, float] = {}
    i = 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        ranks[pooled[i][0]] = (i + 1 + j) / 2
        i = j
    rank_sum = sum(ranks[v] for v in new)
    return rank_sum - len(new) * (len(new) + 1) / 2


@pytest.mark.parametrize("shift", [0, 3, 40])
def test_mann_whitney_from_histograms_matches_ranks_of_the_raw_values(shift: int) -> None:
    """Below 2048 us every value has its own HDR bucket: U is that of the raw values."""
    rng = random.Random(shift)
    base = [rng.randint(100, 400) for _ in range(500)]
    new = [rng.randint(100, 400) + shift for _ in range(400)]
    histograms = []
    for values in (base, new):
        histogram = HdrHistogram(1, 3_600_000_000, 3)
        for value in values:
            histogram.record_value(value)
        histograms.append(histogram)
    result = mann_whitney(*histograms)
    assert result is not None
    p_value, superiority = result
    assert superiority == pytest.approx(_brute_force_u(base, new) / (500 * 400))
    if shift == 40:
        assert p_value < 1e-6
    if shift == 0:
        assert p_value > 0.01


@pytest.mark.parametrize(
    ("text", "figure", "limit", "relative"),
    [
        ("respond.p99>+10%", "respond_p99_ms", 0.10, True),
        ("respond.p50>+20ms", "respond_p50_ms", 20.0, False),
        ("create.ok.p95>0.5s", "create_ok_p95_ms", 500.0, False),
        ("conversation_error_rate>+0.005", "conversation_error_rate", 0.005, False),
        ("max_rate<-10%", "max_rate", -0.10, True),
    ],
)
def test_rules_read_relative_absolute_and_floor_changes(
    text: str, figure: str, limit: float, relative: bool
) -> None:
    """Each kind of rule reads into its figure, limit and kind."""
    rule = Rule.parse(text)
    assert (rule.figure, rule.relative) == (figure, relative)
    assert rule.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("respond.p99", "write FIGURE OP CHANGE"),
        ("respond.p42>+10%", "is not a latency"),
        ("conversation_error_rate>+5ms", "belongs to latencies"),
        ("respond.p99==+10%", "write FIGURE OP CHANGE"),
    ],
)
def test_bad_rules_are_refused_naming_what_to_fix(text: str, message: str) -> None:
    """A malformed rule is one ConfigurationError naming the expression."""
    with pytest.raises(ConfigurationError, match=message):
        Rule.parse(text)


def _with_respond(summary: dict[str, Any], values_us: list[int]) -> dict[str, Any]:
    """``summary`` with its respond histogram (and p50) made of ``values_us``."""
    out: dict[str, Any] = json.loads(json.dumps(summary))
    histogram = HdrHistogram(1, 3_600_000_000, 3)
    for value in values_us:
        histogram.record_value(value)
    out["histograms"]["respond"] = histogram.encode().decode("ascii")
    out["respond_p50_ms"] = histogram.get_value_at_percentile(50) / 1000
    return out


async def test_a_significant_change_within_the_noise_floor_is_not_real() -> None:
    """Every call 3% slower is significant, but under the 5% floor: no failure; at 1% it fails."""
    summary = await _summary(4)
    rng = random.Random(5)
    values = [rng.randint(90_000, 110_000) for _ in range(5000)]
    base = _with_respond(summary, values)
    new = _with_respond(summary, [round(v * 1.03) for v in values])
    comparison = compare(base, new, rules=["respond.p50>+1%"])
    change = comparison.change("respond_p50_ms")
    assert change.significant
    assert not change.beyond_noise
    assert not change.real
    assert comparison.exit_code == 0
    assert "within the 5% noise floor" in comparison.verdicts[0].reason
    assert compare(base, new, rules=["respond.p50>+1%"], noise=0.01).exit_code == 99


async def test_a_large_change_that_is_not_significant_does_not_fail() -> None:
    """Five calls a side, 10% apart but overlapping: past the rule, not significant, exit 0."""
    summary = await _summary(4)
    values = [100_000, 110_000, 120_000, 130_000, 140_000]
    base = _with_respond(summary, values)
    new = _with_respond(summary, [v * 11 // 10 for v in values])
    comparison = compare(base, new, rules=["respond.p50>+5%"])
    verdict = comparison.verdicts[0]
    assert verdict.triggered
    assert not verdict.failed
    assert "not significant" in verdict.reason
    assert comparison.exit_code == 0


def _capacity(max_rate: float) -> dict[str, Any]:
    return {"schema": "polyai-async-capacity/1", "max_rate": max_rate, "max_concurrency": 40}


def test_capacity_results_compare_on_their_floor() -> None:
    """A capacity result's max_rate falling 20% fails max_rate<-10%; falling 3% does not."""
    dropped = compare(_capacity(50.0), _capacity(40.0), rules=["max_rate<-10%"])
    assert dropped.exit_code == 99
    assert dropped.change("max_rate").relative == pytest.approx(-0.2)
    steady = compare(_capacity(50.0), _capacity(48.5), rules=["max_rate<-10%"])
    assert steady.exit_code == 0


async def test_error_rate_rule_needs_a_significant_change() -> None:
    """conversation_error_rate rises by 0.1 on 20 conversations: past the rule, not significant."""
    base = await _summary(20)
    new = json.loads(json.dumps(base))
    new["conversations_completed"] -= 2
    new["conversations_failed"] += 2
    new["conversation_error_rate"] = 0.1
    comparison = compare(base, new, rules=["conversation_error_rate>+0.005"])
    verdict = comparison.verdicts[0]
    assert verdict.triggered
    assert not verdict.failed
    assert "not significant" in verdict.reason
    assert comparison.change("conversation_error_rate").test == "two-proportion z"


async def test_a_rule_on_a_figure_neither_run_has_is_refused() -> None:
    """A rule naming a figure missing from both results is a usage error, not a pass."""
    summary = await _summary(4)
    with pytest.raises(ConfigurationError, match="max_rate"):
        compare(summary, summary, rules=["max_rate<-10%"])


# --- the command, against loopback servers ------------------------------------------------------


def _bench(
    cli: CliRunner, fake: ThreadedFake, path: Path, *extra: str, conversations: int = 20
) -> Any:
    return cli(
        "bench", "--base-url", fake.url, "--turns", "1", "--conversations", str(conversations),
        "--concurrency", "20", "--retry-attempts", "1", "--json", str(path), "-q", *extra,
        env=fake.env,
    )  # fmt: skip


def test_a_slower_server_is_flagged_and_the_same_one_is_not(cli: CliRunner, tmp_path: Path) -> None:
    """100 ms against 130 ms fails respond.p50>+10% (exit 99); 100 ms against 100 ms passes."""
    paths = {}
    for name, latency in (("base", 0.1), ("again", 0.1), ("slow", 0.13)):
        with ThreadedFake(faults=Faults(latency=latency)) as fake:
            paths[name] = tmp_path / f"{name}.json"
            assert _bench(cli, fake, paths[name]).returncode == 0
    rule = ("--fail-on", "respond.p50>+10%")
    slow = cli("compare", str(paths["base"]), str(paths["slow"]), *rule)
    assert slow.returncode == 99, slow.stdout + slow.stderr
    assert "FAIL  respond.p50>+10%" in slow.stdout
    assert "Mann-Whitney U" in slow.stdout
    assert "regression: respond.p50>+10%" in slow.stderr
    same = cli("compare", str(paths["base"]), str(paths["again"]), *rule)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "pass  respond.p50>+10%" in same.stdout


def test_several_runs_a_side_merge_and_json_holds_the_verdicts(
    cli: CliRunner, tmp_path: Path
) -> None:
    """--base a --base b --new c: the base is both runs; --json has each rule's verdict."""
    paths = []
    with ThreadedFake(faults=Faults(latency=0.01)) as fake:
        for i in range(3):
            paths.append(tmp_path / f"run{i}.json")
            assert _bench(cli, fake, paths[-1], conversations=8).returncode == 0
    out = tmp_path / "comparison.json"
    result = cli(
        "compare", "--base", str(paths[0]), "--base", str(paths[1]), "--new", str(paths[2]),
        "--fail-on", "respond.p99>+1000%", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "base (2 runs) against new (1 run)" in result.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "polyai-async-compare/1"
    assert data["base_runs"] == 2
    create = next(c for c in data["changes"] if c["figure"] == "create_count")
    assert create["base"] == 16
    assert data["rules"][0]["expression"] == "respond.p99>+1000%"
    assert data["rules"][0]["failed"] is False


def test_differing_setups_are_listed_first(cli: CliRunner, tmp_path: Path) -> None:
    """Runs with different client settings compare, with the differences before the table."""
    paths = []
    with ThreadedFake() as fake:
        for attempts in ("1", "2"):
            paths.append(tmp_path / f"r{attempts}.json")
            result = cli(
                "bench", "--base-url", fake.url, "--turns", "1", "--conversations", "5",
                "--retry-attempts", attempts, "--json", str(paths[-1]), "-q", env=fake.env,
            )  # fmt: skip
            assert result.returncode == 0
    out = cli("compare", *map(str, paths)).stdout
    assert out.index("the setups differ") < out.index("figure")
    assert "retry_attempts: 1 -> 2" in out


def test_bench_baseline_runs_and_compares_in_one_step(cli: CliRunner, tmp_path: Path) -> None:
    """bench --baseline --fail-on exits 99 when the new run is really slower."""
    base = tmp_path / "base.json"
    with ThreadedFake(faults=Faults(latency=0.01)) as fake:
        assert _bench(cli, fake, base).returncode == 0
    with ThreadedFake(faults=Faults(latency=0.04)) as fake:
        result = _bench(
            cli, fake, tmp_path / "new.json", "--baseline", str(base), "--fail-on",
            "respond.p50>+10%",
        )  # fmt: skip
    assert result.returncode == 99, result.stderr
    assert "FAIL  respond.p50>+10%" in result.stdout
    assert "regression against the baseline" in result.stderr
    assert "threshold failed" not in result.stderr


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["missing.json", "{good}"], "missing.json: cannot read it"),
        ("not json", ["{bad}", "{good}"], "not JSON"),
        ('{"schema": "polyai-async-bench/3"}', ["{good}", "{bad}"], "carries no histograms"),
        ('{"schema": "other/1"}', ["{good}", "{bad}"], "is not a result compare reads"),
        ("[1, 2]", ["{good}", "{bad}"], "not a result"),
        (
            '{"schema": "polyai-async-capacity/1", "max_rate": 3}',
            ["{good}", "{bad}"],
            "compare results of one kind",
        ),
        (None, ["{good}"], "give two results"),
        (None, ["{good}", "{good}", "--base", "{good}"], "not both"),
        (None, ["--base", "{good}"], "one --new FILE"),
        (None, ["{good}", "{good}", "--fail-on", "respond.p99>>1"], "--fail-on"),
        (None, ["{good}", "{good}", "--fail-on", "nothing_like_it>+1%"], "is not a figure"),
        (
            '{"schema": "polyai-async-capacity/1", "max_rate": 3}',
            ["--base", "{bad}", "--base", "{bad}", "--new", "{bad}"],
            "do not merge",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli: CliRunner,
    tmp_path: Path,
    make: str | None,
    args: list[str],
    message: str,
    good_result: Path,
) -> None:
    """Every usage error is one line on stderr naming what to fix, exit 2, no traceback."""
    bad = tmp_path / "bad.json"
    if make is not None:
        bad.write_text(make)
    argv = [a.format(good=good_result, bad=bad) for a in args]
    result = cli("compare", *argv)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def good_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real bench result (a tiny run against an in-process fake)."""
    import asyncio

    path = tmp_path_factory.mktemp("good") / "good.json"
    path.write_text(json.dumps(asyncio.run(_summary(4))))
    assert read_summary(path)["schema"] == "polyai-async-bench/4"
    return path


async def test_the_embedded_fakes_port_is_not_a_setup_difference() -> None:
    """Two embedded runs differ in the fake's port only: no difference; another target's counts."""
    base = await _summary(4)
    base["target"] = "embedded"
    new = {**base, "base_url": "http://127.0.0.1:1"}
    assert compare(base, new).differences == ()
    assert merge_summaries([base, new])["runs"] == 2
    elsewhere = [{**s, "target": "base_url"} for s in (base, new)]
    assert [d[0] for d in compare(*elsewhere).differences] == ["base_url"]
    with pytest.raises(ConfigurationError, match="base_url is"):
        merge_summaries(elsewhere)
