"""polyai_async.locust on Locust's distributed runner: a master and workers as real processes.

Importing locust monkey-patches the interpreter (gevent), so this process never imports it or
polyai_async.locust: every Locust run is ``python -m locust`` in a subprocess, on loopback,
against the fake server (FakeServerProcess) that the test starts.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyai_async.testing import FakeServerProcess

# Whole Locust clusters in subprocesses: the end-to-end tier (pytest -m e2e; CI runs it).
pytestmark = pytest.mark.e2e

FAKE_CREDS = {
    "POLYAI_API_KEY": "test-api-key",
    "POLYAI_TOKEN": "test-token",
    "POLYAI_ACCOUNT_ID": "ACCOUNT-test",
    "POLYAI_PROJECT_ID": "PROJECT-test",
}
# Think time keeps 40 users to a few hundred requests a second: the machine is shared.
LOCUSTFILE = """
from polyai_async.locust import PolyAIUser

class Chat(PolyAIUser):
    think_time = "50ms"
"""
# Lines that would mean a leak or a crash (Locust's own CPU warnings are the machine's).
BAD_OUTPUT = (
    "Traceback",
    "Unclosed",
    "was destroyed but it is pending",
    "ResourceWarning",
    "Task exception was never retrieved",
    "/ERROR/",
    "/WARNING/polyai_async",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fake_server() -> Iterator[FakeServerProcess]:
    """A fake server process, stopped after the test if the test did not stop it."""
    with FakeServerProcess() as server:
        yield server


@pytest.fixture
def fake() -> Iterator[FakeServerProcess]:
    """A fake server process for one test."""
    yield from fake_server()


def locust(
    *args: str, cwd: Path, env: dict[str, str] | None = None, output: Path
) -> subprocess.Popen[bytes]:
    """Start ``python -m locust ARGS`` in ``cwd`` with the fake's credentials; log to ``output``."""
    with output.open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "locust", *args],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAKE_CREDS, **(env or {})},
        )


class Cluster:
    """A Locust master and its workers on loopback, for one headless run."""

    def __init__(
        self,
        tmp_path: Path,
        host: str,
        *,
        workers: int = 2,
        users: int = 40,
        run_time: str = "10s",
        locustfile: str = LOCUSTFILE,
        web_port: int | None = None,
    ) -> None:
        self.dir = tmp_path
        (tmp_path / "locustfile.py").write_text(locustfile)
        port = free_port()
        self.json = tmp_path / "polyai.json"
        self.csv = tmp_path / "stats"
        self.master_log = tmp_path / "master.log"
        # With a web port: the web UI, started at once (--autostart), instead of --headless.
        ui = ["--headless"]
        if web_port is not None:
            ui = ["--autostart", "--web-host", "127.0.0.1", "--web-port", str(web_port)]
        self.master = locust(
            "-f",
            "locustfile.py",
            "--master",
            *ui,
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(workers),
            "-u",
            str(users),
            "-r",
            str(users),
            "--run-time",
            run_time,
            "--host",
            host,
            "--csv",
            str(self.csv),
            "--only-summary",
            "--polyai-json",
            str(self.json),
            cwd=tmp_path,
            output=self.master_log,
        )
        self.worker_logs = [tmp_path / f"worker{i}.log" for i in range(workers)]
        self.workers = [
            locust(
                "-f",
                "locustfile.py",
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                cwd=tmp_path,
                output=log,
            )
            for log in self.worker_logs
        ]

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The master, then the workers."""
        return [self.master, *self.workers]

    def wait(self, timeout: float) -> list[float]:
        """Wait for every process to exit; returns when each did, in seconds from now."""
        start = time.monotonic()
        ended: list[float | None] = [None] * len(self.processes)
        while time.monotonic() - start < timeout and None in ended:
            for i, process in enumerate(self.processes):
                if ended[i] is None and process.poll() is not None:
                    ended[i] = time.monotonic() - start
            time.sleep(0.05)
        if None in ended:
            for process in self.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            pytest.fail(f"still running after {timeout} s:\n{self.logs()}")
        return [t for t in ended if t is not None]

    def kill(self) -> None:
        """Kill whatever is still running (the test failed)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for log in [self.master_log, *self.worker_logs]
        )

    def stats(self) -> dict[str, dict[str, str]]:
        """Locust's --csv stats rows, by name."""
        with (self.dir / "stats_stats.csv").open() as rows:
            return {row["Name"]: row for row in csv.DictReader(rows)}

    def report(self) -> dict[str, Any]:
        """The merged --polyai-json summary."""
        data: dict[str, Any] = json.loads(self.json.read_text())
        return data

    def wait_for_requests(self, fake_url: str, at_least: int, timeout: float = 30.0) -> None:
        """Wait until Locust's periodic CSV history shows ``at_least`` requests."""
        history = self.dir / "stats_stats_history.csv"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if history.exists():
                with history.open() as rows:
                    counts = [
                        int(row["Total Request Count"])
                        for row in csv.DictReader(rows)
                        if row["Name"] == "Aggregated"
                    ]
                if counts and counts[-1] >= at_least:
                    return
            time.sleep(0.2)
        pytest.fail(f"fewer than {at_least} requests in {timeout} s against {fake_url}")


def assert_clean(*logs: Path) -> None:
    """No traceback, leak warning or error in any process's output."""
    for log in logs:
        text = log.read_text(errors="replace")
        for bad in BAD_OUTPUT:
            assert bad not in text, f"{log.name} has {bad!r}:\n{text[-4000:]}"


def assert_every_chat_closed_or_counted(served: dict[str, Any], report: dict[str, Any]) -> None:
    """Each chat the server created was closed, or the report counts it as (maybe) left open.

    A create cancelled in flight may have made a chat whose id never arrived
    (``creates_cancelled``). A close cut off by the stop is sent again, so the server may
    count more closes than chats: only the chats short of a close matter.
    """
    lost = served["lost_answers"]
    created = served["requests"]["create"] - lost.get("create", 0)
    never_closed = max(0, created - served["requests"]["close"])
    assert never_closed <= report["conversations_left_open"] + report["creates_cancelled"], served


def test_distributed_run_counts_agree_with_the_server(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """A master and two workers, 40 users for 10 s: Locust, our report and the fake agree."""
    cluster = Cluster(tmp_path, fake.url)
    try:
        cluster.wait(timeout=90)
    finally:
        cluster.kill()
    fake.stop()
    served = fake.counters
    assert [p.returncode for p in cluster.processes] == [0, 0, 0], cluster.logs()
    assert_clean(cluster.master_log, *cluster.worker_logs)

    stats = cluster.stats()
    for name in ("create", "respond", "close"):
        assert int(stats[name]["Request Count"]) > 0, name
        assert stats[name]["Failure Count"] == "0", (name, stats[name])
    assert stats["create"]["Type"] == "POST"
    assert stats["close"]["Type"] == "PUT"
    # The Aggregated row is the HTTP calls; the conversations are counted apart, merged.
    assert set(stats) == {"create", "respond", "close", "Aggregated"}
    checks = (tmp_path / "stats_polyai_checks.csv").read_text().splitlines()
    conversations = next(line for line in checks if line.startswith("CHAT,conversation,"))
    assert int(conversations.split(",")[2]) > 0
    report = cluster.report()
    # Our report counts every request sent, with its outcome: exactly what the server got.
    assert report["requests"] == sum(served["requests"].values()), (report, served)
    # Every create and close the server received is in Locust's stats, the closes the stop
    # made included; a respond cut off in flight is not (at most one a user).
    assert int(stats["create"]["Request Count"]) == served["requests"]["create"], served
    # A close cut off by its bound (2 s) on a starved machine reached the server unanswered:
    # our report counts it as cancelled; Locust, which knows only success and failure, not.
    unanswered = served["requests"]["close"] - int(stats["close"]["Request Count"])
    assert 0 <= unanswered <= report["requests_cancelled"], (served, report["requests_cancelled"])
    cut_off = served["requests"]["respond"] - int(stats["respond"]["Request Count"])
    assert 0 <= cut_off <= 40, served

    assert report["processes"] == 2
    assert report["workers_missing"] == []
    workers = report["workers"]
    assert len(workers) == 2
    assert all(w["create_count"] > 0 for w in workers)
    for name in ("create", "respond", "close", "conversation"):
        merged = report["histogram_counts"][name]
        assert merged == sum(w["histogram_counts"][name] for w in workers), name
    for name in ("create", "respond", "close"):
        # The exact histograms hold the same successful calls Locust counted.
        assert report["histogram_counts"][name] == int(stats[name]["Request Count"]), name
        assert report[f"{name}_p99_ms"] is not None
    assert report["conversations_left_open"] == 0
    assert_every_chat_closed_or_counted(served, report)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_master_mid_run_stops_every_worker(
    tmp_path: Path, fake: FakeServerProcess, how: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM to the master: the workers exit within seconds, no chat is lost."""
    cluster = Cluster(tmp_path, fake.url, run_time="5m")
    try:
        cluster.wait_for_requests(fake.url, at_least=500)
        cluster.master.send_signal(how)
        ended = cluster.wait(timeout=30)
    finally:
        cluster.kill()
    fake.stop()
    served = fake.counters
    assert max(ended) < 15, (ended, cluster.logs())
    assert_clean(*cluster.worker_logs)
    report = cluster.report()
    assert len(report["workers"]) == 2, cluster.logs()
    assert report["conversations_interrupted"] >= 1
    assert_every_chat_closed_or_counted(served, report)


def test_a_lost_worker_is_named_and_the_others_are_merged(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """One worker killed mid-run: the master's report merges the other and names the lost one."""
    cluster = Cluster(tmp_path, fake.url, run_time="12s")
    try:
        cluster.wait_for_requests(fake.url, at_least=300)
        cluster.workers[0].kill()
        ended = cluster.wait(timeout=60)
    finally:
        cluster.kill()
    fake.stop()
    assert max(ended) < 40, cluster.logs()
    report = cluster.report()
    assert len(report["workers"]) == 1, cluster.logs()
    assert len(report["workers_missing"]) == 1
    assert report["create_count"] == report["workers"][0]["create_count"] > 0
    assert any("sent no figures" in w for w in report["warnings"])


def test_the_web_ui_stop_button_collects_every_worker(
    tmp_path: Path, fake: FakeServerProcess
) -> None:
    """Stop in the web UI: the workers drain and report, the master writes the merged report."""
    web_port = free_port()
    cluster = Cluster(tmp_path, fake.url, run_time="5m", web_port=web_port)
    try:
        cluster.wait_for_requests(fake.url, at_least=300)
        checks = web_ui_checks(web_port)
        stop = urllib.request.Request(f"http://127.0.0.1:{web_port}/stop", method="POST")
        with urllib.request.urlopen(stop, timeout=30) as answer:  # noqa: S310 - loopback
            assert json.load(answer)["success"] is True
        deadline = time.monotonic() + 30
        while not cluster.json.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cluster.json.exists(), cluster.logs()
        report = cluster.report()
        # The workers are still there (a stopped test can be started again) until SIGTERM.
        assert all(worker.poll() is None for worker in cluster.workers)
        cluster.master.send_signal(signal.SIGTERM)
        ended = cluster.wait(timeout=30)
    finally:
        cluster.kill()
    fake.stop()
    served = fake.counters
    assert max(ended) < 15, cluster.logs()
    assert len(report["workers"]) == 2, report
    assert report["workers_missing"] == []
    assert report["create_count"] == sum(w["create_count"] for w in report["workers"]) > 0
    assert report["conversations_left_open"] == 0
    assert_every_chat_closed_or_counted(served, report)
    assert_clean(*cluster.worker_logs)
    # The web UI's request table counts HTTP calls; the conversations have a tab of their own,
    # merged from both workers' periodic reports.
    assert checks["requests"] == ["close", "create", "respond"]
    assert "PolyAI conversations" in checks["page"]
    assert checks["conversation"]["num_requests"] > 0
    assert checks["csv"].startswith("Type,Name,Count,Failures")
    assert "CHAT,conversation," in checks["csv"]


def web_ui_checks(web_port: int, timeout: float = 15.0) -> dict[str, Any]:
    """The web UI's request names, its page, our tab's conversation row and CSV, once it has one."""
    base = f"http://127.0.0.1:{web_port}"
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{base}/stats/requests", timeout=10) as answer:  # noqa: S310
            stats = json.load(answer)
        [tab] = [t for t in stats.get("extended_stats", []) if t["key"] == "polyai_checks"]
        rows = {row["name"]: row for row in tab["data"]}
        if "conversation" in rows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    with urllib.request.urlopen(f"{base}/", timeout=10) as answer:  # noqa: S310 - loopback
        page = answer.read().decode()
    with urllib.request.urlopen(f"{base}/polyai/checks.csv", timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    return {
        "requests": sorted(e["name"] for e in stats["stats"] if e["name"] != "Aggregated"),
        "page": page,
        "conversation": rows.get("conversation", {"num_requests": 0}),
        "csv": text,
    }
