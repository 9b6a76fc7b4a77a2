"""CapacityShape: the capacity search on Locust's runner (a ``python -m locust`` subprocess)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from polyai_async.testing import FakeServerProcess
from tests.locust.test_locust import Cluster
from tests.locust.test_locust_local import run_locust

pytestmark = pytest.mark.e2e


def test_the_shape_finds_the_agents_concurrency(tmp_path: Path) -> None:
    """2 slots of 50 ms: a third user at once waits a turn, so max_concurrency is 2."""
    with FakeServerProcess("--agent-capacity", "2", "--agent-latency", "0.05") as fake:
        done = run_locust(
            tmp_path,
            """
            from polyai_async.load import demo_scenario
            from polyai_async.locust import CapacityShape, PolyAIUser

            class Chat(PolyAIUser):
                scenario = demo_scenario(turns=1)
                think_time = 0

            class Search(CapacityShape):
                slos = ("respond.p99<80ms",)
                minimum, maximum = 1, 8
                step_duration, warmup = 2.0, 1.0
            """,
            *("--host", fake.url, "--only-summary"),
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "capacity step 1 (minimum): 1 users passed" in done.stderr
    assert "capacity step 2 (maximum): 8 users failed (respond.p99<80ms)" in done.stderr
    assert "capacity: max_concurrency 2 (confirmed)" in done.stderr, done.stderr[-3000:]
    assert "Shape test stopping" in done.stderr


def test_an_slo_locust_cannot_judge_is_refused(tmp_path: Path) -> None:
    """An SLO on a figure Locust's stats do not hold stops the locustfile with its name."""
    with FakeServerProcess() as fake:
        done = run_locust(
            tmp_path,
            """
            from polyai_async.locust import CapacityShape, PolyAIUser

            class Chat(PolyAIUser):
                pass

            class Search(CapacityShape):
                slos = ("expectations_failed==0",)
            """,
            *("--host", fake.url, "--only-summary"),
        )
    assert done.returncode != 0
    assert "'expectations_failed==0' is not judged on Locust's stats" in done.stderr


def test_the_shape_finds_the_agents_concurrency_on_a_cluster(tmp_path: Path) -> None:
    """A master and two workers: the shape judges the stats the master merged; the answer is 2."""
    # Workers send their stats every 3 s (Locust's WORKER_REPORT_INTERVAL), as long as a step:
    # judged on the master's stats as they stand, a step would be judged on the step before.
    locustfile = textwrap.dedent(
        """
        from polyai_async.load import demo_scenario
        from polyai_async.locust import CapacityShape, PolyAIUser

        class Chat(PolyAIUser):
            scenario = demo_scenario(turns=1)
            think_time = 0

        class Search(CapacityShape):
            slos = ("respond.p99<80ms",)
            minimum, maximum = 1, 8
            step_duration, warmup = 2.0, 1.0
        """
    )
    with FakeServerProcess("--agent-capacity", "2", "--agent-latency", "0.05") as fake:
        cluster = Cluster(tmp_path, fake.url, workers=2, locustfile=locustfile)
        try:
            cluster.wait(timeout=60)
        finally:
            cluster.kill()
    master = cluster.master_log.read_text()
    assert cluster.master.returncode == 0, cluster.logs()
    assert "capacity step 1 (minimum): 1 users passed" in master, master[-3000:]
    assert "capacity step 2 (maximum): 8 users failed (respond.p99<80ms)" in master
    assert "capacity: max_concurrency 2 (confirmed)" in master, master[-3000:]
    # Both workers ran users: the counts were split across the cluster.
    stats = cluster.stats()
    assert int(stats["respond"]["Request Count"]) > 0
    for log in cluster.worker_logs:
        assert "Traceback" not in log.read_text(), cluster.logs()


def test_an_overloaded_step_stops_early(tmp_path: Path) -> None:
    """4 users on 2 slots: the respond p99 fails over the 2 s window at once, so the 20 s
    step stops a few seconds after its warm-up, and the search answers none."""
    with FakeServerProcess("--agent-capacity", "2", "--agent-latency", "0.05") as fake:
        started = time.monotonic()
        done = run_locust(
            tmp_path,
            """
            from polyai_async.load import demo_scenario
            from polyai_async.locust import CapacityShape, PolyAIUser

            class Chat(PolyAIUser):
                scenario = demo_scenario(turns=1)
                think_time = 0

            class Search(CapacityShape):
                slos = ("respond.p99<80ms",)
                minimum, maximum = 4, 8
                step_duration, warmup, window = 20.0, 1.0, 2.0
            """,
            *("--host", fake.url, "--only-summary"),
        )
        seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "capacity step 1 (minimum): 4 users failed (respond.p99<80ms), stopped early" in done.stderr
    ), done.stderr[-3000:]
    assert "capacity: max_concurrency none" in done.stderr
    assert seconds < 15  # the step asked 21 s
