"""Locust's own web UI and HTML report show ``--host`` without its password.

The environment keeps the real host: the master sends it to the workers in every spawn
message, and the users of a local run read it when they start. What Locust *shows* is
redacted on its way out, value by value before it is encoded
(``polyai_async._redact.redact_value``), so no escaping hides the password from it and no
page or answer is corrupted:

- the web UI's page: ``WebUI.update_template_args`` is wrapped, so ``template_args`` (the
  host field, the user classes' hosts, every other setting it shows) hold redacted values;
- Locust's HTML report (``--html`` and the web UI's report and its download): its template
  arguments, in ``locust.html.render_template_from``, the one function both are rendered
  with (Locust has no hook for the report; its ``get_html_report`` reads the host from the
  environment);
- the web UI's JSON answers (``/swarm`` echoes the host; ``/stats/requests``, ``/exceptions``
  and ``/logs`` quote failure texts and log lines) and the names of its downloads (their
  ``Content-Disposition`` holds the host).

The web UI's form is filled with the host as shown, and starting a test from it sends that
back: a host sent that is the shown form of the real one is put back to the real one before
Locust reads it. A new host typed in the form has its password remembered, hidden from then on.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, TypeVar

import locust.html
from flask import Response, request
from werkzeug.datastructures import ImmutableMultiDict
from yarl import URL

from .. import _redact

if TYPE_CHECKING:
    from locust.env import Environment

__all__ = ["hide_host_password", "remember_host_password"]

T = TypeVar("T")

_render = locust.html.render_template_from


def remember_host_password(host: str | None) -> None:
    """Hide the password of ``host`` (a ``user:password@`` URL) from every output from now on."""
    with contextlib.suppress(ValueError, TypeError):
        _redact.remember(URL(host or "").password)


def _shown(value: T) -> T:
    # Only the strings: a task or an option named like a credential keeps what the page needs.
    return _redact.redact_value(value, by_name=False)


def _render_redacted(file: str, *args: Any, **kwargs: Any) -> str:
    if "template_args" in kwargs:
        kwargs["template_args"] = _shown(kwargs["template_args"])
    text: str = _render(file, *args, **kwargs)
    return text


def hide_host_password(environment: Environment) -> None:
    """Make Locust's web UI and HTML report of this (master or local) process hide secrets."""
    remember_host_password(environment.host)
    locust.html.render_template_from = _render_redacted
    web_ui = environment.web_ui
    app = None if web_ui is None else web_ui.app
    if web_ui is None or app is None:
        return
    update = web_ui.update_template_args

    def update_template_args() -> None:
        update()
        web_ui.template_args = _shown(web_ui.template_args)

    web_ui.update_template_args = update_template_args  # type: ignore[method-assign]  # this UI only
    web_ui.template_args = _shown(web_ui.template_args)

    def keep_real_host() -> None:
        if request.endpoint != "locust.swarm" or "host" not in request.form:
            return
        sent = request.form["host"]
        hosts = (environment.host, *(user.host for user in environment.user_classes))
        for real in hosts:
            if isinstance(real, str) and real != sent and _redact.redact(real) == sent:
                request.form = ImmutableMultiDict(
                    [(k, real if k == "host" else v) for k, v in request.form.items(multi=True)]
                )
                return

    def redact_answer(response: Response) -> Response:
        if request.endpoint == "locust.swarm":
            remember_host_password(environment.host)
        disposition = response.headers.get("Content-Disposition")
        if disposition:
            response.headers["Content-Disposition"] = _redact.redact(disposition)
        if response.is_json and not response.direct_passthrough:
            answer = response.get_json(silent=True)
            shown = _shown(answer)
            if shown != answer:
                response.set_data(app.json.dumps(shown))
        return response

    app.before_request(keep_real_host)
    app.after_request(redact_answer)
