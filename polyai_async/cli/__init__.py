"""The ``polyai-async`` command: ``bench`` (load), ``compare``, ``serve`` (a fake API), ``chat``.

Nothing in the library imports this module. rich (the ``cli`` extra) is imported only by
``bench``, which needs it for its progress bar and report; ``serve`` and ``chat`` print plain
text. Every failure ends in one line on stderr: usage errors exit 2, anything else 1, an
interrupt 130 (bench: SIGTERM 143). No line this command prints ever holds the API key or
the connector token.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable, Sequence

from .._errors import PolyAIError
from .._redact import redact
from . import _bench, _capacity, _chat, _compare, _serve
from ._common import (
    PROG,
    Parser,
    UsageError,
    cli_words,
    configure_logging,
    fail,
    prog,
    set_command,
)

__all__ = ["build_parser", "main", "redact"]


# Shown at the end of each command's --help; indented lines are printed as they are.
_EXAMPLES = {
    None: """examples:
  polyai-async bench              load test against an embedded fake server
  polyai-async capacity           find how much an agent takes (a one-minute demo)
  polyai-async serve --port 0     run a fake API; export the settings it prints
  polyai-async chat               chat with the fake's demo agent

Each COMMAND --help lists its options and examples.""",
    "bench": """examples:
  polyai-async bench
  polyai-async bench --conversations 200 --concurrency 50 --error-rate 0.05
  polyai-async bench --latency 0.05 --json bench.json --quiet
  polyai-async bench --rate 20 --duration 2m --threshold 'respond.p99<1500ms'
  polyai-async bench --scenario support.yaml --rate 0 --stages 30s:10,2m:10 --html report.html
  polyai-async bench --base-url https://staging.example.com

--base-url and --real take their credentials from POLYAI_API_KEY, POLYAI_TOKEN,
POLYAI_ACCOUNT_ID and POLYAI_PROJECT_ID.""",
    "capacity": """examples:
  polyai-async capacity
  polyai-async capacity --agent-capacity 4 --model closed --slo 'respond.p99<300ms'
  polyai-async capacity --base-url https://staging.example.com --max 50 --slo 'respond.p99<2s' \\
      --slo 'conversation_error_rate<0.01' --json capacity.json

With no target, the demo: an embedded fake agent of 8 slots of 100 ms (80 turns a second),
found in about a minute. --base-url and --real need --max.""",
    "compare": """examples:
  polyai-async compare base.json new.json
  polyai-async compare base.json new.json --fail-on 'respond.p99>+10%' --html compare.html
  polyai-async compare --base a.json --base b.json --new c.json --noise 3%

Exit 99 when a --fail-on rule fails and its change is real (significant and beyond --noise),
0 otherwise, 2 on a usage error.""",
    "serve": """examples:
  polyai-async serve
  polyai-async serve --port 0 --agent echo
  polyai-async serve --error-rate 0.1 --latency 0.2 --seed 7""",
    "chat": """examples:
  polyai-async chat
  polyai-async chat --agent echo
  polyai-async chat --real

The agent is the one at --base-url, else at POLYAI_BASE_URL, else in --real's region
(POLYAI_REGION), as for the library; with none of them, an embedded fake server's. To chat
with a polyai-async serve in another terminal, export the settings it prints, then run
polyai-async chat. In the chat, /help lists the commands.""",
}


class _Formatter(argparse.HelpFormatter):
    """argparse's help, but indented lines of an epilog (the examples) are kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith("  ") for line in lines):
                paragraphs.append("\n".join(indent + line for line in lines))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)


def _version() -> str:
    try:
        return importlib.metadata.version("polyai-async")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    """Make the parser of the whole command, subcommands included."""
    parser = Parser(
        prog=PROG,
        description="Tools around the PolyAI Chat API client: load benchmark, fake server, chat.",
        epilog=_EXAMPLES[None],
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (_bench, _capacity, _compare, _serve, _chat):
        module.add_parser(commands)
    for name, command in commands.choices.items():
        command.epilog = _EXAMPLES[name]
        command.formatter_class = _Formatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    parser = build_parser()
    configure_logging()
    set_command(None)
    try:
        args = parser.parse_args(argv)
        set_command(args.command)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    except UsageError as exc:
        fail(cli_words(str(exc)))
        return 2
    except KeyboardInterrupt as exc:
        print(f"{prog()}: interrupted", file=sys.stderr, flush=True)
        return 143 if isinstance(exc, _bench.Terminated) else 130
    except PolyAIError as exc:
        fail(str(exc))
        return 1
    except Exception as exc:  # anything unforeseen: still one line, never a traceback
        fail(f"{type(exc).__name__}: {exc}")
        return 1
