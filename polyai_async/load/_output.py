"""write_reports: every file report of a run (JSON, CSV, HTML), the ones asked for, at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from ._html import write_html
from ._report import write_csv, write_json
from ._result import LoadResult

__all__ = ["write_reports"]

Path = str | os.PathLike[str]


def write_reports(
    result: LoadResult | Mapping[str, Any],
    *,
    json: Path | None = None,
    csv: Path | None = None,
    html: Path | None = None,
) -> dict[str, str]:
    """Write the reports that have a path: ``write_json``, ``write_csv``, ``write_html``.

    A report that cannot be written does not stop the others.

    Returns:
        The reports not written (``json``, ``csv``, ``html``), each with one line saying why
        (``could not write out/r.json: Permission denied``); empty when all were written.
    """
    writers: tuple[tuple[str, Path | None, Callable[[Any, Path], None]], ...] = (
        ("json", json, write_json),
        ("csv", csv, write_csv),
        ("html", html, write_html),
    )
    summary = result.summary if isinstance(result, LoadResult) else result
    problems: dict[str, str] = {}
    for name, path, write in writers:
        if path is None:
            continue
        try:
            write(summary, path)
        except OSError as exc:
            problems[name] = f"could not write {os.fspath(path)}: {exc.strerror or exc}"
    return problems
