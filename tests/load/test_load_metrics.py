"""Metrics: HDR histograms, counters and the per-second series, merged exactly across workers."""

from __future__ import annotations

import itertools
import json
import random
import time

import pytest

from polyai_async import Handoff, InternalServerError
from polyai_async.load import Metrics
from polyai_async.load._metrics import new_histogram

ERROR = InternalServerError("boom", status=500)


def observe(metrics: Metrics, latencies: list[float]) -> None:
    """Record one create per latency, with every other conversation handed off."""
    for i, seconds in enumerate(latencies):
        metrics.started("p")
        metrics.request("create", "POST", seconds, None, None)
        metrics.request("respond", "POST", seconds / 2, None, 0)
        handoff = Handoff(destination="queue", reason="why") if i % 2 else None
        metrics.conversation("p", seconds, None, handoff is not None, handoff, 1)


def test_a_failed_call_is_latency_too_and_successful_ones_are_kept_apart() -> None:
    """Every call that ended is in its endpoint's histogram, a failed one with the time it took
    to fail (as k6's http_req_duration); ``<endpoint>.ok`` holds the successful ones alone."""
    metrics = Metrics()
    observe(metrics, [0.001 * n for n in range(1, 101)])
    metrics.started("p")
    metrics.request("create", "POST", 9.0, ERROR, None)
    metrics.conversation("p", 9.0, ERROR, False, None, 0)
    assert metrics.count("conversations_started") == 101
    assert metrics.count("conversations_completed") == 100
    assert metrics.count("conversations_failed") == 1
    assert metrics.count("calls") == 201
    assert metrics.count("create_count") == 101
    assert metrics.count("create_ok_count") == 100
    assert metrics.max_ms("create") == pytest.approx(9000, rel=0.002)
    assert metrics.max_ms("create.ok") == pytest.approx(100, rel=0.002)
    assert metrics.percentile_ms("create.ok", 50) == pytest.approx(50, rel=0.002)
    assert metrics.max_ms("conversation") == pytest.approx(9000, rel=0.002)
    assert metrics.histograms["conversation"].get_total_count() == 101
    assert metrics.histograms["conversation.ok"].get_total_count() == 100
    rows = list(metrics.seconds())
    assert sum(h["create"].get_total_count() for *_, h in rows) == 101
    assert sum(h["create.ok"].get_total_count() for *_, h in rows) == 100
    assert metrics.count("handoffs") == metrics.count("ended_by_agent") == 50
    assert metrics.handoff_destinations == {"queue": 50}
    assert metrics.errors["InternalServerError"][0] == 1
    assert metrics.in_flight == 0
    p50 = metrics.percentile_ms("create", 50)
    p99 = metrics.percentile_ms("create", 99)
    assert p50 == pytest.approx(51, rel=0.002)
    assert p99 == pytest.approx(100, rel=0.002)
    assert metrics.percentile_ms("respond[0]", 50) == pytest.approx(25, rel=0.002)
    assert metrics.percentile_ms("close", 50) is None
    spectrum = metrics.spectrum("create.ok")
    assert spectrum[0]["percentile"] == 0
    assert all(a["ms"] <= b["ms"] for a, b in itertools.pairwise(spectrum))


def test_merge_equals_the_union_of_the_samples() -> None:
    """Two workers' metrics merged give the counts and percentiles of all samples in one."""
    rng = random.Random(7)
    first = [rng.lognormvariate(-3, 1) for _ in range(3000)]
    second = [rng.lognormvariate(-1, 0.5) for _ in range(2000)]
    a, b, union = Metrics(), Metrics(), Metrics()
    observe(a, first)
    observe(b, second)
    observe(union, first + second)
    a.merge(b)
    assert a.counters == union.counters
    for p in (50, 90, 99, 99.9, 100):
        assert a.percentile_ms("create", p) == union.percentile_ms("create", p)
    exact = sorted(first + second)
    p99 = exact[int(0.99 * len(exact)) - 1] * 1000
    assert a.percentile_ms("create", 99) == pytest.approx(p99, rel=0.002)


def test_the_whole_runs_histograms_hold_every_second_read_mid_run_or_after() -> None:
    """A call is recorded once, into its second; the whole run's histograms (made as each
    second is sealed) hold every call of every second, read mid-second, after finish, through
    JSON, and merged into a Metrics still recording, as histograms recorded directly would."""
    rng = random.Random(5)
    metrics = Metrics()
    direct = {name: new_histogram() for name in ("create", "create.ok")}
    per_second = []  # (calls, successful calls) of each second
    for second in range(3):
        if second:
            metrics.start -= 1.0  # the next second of the run
        per_second.append([0, 0])
        for _ in range(200):
            seconds = rng.lognormvariate(-5, 1)
            error = ERROR if rng.random() < 0.1 else None
            metrics.request("create", "POST", seconds, error, None)
            for name in ("create",) if error else ("create", "create.ok"):
                direct[name].record_value(round(seconds * 1_000_000))
            per_second[-1][0] += 1
            per_second[-1][1] += error is None

    def same(m: Metrics) -> None:
        rows = [
            [row[3]["create"].get_total_count(), row[3]["create.ok"].get_total_count()]
            for row in m.seconds()
        ]
        assert rows == per_second
        for name, histogram in direct.items():
            whole = m.histogram(name)
            assert whole is not None
            assert whole.get_total_count() == histogram.get_total_count()
            assert m.histograms[name].get_total_count() == histogram.get_total_count()
            for p in (0, 50, 99, 100):
                assert m.percentile_ms(name, p) == histogram.get_value_at_percentile(p) / 1000
            assert m.max_ms(name) == histogram.get_max_value() / 1000

    same(metrics)  # the third second still live
    other = Metrics.from_dict(json.loads(json.dumps(metrics.to_dict())))
    same(other)
    metrics.finish()
    same(metrics)
    same(Metrics.from_dict(json.loads(json.dumps(metrics.to_dict()))))
    recording = Metrics(start=metrics.start)  # in the run's last second, nothing recorded yet
    recording.request("create", "POST", 0.5, None, None)
    recording.merge(metrics)
    assert recording.count("create_count") == 601
    assert recording.histogram("create").get_total_count() == 601  # type: ignore[union-attr]
    assert sum(row[3]["create"].get_total_count() for row in recording.seconds()) == 601


def test_the_mean_is_hdrhistograms_mean_of_merged_and_decoded_histograms() -> None:
    """mean_ms is exactly HdrHistogram's get_mean_value (in ms), merged or sent as JSON, and
    the sample mean within HDR precision."""
    rng = random.Random(3)
    first = [rng.lognormvariate(-3, 1.5) for _ in range(2000)]
    second = [rng.lognormvariate(0, 1) for _ in range(500)]
    a, b = Metrics(), Metrics()
    observe(a, first)
    observe(b, second)
    a.merge(b)
    back = Metrics.from_dict(json.loads(json.dumps(a.to_dict())))
    for metrics in (a, back):  # hdrh's own mean is the slow walk: checked on a few
        for name in ("create", "conversation"):
            histogram = metrics.histogram(name)
            assert histogram is not None
            assert metrics.mean_ms(name) == histogram.get_mean_value() / 1000, name
    assert a.mean_ms("create") == pytest.approx(1000 * sum(first + second) / 2500, rel=0.002)
    assert Metrics().mean_ms("create") is None


def test_to_dict_and_from_dict_carry_everything_through_json() -> None:
    """A Metrics sent as JSON comes back with the same counters, histograms and series."""
    metrics = Metrics()
    observe(metrics, [0.01, 0.02, 0.03])
    metrics.expectation("p", "ended=true", False, "nope")
    metrics.retry("respond")
    metrics.lag(0.004)
    metrics.finish()
    data = json.loads(json.dumps(metrics.to_dict()))
    back = Metrics.from_dict(data)
    assert back.counters == metrics.counters
    assert back.retries == {"respond": 1}
    assert back.personas["p"].expectations_failed == 1
    assert back.percentile_ms("create", 99) == metrics.percentile_ms("create", 99)
    assert back.percentile_ms("generator_lag", 50) == pytest.approx(4, rel=0.002)
    assert [t for t, *_ in back.seconds()] == [t for t, *_ in metrics.seconds()]
    with pytest.raises(ValueError, match="to_dict"):
        Metrics.from_dict({"version": 99})


def test_series_has_a_row_a_second_and_merges_by_second() -> None:
    """Events land in the second since start they happen in; merging adds second by second."""
    start = time.perf_counter() - 2.5  # pretend the run started 2.5 s ago: we are in second 2
    a, b = Metrics(start=start), Metrics(start=start)
    for m in (a, b):
        m.started("p")
        m.request_sent("create")
        m.request("create", "POST", 0.010, None, None)
        m.finish()
    a.merge(b)
    rows = list(a.seconds())
    assert [row[0] for row in rows] == [2]
    _, counters, in_flight, histograms = rows[0]
    assert counters["conversations_started"] == 2
    assert counters["requests"] == 2
    assert in_flight == 2
    assert histograms["create"].get_total_count() == 2


def test_quiet_seconds_are_rows_too() -> None:
    """A second in which nothing happened still has its row, with the conversations in flight."""
    metrics = Metrics(start=time.perf_counter())
    metrics.started("p")
    metrics.start -= 3  # three seconds pass with nothing recorded
    metrics.tick()
    metrics.finish()
    rows = {t: (c, f) for t, c, f, _ in metrics.seconds()}
    assert sorted(rows) == [0, 1, 2, 3]
    assert rows[1] == ({}, 1)
