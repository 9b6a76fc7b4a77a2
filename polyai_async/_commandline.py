"""Command line helpers shared by ``python -m polyai_async.testing`` and ``polyai-async``.

argparse with one-line usage errors, a port option, and library messages in option words.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from typing import NoReturn

__all__ = ["OneLineParser", "option_names", "port_number"]

_MAX_PORT = 65535


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage block) and exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: message (see --help)`` on stderr and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def port_number(text: str) -> int:
    """A TCP port to listen on, 0 to 65535 (0 picks a free one); for argparse.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a whole number in that range.
    """
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= port <= _MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"{port} is not a port: use 0 to {_MAX_PORT} (0 picks a free one)"
        )
    return port


def option_names(message: str, arguments: Iterable[str]) -> str:
    """``message`` with the ``arguments`` it names written as command line options.

    ``error_rate`` becomes ``--error-rate``: a message from the library names its arguments, but
    a command's user typed options.
    """
    for argument in arguments:
        message = re.sub(rf"(?<![\w-]){argument}\b", "--" + argument.replace("_", "-"), message)
    return message
