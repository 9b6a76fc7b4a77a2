"""The ``polyai-async`` command: ``bench`` (load), ``serve`` (a fake API) and ``chat``.

Nothing in the library imports this module. rich (the ``cli`` extra) is imported only by
``bench``, which needs it for its progress bar and report; ``serve`` and ``chat`` print plain
text. Every failure ends in one line on stderr: usage errors exit 2, anything else 1, an
interrupt 130. No line this command prints ever holds the API key or the connector token.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .._errors import PolyAIError
from . import _bench, _chat, _serve
from ._common import PROG, UsageError, _configure_logging, _fail, _Parser, redact

__all__ = ["build_parser", "main", "redact"]


def build_parser() -> argparse.ArgumentParser:
    """Make the parser of the whole command, subcommands included."""
    parser = _Parser(
        prog=PROG,
        description="Tools around the PolyAI Chat API client: load benchmark, fake server, chat.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _bench.add_parser(commands)
    _serve.add_parser(commands)
    _chat.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    parser = build_parser()
    _configure_logging()
    try:
        args = parser.parse_args(argv)
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    except UsageError as exc:
        _fail(str(exc))
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except PolyAIError as exc:
        _fail(str(exc))
        return 1
    except Exception as exc:  # anything unforeseen: still one line, never a traceback
        _fail(f"{type(exc).__name__}: {exc}")
        return 1
