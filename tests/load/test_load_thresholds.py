"""Thresholds as in k6: parsed with units, judged on the summary, failing without a value."""

from __future__ import annotations

import pytest

from polyai_async import ConfigurationError
from polyai_async.load import Load, Metrics, Threshold, parse_thresholds
from polyai_async.load._result import figure_names, make_result


@pytest.mark.parametrize(
    ("text", "key", "op", "limit"),
    [
        ("respond.p99<1500ms", "respond_p99_ms", "<", 1500.0),
        ("create.p95<=2s", "create_p95_ms", "<=", 2000.0),
        ("conversation.p50 < 30s", "conversation_p50_ms", "<", 30000.0),
        ("close.p999>=3", "close_p999_ms", ">=", 3.0),
        ("respond.mean>0.5ms", "respond_mean_ms", ">", 0.5),
        ("create.ok.p99<600ms", "create_ok_p99_ms", "<", 600.0),
        ("conversation.ok.max<=2s", "conversation_ok_max_ms", "<=", 2000.0),
        ("respond.ok.p99<1m", None, None, None),
        ("conversation_error_rate<0.01", "conversation_error_rate", "<", 0.01),
        ("expectations_failed==0", "expectations_failed", "==", 0.0),
        ("conversations_dropped==0", "conversations_dropped", "==", 0.0),
    ],
)
def test_expressions_parse(text: str, key: str | None, op: str | None, limit: float | None) -> None:
    """Latencies normalise to ms; summary figures are read as they are (None: refused)."""
    if key is None:
        with pytest.raises(ConfigurationError, match="write FIGURE OP NUMBER"):
            Threshold.parse(text, figure_names())
        return
    threshold = Threshold.parse(text, figure_names())
    assert (threshold.key, threshold.op, threshold.limit) == (key, op, limit)
    assert key in figure_names()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("respond.p99", "write FIGURE OP NUMBER"),
        ("respond.p42<1s", "is not a latency"),
        ("respond.failed.p99<1s", "is not a latency"),
        ("respond.ok<1s", "is not a latency"),
        ("handshake.p99<1s", "is not a latency"),
        ("expectations_failed<1s", "belongs to latencies"),
        ("vibes<3", "is not a figure of the summary"),
        ("respond.p99 ~ 3", "write FIGURE OP NUMBER"),
    ],
)
def test_bad_expressions_say_what_to_write(text: str, message: str) -> None:
    """A threshold that cannot be read is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_thresholds([text])
    assert repr(text) in str(caught.value)


def test_thresholds_are_judged_with_their_measured_values() -> None:
    """Each verdict carries the measured value; a figure without samples fails."""
    metrics = Metrics()
    for ms in range(1, 101):
        metrics.started("p")
        metrics.request("respond", "POST", ms / 1000, None, 0)
        metrics.conversation("p", ms / 1000, None, False, None, 1)
    metrics.finish()
    result = make_result(
        metrics,
        thresholds=parse_thresholds(
            ["respond.p99<100ms", "respond.p50>60ms", "close.p99<1s", "conversations_failed==0"]
        ),
        load=Load.closed(concurrency=1, conversations=100),
    )
    verdicts = {t["expression"]: (t["value"], t["passed"]) for t in result.summary["thresholds"]}
    assert verdicts["respond.p99<100ms"] == (pytest.approx(99, rel=0.002), True)
    assert verdicts["respond.p50>60ms"] == (pytest.approx(50, rel=0.002), False)
    assert verdicts["close.p99<1s"] == (None, False)
    assert verdicts["conversations_failed==0"] == (0.0, True)
    assert result.passed is False
    assert result.exit_code == 99


def test_the_error_rate_fails_before_thresholds() -> None:
    """Above max_error_rate the run failed (exit 1) even when thresholds fail too."""
    metrics = Metrics()
    metrics.started("p")
    metrics.conversation("p", 0.1, ConfigurationError("x"), False, None, 0)
    result = make_result(
        metrics, max_error_rate=0.0, thresholds=parse_thresholds(["conversations_failed==0"])
    )
    assert result.exit_code == 1
    done = Metrics()
    done.started("p")
    done.conversation("p", 0.1, None, False, None, 0)
    ok = make_result(done, max_error_rate=0.0)
    assert (ok.exit_code, ok.passed) == (0, True)


@pytest.mark.parametrize("max_error_rate", [None, 1.0])
def test_a_run_in_which_nothing_completed_cannot_pass(max_error_rate: float | None) -> None:
    """Conversations cut off by the graceful stop count as failed in the error rate, and with
    no completed conversation the run fails (exit 1), whatever the limit or thresholds."""
    metrics = Metrics()
    for _ in range(4):
        metrics.started("p")
        metrics.interrupted("p")
    result = make_result(
        metrics,
        max_error_rate=max_error_rate,
        thresholds=parse_thresholds(["conversations_failed==0"]),
    )
    assert result.summary["conversation_error_rate"] == 1.0
    assert (result.passed, result.summary["passed"], result.exit_code) == (False, False, 1)
    assert not make_result(Metrics()).passed  # nothing started: nothing measured passes
    metrics.started("p")
    metrics.conversation("p", 0.1, None, False, None, 1)
    some = make_result(metrics, max_error_rate=0.5)
    assert some.summary["conversation_error_rate"] == pytest.approx(4 / 5)
    assert some.exit_code == 1  # 4 of 5 did not succeed: above 0.5
    assert make_result(metrics, max_error_rate=0.9).exit_code == 0


def one_completed() -> Metrics:
    """Metrics of a run in which one conversation completed."""
    metrics = Metrics()
    metrics.started("p")
    metrics.conversation("p", 0.1, None, False, None, 1)
    return metrics


def test_a_figure_not_measured_fails_saying_so() -> None:
    """A threshold on a null figure fails with the reason 'not measured in this run'."""
    result = make_result(one_completed(), thresholds=parse_thresholds(["server_requests>0"]))
    (verdict,) = result.summary["thresholds"]
    assert verdict == {
        "expression": "server_requests>0",
        "value": None,
        "passed": False,
        "reason": "not measured in this run",
    }
    assert result.exit_code == 99


def test_figures_added_after_the_run_are_judged_again() -> None:
    """with_figures re-judges thresholds, passed and the exit code on the final summary."""
    result = make_result(
        one_completed(),
        max_error_rate=0.5,
        thresholds=parse_thresholds(["server_requests>0", "conversations_failed==0"]),
    )
    assert (result.passed, result.exit_code) == (False, 99)
    final = result.with_figures({"server_requests": 12})
    assert final.summary["server_requests"] == 12
    assert [(t["value"], t["passed"], t["reason"]) for t in final.summary["thresholds"]] == [
        (12.0, True, None),
        (0.0, True, None),
    ]
    assert [t.passed for t in final.thresholds] == [True, True]
    assert (final.passed, final.exit_code) == (True, 0)
    assert result.summary["server_requests"] is None  # the first result is left as it was
    failing = result.with_figures({"server_requests": 0, "conversation_error_rate": 0.75})
    assert (failing.passed, failing.exit_code) == (False, 1)


def test_a_verdict_says_what_it_measured_in_its_unit_or_why_not() -> None:
    """ThresholdResult.detail(): the measured value in the expression's unit, or the reason."""
    metrics = Metrics()
    metrics.started("p")
    metrics.request("respond", "POST", 3.43, None, 0)
    metrics.conversation("p", 3.5, None, False, None, 1)
    metrics.finish()
    expressions = ["respond.p99<1s", "respond.p99<900ms", "close.p99<1s"]
    result = make_result(metrics, thresholds=parse_thresholds(expressions))
    details = [t.detail() for t in result.thresholds]
    assert details[0] == "measured 3.43 s"
    assert details[1].startswith("measured 3,4")
    assert details[1].endswith(" ms")
    assert details[2] == "not measured in this run"


def test_the_servers_figures_join_the_summary_and_are_judged() -> None:
    """LoadResult.with_server adds server_* from the fake's counters and judges them again."""
    metrics = Metrics()
    metrics.started("p")
    metrics.conversation("p", 0.1, None, False, None, 1)
    result = make_result(metrics, thresholds=parse_thresholds(["server_requests<3"]))
    assert result.summary["server_requests"] is None
    assert result.exit_code == 99  # not measured yet: fails
    counters = {
        "requests": {"create": 1, "respond": 2},
        "faults": {"503": 1, "latency": 9},
        "max_open_connections": 4,
    }
    served = result.with_server(counters, 0.123456)
    assert {k: v for k, v in served.summary.items() if k.startswith("server_")} == {
        "server_cpu_seconds": 0.1235,
        "server_requests": 3,
        "server_faults": 1,  # added latency is not a fault
        "server_max_open_connections": 4,
    }
    assert served.thresholds[0].value == 3
    assert served.exit_code == 99
    assert result.with_server({"requests": {"create": 2}}, None).exit_code == 0
