"""No secret and no stray byte reaches a report, a log or a terminal.

A loopback server quotes the API key and the token (one plain, one holding ``"`` and ``\\``)
in its 401, 429 and 500 bodies and headers, and its replies hold terminal control sequences.
bench runs against it with ``POLYAI_LOG=debug`` and every output, chat talks to it, and the
Locust bridge runs against it with a password in ``--host``: no output holds a secret, raw,
JSON-escaped or HTML-escaped, and the JSON still parses.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import html
import io
import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from polyai_async import APIStatusError, ConfigurationError, PolyAIClient, RetryPolicy
from polyai_async._errors import status_error
from polyai_async._redact import redact, redact_value, remember, visible
from polyai_async.load import render_html, write_csv, write_json
from tests.cli_runner import CliRunner
from tests.client.test_telemetry import Telemetry
from tests.locust.test_locust import free_port
from tests.proxy_server import ProxyServer

KEY = "sk-live-Pl41nKey0123456789"
TOKEN = 'tok"en\\Qu0te-98765'
PASSWORD = "h0st-pa55word"
SECRETS = (KEY, TOKEN, PASSWORD)
# A write to the clipboard (OSC 52), a window title, a clear screen, a C1 CSI.
ESCAPES = "\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J\x9b31m"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ACCOUNT = "ACCOUNT-test"
PROJECT = "PROJECT-test"
CREDENTIALS = {
    "POLYAI_API_KEY": KEY,
    "POLYAI_TOKEN": TOKEN,
    "POLYAI_ACCOUNT_ID": ACCOUNT,
    "POLYAI_PROJECT_ID": PROJECT,
}


def encodings(secret: str) -> set[str]:
    """``secret`` raw, JSON-escaped and HTML-escaped."""
    escaped = json.dumps(secret)[1:-1]
    return {
        secret,
        escaped,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
        html.escape(escaped),
    }


def assert_hidden(text: str, where: str) -> None:
    """No secret in ``text``, in any of its encodings."""
    for secret in SECRETS:
        for form in encodings(secret):
            assert form not in text, f"{where} shows {form!r}"


class QuotingServer:
    """A Chat API on 127.0.0.1, in a thread, that repeats the credentials it was sent.

    Requests take turns: a reply (quoting the key and token, with control sequences), a 401
    whose JSON ``error_message`` quotes them, a reply, a 429 whose HTML page quotes them
    HTML-escaped, a reply, a 500 whose JSON body quotes them (no ``error_message``: the
    client quotes the raw body, JSON-escaped). Every error quotes them in its headers and
    correlation id too. With ``errors=False`` every request gets its reply.
    """

    def __init__(self, *, errors: bool = True) -> None:
        self.errors = errors
        self.count = 0
        self.statuses: list[int] = []
        self.authorizations: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.ServerRunner | None = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        self.authorizations.append(request.headers.get("Authorization", ""))
        action = ("ok", "401", "ok", "429", "ok", "500")[self.count % 6] if self.errors else "ok"
        self.count += 1
        quoted = f"invalid key {KEY} for token {TOKEN}"
        headers = {
            "X-Echo-Key": KEY,
            "X-Echo-Token": TOKEN,
            "WWW-Authenticate": f'Bearer realm="{KEY}"',
            "X-PolyAI-Correlation-Id": f"corr-{KEY}",
        }
        if action == "ok":
            self.statuses.append(200)
            if request.path.endswith("/close"):
                return web.json_response({"success": True})
            return web.json_response(
                {
                    "conversation_id": f"CONV-{self.count}",
                    "response": f"Hello {ESCAPES} you sent {KEY} and {TOKEN}",
                    "end_conversation": False,
                }
            )
        status = int(action)
        self.statuses.append(status)
        if status == 401:
            return web.json_response(
                {"error_code": "BAD_KEY", "error_message": quoted}, status=401, headers=headers
            )
        if status == 429:
            page = f"<html><body><p>{html.escape(quoted)}</p></body></html>"
            return web.Response(
                text=page,
                status=429,
                content_type="text/html",
                headers={**headers, "Retry-After": "0"},
            )
        return web.json_response({"detail": quoted}, status=500, headers=headers)

    async def _start(self) -> None:
        self._runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def _run(self, coro: Any) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.result(timeout=30)

    def __enter__(self) -> QuotingServer:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._runner is not None:
                self._run(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()


@pytest.fixture
def quoting() -> Iterator[QuotingServer]:
    """A server that quotes the credentials back in its errors."""
    with QuotingServer() as server:
        yield server


# -- the redaction module ------------------------------------------------------------------------


def test_a_secret_is_found_in_every_encoding_and_the_json_still_parses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A credential holding a quote and a backslash is hidden raw, JSON- and HTML-escaped."""
    monkeypatch.setenv("POLYAI_TOKEN", TOKEN)
    monkeypatch.setenv("POLYAI_WEBHOOK_SECRET", "whs-0000-secret")
    escaped = json.dumps(TOKEN)[1:-1]
    summary = {
        "raw": f"token {TOKEN} end",
        "json": f'body {{"t": "{escaped}"}}',
        "html": f"<p>{html.escape(TOKEN)}</p>",
        "percent": "t=tok%22en%5CQu0te-98765",
        "env": "whs-0000-secret",
        "list": [f"x{TOKEN}", 3, None, True],
        "nested": {"deep": [TOKEN]},
    }
    shown: dict[str, Any] = redact_value(summary)
    text = json.dumps(shown)
    assert json.loads(text) == shown  # still JSON, same shape
    assert_hidden(text, "the summary")
    assert "tok%22en" not in text
    assert "whs-0000" not in text
    assert shown["raw"] == "token *** end"
    assert shown["list"][1:] == [3, None, True]
    assert shown["nested"] == {"deep": ["***"]}


def test_by_name_false_redacts_strings_but_keeps_values_named_like_credentials() -> None:
    """Locust's structures keep a task or an option named like a credential (its page reads
    them); the strings in them are still redacted."""
    remember(KEY)
    value = {"login_token": {"ratio": 0.5, "help": f"uses {KEY}"}, "api_key": "plain"}
    assert redact_value(value, by_name=False) == {
        "login_token": {"ratio": 0.5, "help": "uses ***"},
        "api_key": "plain",
    }
    assert redact_value(value) == {"login_token": "***", "api_key": "***"}


def test_a_credential_that_is_a_common_word_cannot_break_a_csv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Redacting values, not the encoded text, keeps every row's columns, even for ``t,r``."""
    monkeypatch.setenv("POLYAI_API_KEY", "requests")  # a column name
    summary = {"timeseries": [{"t": 0, "requests": 3}], "note": 'a "requests", b'}
    path = tmp_path / "run.csv"
    write_csv(summary, path)
    rows = list(csv.reader(path.read_text().splitlines()))
    assert len({len(row) for row in rows}) == 1
    assert rows[1][:3] == ["0", "", "3"]  # t, conversations_started, requests
    write_json(summary, tmp_path / "run.json")
    loaded = json.loads((tmp_path / "run.json").read_text())
    assert loaded["timeseries"] == [{"t": 0, "requests": 3}]  # the names stay
    assert loaded["note"] == 'a "***", b'


def test_a_secret_set_or_changed_in_the_environment_is_hidden_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The environment's secrets are read anew whenever a variable changes (no stale cache)."""
    assert redact("old-secret-1 new-secret-2") == "old-secret-1 new-secret-2"
    monkeypatch.setenv("POLYAI_SERVICE_TOKEN", "old-secret-1")
    assert redact("old-secret-1 new-secret-2") == "*** new-secret-2"
    monkeypatch.setenv("POLYAI_SERVICE_TOKEN", "new-secret-2")
    assert redact("old-secret-1 new-secret-2") == "old-secret-1 ***"
    monkeypatch.setenv("HTTPS_PROXY", "http://me:proxy-pass-3@proxy:3128")
    assert redact("proxy-pass-3") == "***"


def test_a_secret_near_the_end_of_a_quoted_body_is_not_cut_in_half() -> None:
    """Secrets are hidden before the message is cut to length: no prefix of one survives."""
    remember(KEY)
    body = ("x" * 190 + KEY).encode()
    error = status_error(503, "Service Unavailable", {}, body, what="respond")
    assert KEY[:5] not in str(error)
    assert "***" in str(error)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://alice:pw-123456@host:8443/x", "https://***@host:8443/x"),
        ("Authorization: Bearer eyJabc.def-ghi", "Authorization: Bearer ***"),
        ("Proxy-Authorization: Basic YWxpY2U6cHc=", "Proxy-Authorization: Basic ***"),
        ('{"X-API-KEY": "k-9999"}', '{"X-API-KEY": "***"}'),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_secrets_are_found_by_their_shape(text: str, shown: str) -> None:
    """URL userinfo, bearer and basic credentials and credential headers are hidden anywhere."""
    assert redact(text) == shown


def test_control_characters_show_as_escapes_but_newline_and_tab_stay() -> None:
    """C0 and C1 controls (OSC 52, a title, a clear screen, CSI) become visible escapes."""
    shown = visible(f"a\tb\n{ESCAPES}\r\x00")
    assert not CONTROL.search(shown)
    assert shown.startswith("a\tb\n\\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m")
    assert shown.endswith("\\r\\0")


# -- the client's own errors, warnings and log ------------------------------------------------


async def test_errors_warnings_logs_and_spans_mask_what_the_server_quotes(
    quoting: QuotingServer, caplog: pytest.LogCaptureFixture
) -> None:
    """str(error), repr(error), the retry warning, the debug log and the spans hide the key and
    token; error_message keeps what the server sent."""
    quoting.count = 1  # the 401 first
    policy = RetryPolicy(max_attempts=1)
    errors: list[APIStatusError] = []
    telemetry = Telemetry()
    with caplog.at_level(logging.DEBUG, logger="polyai_async"):
        async with PolyAIClient(
            api_key=KEY,
            token=TOKEN,
            account_id=ACCOUNT,
            project_id=PROJECT,
            base_url=quoting.url,
            retry=policy,
            **telemetry.options(),
        ) as client:
            for _ in range(3):  # the 401, then (after a reply) the 429 and the 500
                with pytest.raises(APIStatusError) as raised:
                    await client.create_chat()
                errors.append(raised.value)
                quoting.count += 1
            quoting.count = 3  # the 429 again, now retried once (a warning), then a reply
            retried = client.with_options(retry=RetryPolicy(max_attempts=2, initial_backoff=0))
            await retried.create_chat()
    assert [e.status for e in errors] == [401, 429, 500]
    for error in errors:
        assert "***" in str(error)
        assert_hidden(str(error), "str(error)")
        assert_hidden(repr(error), "repr(error)")
        assert_hidden(repr(error.args), "error.args")
    assert KEY in (errors[0].error_message or "")  # as received
    assert "retrying" in caplog.text
    assert_hidden(caplog.text, "the log")
    spans = telemetry.finished()
    assert any((s.attributes or {}).get("polyai.correlation_id") == "corr-***" for s in spans)
    for span in spans:
        assert_hidden(repr(dict(span.attributes or {})) + repr(span.status), "a span")


async def test_a_proxy_refusing_the_tunnel_is_a_configuration_error_naming_it() -> None:
    """HTTPS through a proxy that answers 407: one ConfigurationError naming the proxy, no retry."""
    async with ProxyServer(user="me", password="another") as proxy:
        async with PolyAIClient(
            api_key=KEY,
            token=TOKEN,
            account_id=ACCOUNT,
            project_id=PROJECT,
            base_url="https://127.0.0.1:9",
            proxy=f"http://me:{PASSWORD}@127.0.0.1:{proxy.port}",
        ) as client:
            with pytest.raises(ConfigurationError) as raised:
                await client.create_chat()
    message = str(raised.value)
    assert f"the proxy http://127.0.0.1:{proxy.port}" in message
    assert "407" in message
    assert "not valid HTTP" not in message
    assert proxy.refused == 1  # not retried
    assert_hidden(message, "the error")


# -- bench, every output ------------------------------------------------------------------------

SCENARIO = """\
name: quoted
personas:
  - name: asks
    turns:
      - say: Hello
        expect: {response_contains: "a reply this server never gives"}
      - say: Thanks
"""


@pytest.mark.usefixtures("cli_state")
def test_bench_outputs_hold_no_secret(
    quoting: QuotingServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Terminal, debug log, --json, --csv and --html: no key, no token, no control character."""
    bench = CliRunner(monkeypatch, capsys, command="bench")
    (tmp_path / "quoted.yaml").write_text(SCENARIO)
    outputs = {name: tmp_path / f"run.{name}" for name in ("json", "csv", "html")}
    done = bench(
        *("--base-url", quoting.url, "--scenario", str(tmp_path / "quoted.yaml")),
        *("--conversations", "12", "--concurrency", "3", "--retry-attempts", "2"),
        *("--deadline", "5", "--max-error-rate", "1"),
        *(arg for name, path in outputs.items() for arg in (f"--{name}", str(path))),
        env={**CREDENTIALS, "POLYAI_LOG": "debug"},
    )
    assert done.returncode == 0, done.stderr
    assert {401, 429, 500} <= set(quoting.statuses)
    summary = json.loads(outputs["json"].read_text())  # still JSON
    assert "***" in json.dumps(summary["errors_by_class"])  # there was something to hide
    assert summary["personas"]["asks"]["example_failure"]
    texts = {name: path.read_text() for name, path in outputs.items()}
    texts |= {"stdout": done.stdout, "stderr": done.stderr}
    for where, text in texts.items():
        assert_hidden(text, where)
    for where in ("stdout", "stderr"):
        assert not CONTROL.search(texts[where]), where
    # One handler: each debug line once, in the command's format, never a second copy.
    requests = [line for line in done.stderr.splitlines() if " -> " in line]
    assert requests, done.stderr
    assert all(line.startswith("polyai-async bench: debug: ") for line in requests)
    assert len(requests) == summary["requests"]


def test_the_html_report_hides_what_an_error_body_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error example quoting the key and token is masked in the HTML, as in the JSON."""
    monkeypatch.setenv("POLYAI_API_KEY", KEY)
    monkeypatch.setenv("POLYAI_TOKEN", TOKEN)
    example = f"create_chat failed: HTTP 401 - invalid key {KEY} for token {TOKEN}"
    page = render_html(
        {"errors_by_class": {"AuthenticationError": {"count": 1, "example": example}}}
    )
    assert_hidden(page, "the HTML")
    assert "invalid key *** for token ***" in page


# -- chat ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("cli_state")
def test_chat_shows_control_sequences_as_escapes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent reply with OSC 52, a title and a clear screen reaches the terminal inert."""
    chat = CliRunner(monkeypatch, capsys, command="chat")
    with QuotingServer(errors=False) as server:
        done = chat("--base-url", server.url, stdin="hi\n", env=CREDENTIALS)
    assert done.returncode == 0, done.stderr
    assert "\\x1b]52;c;ZXZpbA==\\x07" in done.stdout
    assert not CONTROL.search(done.stdout + done.stderr)
    assert_hidden(done.stdout + done.stderr, "chat")


def test_a_log_line_quoting_server_text_is_safe_in_the_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The command's log handler (serve's log too) redacts and shows controls as escapes."""
    from polyai_async.cli._common import OneLineHandler

    monkeypatch.setenv("POLYAI_API_KEY", KEY)
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    handler = OneLineHandler(logging.DEBUG)
    log = logging.getLogger("polyai_async.testing.redaction")
    log.addHandler(handler)
    try:
        log.warning("bad request %s from %s", f"{ESCAPES}{KEY}", "x")
    finally:
        log.removeHandler(handler)
    assert not CONTROL.search(out.getvalue())
    assert_hidden(out.getvalue(), "the log")
    assert "\\x1b]52;c;" in out.getvalue()


def test_the_polyai_log_handler_redacts_and_shows_controls_as_escapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside the command, POLYAI_LOG's own handler writes lines with no secret, no control."""
    from polyai_async import _logging

    monkeypatch.setenv("POLYAI_LOG", "info")
    monkeypatch.setenv("POLYAI_TOKEN", TOKEN)
    library = logging.getLogger("polyai_async")
    monkeypatch.setattr(_logging, "configured", [])
    monkeypatch.setattr(library, "handlers", [])
    monkeypatch.setattr(library, "level", library.level)
    _logging.configure_from_env()
    (handler,) = library.handlers
    record = library.makeRecord(
        "polyai_async", logging.WARNING, __file__, 1, "agent said %s", (f"{ESCAPES}{TOKEN}",), None
    )
    line = handler.format(record)
    assert not CONTROL.search(line)
    assert_hidden(line, "the POLYAI_LOG line")
    assert line.endswith("agent said \\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m***")


# -- the Locust bridge ---------------------------------------------------------------------------

LOCUSTFILE = """
from polyai_async.locust import PolyAIUser

class Chat(PolyAIUser):
    think_time = "10ms"
"""


def get(url: str, **form: str) -> tuple[str, dict[str, str]]:
    """GET ``url`` (POST ``form`` if any): the body and the headers."""
    data = urllib.parse.urlencode(form).encode() if form else None
    with urllib.request.urlopen(url, data=data, timeout=10) as answer:  # noqa: S310 - loopback
        return answer.read().decode(), dict(answer.headers)


def locust(*args: str, cwd: Path, name: str) -> subprocess.Popen[str]:
    """``python -m locust ARGS`` in ``cwd``, its output in ``NAME-out.txt`` and ``NAME-err.txt``."""
    with (cwd / f"{name}-out.txt").open("w") as out, (cwd / f"{name}-err.txt").open("w") as err:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "locust", "-f", "locustfile.py", *args],
            cwd=cwd,
            stdout=out,
            stderr=err,
            text=True,
            env={"PATH": "/usr/bin:/bin", **CREDENTIALS, "POLYAI_LOG": "debug"},
        )


def wait_for_workers(url: str, workers: int, process: subprocess.Popen[str]) -> None:
    """Wait until Locust's web UI at ``url`` answers and counts ``workers`` workers."""
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "locust exited before its web UI answered"
        with contextlib.suppress(OSError):
            if json.loads(get(f"{url}/worker-count")[0])["worker_count"] == workers:
                return
        assert time.monotonic() < deadline, "locust's web UI never answered, or no worker came"
        time.sleep(0.1)


def template_args(page: str) -> dict[str, Any]:
    """The settings Locust's web UI page (or its HTML report) holds as JSON."""
    start = page.index("templateArgs = ") + len("templateArgs = ")
    args: dict[str, Any] = json.JSONDecoder().raw_decode(page, start)[0]
    return args


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [0, 1], ids=["local", "master-and-worker"])
def test_the_locust_bridge_outputs_hold_no_secret(
    quoting: QuotingServer, tmp_path: Path, workers: int
) -> None:
    """--host with a password, a server quoting the key and token: the JSON and HTML reports,
    Locust's web UI (its page, the answer to starting a test from it, its stats and its
    report download), Locust's --html report, CSV stats and failures, and the logs hold no
    secret; the JSON parses. Starting the test from the form, which shows the host without
    its password, still runs the users (on the worker) on the real host."""
    (tmp_path / "locustfile.py").write_text(textwrap.dedent(LOCUSTFILE))
    host = quoting.url.replace("://", f"://user:{PASSWORD}@")
    shown_host = quoting.url.replace("://", "://***@")
    ui_port, master_port = free_port(), str(free_port())
    ui = f"http://127.0.0.1:{ui_port}"
    role = ("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", master_port)
    processes = [
        locust(
            *("--host", host, "--web-host", "127.0.0.1", "--web-port", str(ui_port)),
            *("--csv", "stats", "--only-summary", "--html", "locust.html"),
            *("--polyai-json", "polyai.json", "--polyai-html", "polyai.html"),
            *(role if workers else ()),
            cwd=tmp_path,
            name="locust",
        ),
        *(
            locust(
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                master_port,
                cwd=tmp_path,
                name=f"worker{n}",
            )
            for n in range(workers)
        ),
    ]
    web: dict[str, str] = {}
    try:
        wait_for_workers(ui, workers, processes[0])
        web["the web UI page"], _ = get(ui)
        assert template_args(web["the web UI page"])["host"] == shown_host
        # Start the test as the web UI's form does: with the host it shows.
        web["/swarm"], _ = get(
            f"{ui}/swarm", user_count="2", spawn_rate="2", host=shown_host, run_time="2s"
        )
        assert json.loads(web["/swarm"]) == {
            "success": True,
            "message": "Swarming started",
            "host": shown_host,
            "run_time": 2,
        }
        deadline = time.monotonic() + 30
        while True:
            web["/stats/requests"], _ = get(f"{ui}/stats/requests")
            stats = json.loads(web["/stats/requests"])
            if stats["state"] == "stopped" and stats["errors"]:
                break
            assert time.monotonic() < deadline, stats["state"]
            time.sleep(0.2)
        web["/exceptions"], _ = get(f"{ui}/exceptions")
        web["the report download"], headers = get(f"{ui}/stats/report?download=1")
        web["its file name"] = headers["Content-Disposition"]
        assert template_args(web["the report download"])["host"] == shown_host
    finally:
        processes[0].send_signal(signal.SIGINT)  # Ctrl-C: Locust writes --html and quits
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert (tmp_path / "polyai.json").exists(), (tmp_path / "locust-err.txt").read_text()
    report = json.loads((tmp_path / "polyai.json").read_text())
    assert report["base_url"] == shown_host
    assert report["errors_total"] > 0
    assert len(report["workers"]) == max(1, workers)
    assert template_args((tmp_path / "locust.html").read_text())["host"] == shown_host
    # The users ran on the real host: the password reached the server (as basic auth).
    basic = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert quoting.authorizations
    assert set(quoting.authorizations) == {basic}
    texts = {
        **web,
        **{p.name: p.read_text() for p in tmp_path.iterdir() if p.suffix in {".json", ".html"}},
        **{p.name: p.read_text() for p in tmp_path.glob("*.txt")},
        **{p.name: p.read_text() for p in tmp_path.glob("stats*.csv")},
    }
    assert {"stats_failures.csv", "locust.html", "locust-err.txt"} <= set(texts)
    for where, text in texts.items():
        assert_hidden(text, where)
