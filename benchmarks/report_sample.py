"""The sample HTML report of the docs, from a real run: ``docs/assets/load-report.png``.

Runs ``polyai-async bench`` against its embedded fake server (about 35 s): the open model
ramping through ``--stages``, the ``docs/examples/support-mix.yaml`` scenario (one persona's
expectation is never met, on purpose), injected faults (errors, resets, malformed answers,
latency with jitter), two worker processes, and thresholds of which one fails (so the command
exits 99, as it should). It writes the run's ``--json`` summary to
``tests/data/load_summary.json`` (the fixture the report's tests render), its ``--html`` report
next to it in ``--work``, then the screenshot through headless Chromium
(``python -m tests.browser REPORT.html OUT.png``), requantised to 256 colours (Pillow) to keep
it small.

    python -m benchmarks.report_sample [--json tests/data/load_summary.json]
        [--png docs/assets/load-report.png] [--work DIR]

The embedded fake has no stall to inject (``benchmarks/stall_plots.py`` shows one); the
latency jitter and the retried faults give the tail instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The command that makes the sample, after ``polyai-async bench`` (docs/load-report.md quotes it).
BENCH_ARGS = (
    "--scenario", "docs/examples/support-mix.yaml",
    "--rate", "15", "--stages", "8s:25,16s:25,8s:0",
    "--processes", "2", "--seed", "7",
    "--error-rate", "0.04", "--reset-rate", "0.01", "--malformed-rate", "0.005",
    "--latency", "0.02", "--latency-jitter", "0.06",
    "--retry-attempts", "2", "--max-error-rate", "0.2",
    "--threshold", "respond.p99<1500ms",
    "--threshold", "create.p95<=250ms",
    "--threshold", "conversation_error_rate<0.1",
    "--threshold", "server_faults>0",
    "--threshold", "generator_lag_p99_ms<50",
    "--threshold", "expectations_failed==0",
)  # fmt: skip
#: ``expectations_failed==0`` fails (the billing persona's handoff never happens): exit 99.
EXPECTED_EXIT = 99


def _shrink(png: Path) -> None:
    """Requantise the screenshot to 256 colours: flat UI colours survive, the file is ~3x less."""
    from PIL import Image  # Pillow comes with matplotlib (the bench extra)

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main(argv: list[str] | None = None) -> int:
    """Run the sample, write the fixture and the screenshot; 0 when all went as planned."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "tests/data/load_summary.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs/assets/load-report.png")
    parser.add_argument("--work", type=Path, default=None, help="where the HTML report goes")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="report-sample-"))
    work.mkdir(parents=True, exist_ok=True)
    html = work / "load-report.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYAI_")}
    command = [
        sys.executable, "-m", "polyai_async.cli", "bench", *BENCH_ARGS,
        "--json", str(args.json), "--html", str(html), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)  # noqa: S603 - our own CLI
    if done.returncode != EXPECTED_EXIT:
        print(
            f"report_sample: bench exited {done.returncode}, not {EXPECTED_EXIT} (one threshold "
            "fails on purpose)",
            file=sys.stderr,
        )
        return 1
    shot = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.browser", str(html), str(args.png)], cwd=ROOT, check=False
    )
    if shot.returncode != 0:
        return 1
    _shrink(args.png)
    print(f"wrote {args.json}, {html} and {args.png} ({args.png.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
