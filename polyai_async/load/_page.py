r"""The look every HTML report shares: one self-contained page made from a Jinja2 template.

A report is a template in ``_templates/`` that extends ``base.html.j2`` (the page: head,
Content-Security-Policy, the inlined CSS and scripts) and imports the macros of
``macros.html.j2`` (a section, a table, a chart grid, tiles, a verdict...). ``render_page``
renders it with autoescaping on, so every value a report passes in is escaped whatever its
author remembers; the only text marked safe is the package's own assets (uPlot, ``report.js``,
the CSS), inlined so that nothing can close their element. The charts' numbers reach
``report.js`` through ``|tojson`` (``<``, ``>``, ``&`` and ``'`` written as ``\u003c``...) in a
``<script type="application/json" id="report-data">`` element.

The Content-Security-Policy allows no fetch at all (``default-src 'none'``) and only the page's
own two scripts (by hash), so the page opens offline and an injected handler could not run.
uPlot (vendored in ``_assets/``, MIT) draws the charts: 51 KB minified with no dependencies, made
for time series, drawn on canvas.

Jinja2 comes with the extras that write reports (``load``, ``cli``, ``locust``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from base64 import b64encode
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from .._errors import ConfigurationError

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

__all__ = ["asset", "chart", "inline", "render_page", "script_hash", "script_json", "series"]


def render_page(template: str, /, *, title: str, data: Mapping[str, Any], **context: Any) -> str:
    """Render the report ``template`` (a file of ``_templates/``) as one self-contained page.

    Args:
        template: the template's file name, for example ``"bench.html.j2"``; it extends
            ``base.html.j2``.
        title: the page's title (escaped).
        data: what the page's script reads (``{"charts": [...]}`` for ``report.js``), embedded
            with ``|tojson``.
        context: the template's other variables (all escaped unless the template says not).

    Raises:
        ConfigurationError: Jinja2 is not installed.
    """
    return (
        environment()
        .get_template(template)
        .render(page=_page_assets(), title=title, data=data, **context)
    )


def script_json(data: object) -> Markup:
    r"""JSON for a <script type="application/json">: ``<``, ``>`` and ``&`` as \u escapes.

    The templates' ``|tojson``: no string in ``data`` can close the element or start a
    comment, and the text still parses to ``data`` (orjson, as the summary's own writer:
    compact, NaN and infinities as null).
    """
    from markupsafe import Markup  # noqa: PLC0415 - comes with jinja2

    text = orjson.dumps(data).decode()
    escaped = re.sub("[<>&]", lambda m: _JSON_ESCAPES[m[0]], text)
    return Markup(escaped)  # noqa: S704 - no <, > or & is left in it


_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


@functools.cache
def environment() -> jinja2.Environment:
    try:
        import jinja2  # noqa: PLC0415 - an optional dependency (the extras that write reports)
    except ImportError:
        raise ConfigurationError(
            "HTML reports need jinja2: install polyai-async[load] (or [cli], [locust])"
        ) from None
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("polyai_async.load", "_templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["tojson"] = script_json
    return environment


@functools.cache
def _page_assets() -> Mapping[str, Any]:
    """The inlined assets (the only text marked safe) and the CSP that allows their scripts."""
    from markupsafe import Markup  # noqa: PLC0415 - comes with jinja2

    report_js = inline(asset("report.js"), "script")
    uplot_js = inline(asset("uPlot.iife.min.js"), "script")
    style = inline(asset("uPlot.min.css") + "\n" + asset("report.css"), "style")
    # Made of constants and hashes only (no summary string): marked safe so that its quotes
    # stay quotes ('none', 'sha256-...'), as a reader of the page's source expects.
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src {script_hash(uplot_js)} {script_hash(report_js)}",
            "style-src 'unsafe-inline'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    return {
        "csp": Markup(csp),  # noqa: S704 - constants and hashes
        "style": Markup(style),  # noqa: S704 - the package's own CSS, inlined
        "uplot_js": Markup(uplot_js),  # noqa: S704 - vendored uPlot, inlined
        "report_js": Markup(report_js),  # noqa: S704 - the report's own script, inlined
    }


@functools.cache
def asset(name: str) -> str:
    """The text of ``_assets/<name>``."""
    return (resources.files(__package__) / "_assets" / name).read_text(encoding="utf-8")


def inline(text: str, element: str) -> str:
    """Text that cannot close its <script> or <style> element (``</script`` never occurs)."""
    return re.sub(rf"</(?={element})", r"<\\/", text, flags=re.IGNORECASE)


def script_hash(source: str) -> str:
    """The CSP source (``'sha256-...'``) that allows an inline script of ``source``."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{b64encode(digest).decode()}'"


# --- the charts' specs, as report.js reads them ------------------------------------------------


def series(
    label: str,
    values: list[float | None],
    color: str,
    *,
    dash: bool = False,
    fill: bool = False,
    span_gaps: bool = False,
    points: bool = False,
) -> dict[str, Any]:
    """One line of a chart: its label, colour, style and a value (or null) per x.

    ``points`` draws each value as a dot as well (a marker such as a search's answer).
    """
    return {
        "label": label,
        "color": color,
        "dash": dash,
        "fill": fill,
        "spanGaps": span_gaps,
        "points": points,
        "values": values,
    }


def chart(
    chart_id: str,
    title: str,
    caption: str,
    xs: Sequence[float],
    lines: list[dict[str, Any]],
    *,
    unit: str,
    x_kind: str = "seconds",
    x_unit: str = "",
) -> dict[str, Any]:
    """A chart's spec for report.js; series with no value at all are left out (nothing to draw).

    ``x_kind`` is ``"seconds"`` (time of the run), ``"percentile"`` (a log percentile axis:
    x = -log10(1 - p/100)) or ``"load"`` (a capacity search's offered load, in ``x_unit``).
    """
    drawn = [s for s in lines if any(v is not None for v in s["values"])]
    return {
        "id": chart_id,
        "title": title,
        "caption": caption,
        "xKind": x_kind,
        "xUnit": x_unit,
        "unit": unit,
        "x": list(xs) if drawn else [],
        "series": drawn,
    }
