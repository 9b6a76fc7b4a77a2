"""polyai_async.locust in one Locust process (and ``--processes``): scenarios, expectations,
the stages shape, bad input. Every run is a ``python -m locust`` subprocess (see
test_locust.py for why locust is never imported here).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyai_async.testing import FakeServerProcess
from tests.locust.test_locust import (
    BAD_OUTPUT,
    FAKE_CREDS,
    LOCUSTFILE,
    assert_clean,
    assert_every_chat_closed_or_counted,
    fake_server,
)

# Whole Locust clusters in subprocesses: the end-to-end tier (pytest -m e2e; CI runs it).
pytestmark = pytest.mark.e2e

SCENARIO = """
name: picky
think_time: 20ms
personas:
  - name: greeter
    turns:
      - say: Hello
        expect: {response_contains: "a reply the demo agent never gives"}
      - say: Thanks, bye
        expect: {ended: true}
"""


@pytest.fixture
def fake() -> Iterator[FakeServerProcess]:
    """A fake server process for one test."""
    yield from fake_server()


def run_locust(
    tmp_path: Path, locustfile: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m locust -f locustfile.py --headless ARGS`` in ``tmp_path`` to its end."""
    (tmp_path / "locustfile.py").write_text(textwrap.dedent(locustfile))
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env if env is not None else FAKE_CREDS)},
        timeout=90,
        check=False,
    )


def stats_rows(path: Path) -> dict[str, dict[str, str]]:
    """Locust's --csv stats rows, by name."""
    with path.open() as rows:
        return {row["Name"]: row for row in csv.DictReader(rows)}


def test_unmet_expectations_fail_the_expectation_entry_not_the_request(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """A reply that misses the scenario's expectation is an expectation failure, counted twice."""
    (tmp_path / "picky.yaml").write_text(SCENARIO)
    done = run_locust(
        tmp_path,
        """
        from polyai_async.locust import PolyAIUser

        class Chat(PolyAIUser):
            scenario = "picky.yaml"
        """,
        *("-u", "5", "-r", "5", "--run-time", "3s", "--host", fake.url),
        *("--csv", "stats", "--only-summary", "--polyai-json", "polyai.json"),
    )
    fake.stop()
    # An unmet expectation fails the run (exit 1), as a Locust failure does.
    assert done.returncode == 1, done.stderr
    rows = stats_rows(tmp_path / "stats_stats.csv")
    assert rows["respond"]["Failure Count"] == "0"
    # Conversations and expectations have statistics of their own, not Locust's requests.
    assert set(rows) == {"create", "respond", "close", "Aggregated"}
    calls = sum(int(rows[name]["Request Count"]) for name in ("create", "respond", "close"))
    assert int(rows["Aggregated"]["Request Count"]) == calls
    with (tmp_path / "stats_failures.csv").open() as rows_file:
        assert list(csv.DictReader(rows_file)) == []
    with (tmp_path / "stats_polyai_checks.csv").open() as rows_file:
        lines = list(csv.reader(rows_file))
    checks = {line[1]: line for line in lines[1:3]}
    assert lines[0][:4] == ["Type", "Name", "Count", "Failures"]
    assert checks["conversation"][0] == "CHAT"
    assert checks["conversation"][3] == "0"
    assert checks["expectation"][0] == "CHECK"
    checked, failed = int(checks["expectation"][2]), int(checks["expectation"][3])
    assert 0 < failed < checked  # "Thanks, bye" ends the conversation as expected
    [failure] = lines[3:]
    assert failure[:3] == ["CHECK", "expectation", str(failed)]
    assert "ExpectationFailed" in failure[3]
    assert "greeter: response_contains" in failure[3]
    report = json.loads((tmp_path / "polyai.json").read_text())
    assert report["scenario"] == "picky"
    assert report["expectations_checked"] == checked
    assert report["expectations_failed"] == failed
    assert report["personas"]["greeter"]["expectations_failed"] == failed


def test_every_close_made_at_the_stop_reaches_locusts_stats(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """40 users stopped mid-conversation: Locust's create and close counts equal the server's.

    The closes of the conversations the stop cancelled (and of the chats still open after it)
    are fired into Locust's stats before its final report. A respond cut off in flight was
    received by the server but never answered: Locust does not count it (at most one a user).
    """
    done = run_locust(
        tmp_path,
        LOCUSTFILE,
        *("-u", "40", "-r", "40", "--run-time", "6s", "--host", fake.url),
        *("--csv", "stats", "--only-summary", "--polyai-json", "polyai.json"),
    )
    fake.stop()
    served = fake.counters
    assert done.returncode == 0, done.stderr
    rows = stats_rows(tmp_path / "stats_stats.csv")
    report = json.loads((tmp_path / "polyai.json").read_text())
    # Our report counts every request sent, with its outcome: exactly what the server got.
    assert report["requests"] == sum(served["requests"].values()), (report, served)
    assert int(rows["create"]["Request Count"]) == served["requests"]["create"], served
    # A close cut off by its bound (2 s) on a starved machine reached the server unanswered:
    # our report counts it as cancelled; Locust, which knows only success and failure, not.
    unanswered = served["requests"]["close"] - int(rows["close"]["Request Count"])
    assert 0 <= unanswered <= report["requests_cancelled"], (served, report["requests_cancelled"])
    cut_off = served["requests"]["respond"] - int(rows["respond"]["Request Count"])
    assert 0 <= cut_off <= 40, served
    assert report["conversations_interrupted"] > 0  # the stop did cut conversations short


def test_failures_are_named_by_kind_and_status_not_by_request(tmp_path: Path) -> None:
    """Hundreds of 500s are one failure row an endpoint, without any correlation id."""
    fake = FakeServerProcess("--error-rate", "0.3")
    fake.start()
    try:
        done = run_locust(
            tmp_path,
            """
            from polyai_async import RetryPolicy
            from polyai_async.locust import PolyAIUser

            class Chat(PolyAIUser):
                think_time = "20ms"
                retry = RetryPolicy(max_attempts=1)
            """,
            *("-u", "10", "-r", "10", "--run-time", "3s", "--host", fake.url),
            *("--csv", "stats", "--only-summary"),
        )
    finally:
        fake.stop()
    assert done.returncode == 1, done.stderr  # the 500s are failures
    rows = stats_rows(tmp_path / "stats_stats.csv")
    failed = sum(int(rows[name]["Failure Count"]) for name in ("create", "respond", "close"))
    with (tmp_path / "stats_failures.csv").open() as rows_file:
        failures = list(csv.DictReader(rows_file))
    assert failed > 20
    assert len(failures) <= 3  # one kind of failure, on each endpoint at most
    assert sum(int(f["Occurrences"]) for f in failures) == failed
    for failure in failures:
        assert "InternalServerError: http_500" in failure["Error"], failure
        assert "correlation" not in failure["Error"], failure


def test_processes_merge_every_worker_and_write_the_html_report(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """``--processes 2`` on one machine: two workers' figures merged, JSON and HTML written."""
    done = run_locust(
        tmp_path,
        """
        from polyai_async.locust import PolyAIUser

        class Chat(PolyAIUser):
            think_time = "20ms"
        """,
        *("--processes", "2", "-u", "6", "-r", "6", "--run-time", "4s", "--host", fake.url),
        *("--only-summary", "--polyai-json", "polyai.json", "--polyai-html", "polyai.html"),
    )
    fake.stop()
    assert done.returncode == 0, done.stderr
    for bad in BAD_OUTPUT:
        assert bad not in done.stderr, done.stderr
    report = json.loads((tmp_path / "polyai.json").read_text())
    assert report["processes"] == 2
    assert len(report["workers"]) == 2
    assert report["create_count"] == sum(w["create_count"] for w in report["workers"]) > 0
    html = (tmp_path / "polyai.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    workers_table = html[html.index("<th>worker</th>") :]
    workers_table = workers_table[: workers_table.index("</table>")]
    assert workers_table.count("<tr><td>") == 2  # one row per worker


def test_stages_shape_ramps_users_and_ends_the_test(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """A StagesShape subclass drives the users through its ramp, then stops the run by itself."""
    done = run_locust(
        tmp_path,
        """
        from polyai_async.locust import PolyAIUser, StagesShape

        class Chat(PolyAIUser):
            think_time = "20ms"

        class Ramp(StagesShape):
            stages = "2s:6,2s:6,1s:0"
        """,
        *("--host", fake.url, "--csv", "stats", "--csv-full-history", "--only-summary"),
    )
    fake.stop()
    assert done.returncode == 0, done.stderr
    with (tmp_path / "stats_stats_history.csv").open() as rows:
        users = [int(r["User Count"]) for r in csv.DictReader(rows) if r["Name"] == "Aggregated"]
    assert max(users) == 6, users
    assert "Shape test updating to 6 users" in done.stderr
    assert "Shape test stopping" in done.stderr  # the shape, not a --run-time, ended it


@pytest.mark.parametrize(
    ("stages", "planned"),
    [
        ("10s:10,10s:30,5s:0", [0, 5, 10, 20, 30, 15, 0]),
        ("0s:8,10s:8", [8, 8, 8, 8, 8, 8, 8]),
    ],
)
def test_stages_shape_plans_a_linear_ramp(stages: str, planned: list[int]) -> None:
    """users_at interpolates linearly through the stages (checked in a locust process)."""
    code = textwrap.dedent(
        f"""
        from polyai_async.locust import StagesShape

        class Ramp(StagesShape):
            stages = {stages!r}

        shape = Ramp()
        print([shape.users_at(t) for t in (0, 5, 10, 15, 20, 22.5, 25)])
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-W", "ignore", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == planned


@pytest.mark.parametrize(
    ("scenario", "env", "message"),
    [
        (
            "personas:\n  - turns:\n      - say: hi\n        expect: {handoff: 3}\n",
            FAKE_CREDS,
            "bad.yaml: personas[0].turns[0].expect.handoff: must be",
        ),
        (None, {}, "POLYAI_API_KEY"),
    ],
    ids=["bad scenario", "no credentials"],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, scenario: str | None, env: dict[str, str], message: str
) -> None:
    """A bad scenario file or missing credentials: exit code 2, one line saying what to fix."""
    line = ""
    if scenario is not None:
        (tmp_path / "bad.yaml").write_text(scenario)
        line = 'scenario = "bad.yaml"'
    done = run_locust(
        tmp_path,
        f"""
        from polyai_async.locust import PolyAIUser

        class Chat(PolyAIUser):
            {line or "pass"}
        """,
        *("-u", "1", "--run-time", "2s", "--host", "http://127.0.0.1:9"),
        env=env,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if "/ERROR/" in ln]
    assert len(errors) == 1, done.stderr


def test_a_run_leaves_no_thread_task_or_session_behind(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """A plain run's output has no leak warning, and every created chat was closed."""
    done = run_locust(
        tmp_path,
        """
        from polyai_async.locust import PolyAIUser

        class Chat(PolyAIUser):
            think_time = "10ms"
        """,
        *("-u", "10", "-r", "10", "--run-time", "3s", "--host", fake.url),
        *("--only-summary", "--polyai-json", "polyai.json"),
    )
    fake.stop()
    served = fake.counters
    assert done.returncode == 0, done.stderr
    log = tmp_path / "locust.log"
    log.write_text(done.stderr)
    assert_clean(log)
    report: dict[str, Any] = json.loads((tmp_path / "polyai.json").read_text())
    assert report["conversations_left_open"] == 0
    assert_every_chat_closed_or_counted(served, report)


def test_a_host_name_is_resolved_without_gevent(tmp_path: Path, fake: FakeServerProcess) -> None:
    """``--host http://localhost:PORT``: the loop resolves the name in a native thread.

    (asyncio resolves on its default executor, whose threads gevent turned into greenlets
    that the loop's thread never runs: without the bridge's own resolver this hangs.)
    """
    port = fake.url.rsplit(":", 1)[1]
    done = run_locust(
        tmp_path,
        LOCUSTFILE,
        *("-u", "2", "-r", "2", "--run-time", "2s", "--host", f"http://localhost:{port}"),
        *("--csv", "stats", "--only-summary"),
    )
    fake.stop()
    assert done.returncode == 0, done.stderr
    rows = stats_rows(tmp_path / "stats_stats.csv")
    assert int(rows["create"]["Request Count"]) > 0
    assert rows["Aggregated"]["Failure Count"] == "0"


def test_the_documented_locustfile_runs(tmp_path: Path, fake: FakeServerProcess) -> None:
    """The first locustfile of docs/locust.md, with its scenario file, runs against the fake."""
    page = (Path(__file__).parents[2] / "docs" / "locust.md").read_text()
    locustfile = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'scenario = "support-mix.yaml"' in locustfile
    (tmp_path / "support-mix.yaml").write_text(SCENARIO.replace("picky", "support-mix"))
    done = run_locust(
        tmp_path,
        locustfile,
        *("-u", "2", "-r", "2", "--run-time", "2s", "--host", fake.url),
        *("--only-summary", "--polyai-json", "polyai.json"),
    )
    fake.stop()
    assert done.returncode == 1, done.stderr  # the scenario's first expectation fails
    report = json.loads((tmp_path / "polyai.json").read_text())
    assert report["scenario"] == "support-mix"
    assert report["conversations_completed"] > 0


def test_retries_are_counted_in_the_report(tmp_path: Path) -> None:
    """Every retry the process's client makes reaches the report: the fake's 503s are retried
    (no failure in Locust's stats) and the JSON counts them, bar those cut short by the stop."""
    server = FakeServerProcess("--error-rate", "0.2", "--error-status", "503", "--seed", "5")
    server.start()
    try:
        done = run_locust(
            tmp_path,
            """
            from polyai_async import RetryPolicy
            from polyai_async.locust import PolyAIUser

            class Chat(PolyAIUser):
                think_time = "20ms"
                retry = RetryPolicy(initial_backoff=0, max_backoff=0, max_attempts=20)
            """,
            *("-u", "4", "-r", "4", "--run-time", "3s", "--host", server.url),
            *("--csv", "stats", "--only-summary", "--polyai-json", "polyai.json"),
        )
    finally:
        server.stop()
    served = server.counters
    assert done.returncode == 0, done.stderr
    rows = stats_rows(tmp_path / "stats_stats.csv")
    assert all(rows[name]["Failure Count"] == "0" for name in ("create", "respond", "close"))
    report = json.loads((tmp_path / "polyai.json").read_text())
    injected = served["faults"]["503"]
    assert injected > 10
    # A 503 answered while the stop cancels its call is never retried: at most one per user.
    assert injected - 4 <= report["retries"] <= injected
    assert report["retries"] == sum(report[f"retries_{e}"] for e in ("create", "respond", "close"))


@pytest.mark.parametrize(
    ("option", "path", "message"),
    [
        ("--polyai-json", "/proc/polyai.json", "--polyai-json: '/proc/polyai.json' cannot be"),
        ("--polyai-html", ".", "--polyai-html: '.' is a directory"),
    ],
)
def test_a_report_path_that_cannot_be_written_exits_2_before_the_run(
    tmp_path: Path, fake: FakeServerProcess, option: str, path: str, message: str
) -> None:
    """An unwritable --polyai-json or --polyai-html is one line naming it, exit 2, no
    traceback, and no request reaches the server."""
    done = run_locust(
        tmp_path,
        """
        from polyai_async.locust import PolyAIUser

        class Chat(PolyAIUser):
            pass
        """,
        *("-u", "1", "--run-time", "2s", "--host", fake.url, option, path),
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len([ln for ln in done.stderr.splitlines() if "/ERROR/" in ln]) == 1, done.stderr
    fake.stop()
    assert sum(fake.counters["requests"].values()) == 0
