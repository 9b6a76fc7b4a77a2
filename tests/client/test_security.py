"""Secrets never leak (reprs, errors, logs); TLS is verified; requests cannot be redirected."""

from __future__ import annotations

import gzip
import logging
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from polyai_async import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConfigurationError,
    PolyAIClient,
    PolyAIError,
    ResponseValidationError,
    RetryPolicy,
    Timeouts,
)
from polyai_async.testing import FakePolyAI, Faults
from tests.client.test_retry import refused_port
from tests.conftest import CREDS, FAST_RETRY, ONCE
from tests.servers import REPLY, RawServer, answer, served

API_KEY = "sk-live-SECRET-api-key-0123456789"
TOKEN = "tok-SECRET-connector-9876543210"
SECRETS = (API_KEY, TOKEN, "SECRET")


def assert_clean(text: str) -> None:
    """Fail if any secret appears in text."""
    for secret in SECRETS:
        assert secret not in text, f"secret leaked: {text[:200]}"


def assert_all_clean(texts: Iterable[str]) -> None:
    """Fail if any secret appears in any of ``texts``."""
    for text in texts:
        assert_clean(text)


def error_texts(error: BaseException) -> Iterator[str]:
    """Everything an error shows: message, repr, attributes, and the same for its chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(getattr(current, "__dict__", {}))
        yield repr(current.args)
        current = current.__cause__ or current.__context__


@pytest.fixture
async def fake() -> AsyncIterator[FakePolyAI]:
    """A fake server whose credentials are the secrets above."""
    async with FakePolyAI(api_key=API_KEY, token=TOKEN) as server:
        yield server


async def test_secrets_absent_from_every_repr(fake: FakePolyAI) -> None:
    """Client, pool, conversation and answers never show the key or token."""
    async with fake.client() as client, client.conversation() as chat:
        reply = await chat.send("hello")
        for obj in (client, client.pool, chat, reply, client.timeouts, client.retry_policy):
            assert_clean(repr(obj))
            assert_clean(str(obj))


async def test_secrets_absent_from_errors_and_their_chains(fake: FakePolyAI) -> None:
    """Errors of every kind, and the exceptions chained to them, never hold a secret."""
    errors: list[PolyAIError] = []
    async with fake.client(token="wrong-" + TOKEN) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.create_chat()
        errors.append(info.value)
    url = f"http://127.0.0.1:{refused_port()}"
    async with PolyAIClient(
        api_key=API_KEY,
        token=TOKEN,
        account_id="A",
        project_id="P",
        base_url=url,
        # Every attempt is made (the error chains the last), without the backoff between them.
        retry=RetryPolicy(initial_backoff=0, max_backoff=0),
    ) as client:
        with pytest.raises(APIConnectionError) as connection:
            await client.respond("C", "hi")
        errors.append(connection.value)
    async with RawServer(["hang", "reset", "half", "502"]) as raw:
        for _ in range(4):
            async with PolyAIClient(
                api_key=API_KEY,
                token=TOKEN,
                account_id="A",
                project_id="P",
                base_url=raw.url,
                retry=RetryPolicy(max_attempts=1),
                timeout=Timeouts(connect=1, read=0.2),
            ) as client:
                with pytest.raises(PolyAIError) as other:
                    await client.respond("C", "hi")
                errors.append(other.value)
    assert len({type(e) for e in errors}) >= 4
    for error in errors:
        for text in error_texts(error):
            assert_clean(text)


async def test_secrets_absent_from_logs_at_every_level(
    fake: FakePolyAI, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG, a run with retries and failures logs no secret."""
    caplog.set_level(logging.DEBUG)
    fake.faults = Faults(script=("500", "reset", "429", "malformed"), retry_after=0)
    async with fake.client(retry=RetryPolicy(initial_backoff=0, max_backoff=0)) as client:
        for _ in range(4):
            try:
                async with client.conversation() as chat:
                    await chat.send("hello")
            except PolyAIError:
                pass
    assert any("retrying" in r.getMessage() for r in caplog.records)
    assert_clean(caplog.text)
    for record in caplog.records:
        assert_clean(repr(record.args))


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [
        # An EC P-256 key: as good for TLS as RSA, and made in a millisecond, not 0.1-0.6 s.
        *("openssl", "req", "-x509", "-newkey", "ec", "-nodes", "-days", "1"),
        *("-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        *("-keyout", str(key), "-out", str(cert)),
    ]
    subprocess.run(  # noqa: S603 - fixed arguments, openssl from PATH
        command,
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified(self_signed: tuple[Path, Path]) -> None:
    """An https server with a certificate nobody vouches for is refused, nothing sent."""
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"success": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with PolyAIClient(
            api_key=API_KEY,
            token=TOKEN,
            account_id="A",
            project_id="P",
            base_url=f"https://127.0.0.1:{port}",
            retry=RetryPolicy(max_attempts=1),
        ) as client:
            with pytest.raises(APIConnectionError, match="certificate") as info:
                await client.close_chat("C")
        assert info.value.request_sent is False
        assert seen == []
    finally:
        await runner.cleanup()


async def test_real_regions_verify_tls() -> None:
    """The sessions for the real regions keep aiohttp's certificate verification on."""
    async with PolyAIClient(api_key=API_KEY, token=TOKEN, account_id="A", project_id="P") as c:
        session = c.pool.session(c.base_url.origin())
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert connector._ssl is True  # aiohttp's default: verify against the system CAs


PASSWORD = "pw-SECRET-in-the-url"


SECRET_CREDS: dict[str, Any] = {
    "api_key": API_KEY,
    "token": TOKEN,
    "account_id": "A",
    "project_id": "P",
}


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception reachable from it through __cause__ and __context__."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def shown(error: BaseException) -> Iterator[str]:
    """Everything a reporter could show of each exception in the chain."""
    for current in chain(error):
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield repr(getattr(current, "__dict__", {}))
        yield repr({name: getattr(current, name, None) for name in dir(current)})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_is_never_followed(status: int) -> None:
    """1: a 3xx is an APIStatusError with its status and Location, not followed, not retried."""
    async with served(answer(REPLY)) as elsewhere:
        target = f"{elsewhere.url}/steal"

        async def redirect(_: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": target})

        async with served(redirect) as origin:
            async with PolyAIClient(**SECRET_CREDS, base_url=origin.url, retry=FAST_RETRY) as c:
                with pytest.raises(APIStatusError) as info:
                    await c.respond("C", "hi")
    assert elsewhere.requests == []  # neither the credentials nor the body went there
    assert len(origin.requests) == 1  # not retried
    error = info.value
    assert error.status == status
    assert error.headers["Location"] == target
    assert error.attempts == 1
    assert "redirect" in str(error)
    assert target in str(error)


MALFORMED = {
    "bad-status-line": b"HTTP/1.1 abc Broken\r\nContent-Length: 2\r\n\r\n{}",
    "oversized-header": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "bad-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\n{}",
    "bad-chunked-framing": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n",
}


@pytest.mark.parametrize("reply", sorted(MALFORMED))
async def test_no_secret_reachable_from_an_error(reply: str) -> None:
    """2, 5: no exception reachable from ours holds the key, token or URL password anywhere."""
    async with RawServer([reply, reply], canned=MALFORMED) as server:
        url = server.url.replace("://", f"://user:{PASSWORD}@")
        retry = RetryPolicy(max_attempts=2, initial_backoff=0, max_backoff=0)
        async with PolyAIClient(**SECRET_CREDS, base_url=url, retry=retry) as client:
            with pytest.raises(PolyAIError) as info:
                await client.respond("C", "hi")
    assert isinstance(info.value, APIConnectionError)
    assert info.value.attempts == 2
    assert_all_clean(shown(info.value))
    assert "\n" not in str(info.value)


BOMB = b"0" * (16 * 1024 * 1024)  # 16 MiB of zeros: 16 KiB compressed


@pytest.mark.parametrize(
    ("encoding", "compress", "chunked"),
    [
        ("gzip", gzip.compress, False),
        ("deflate", zlib.compress, False),
        ("gzip", gzip.compress, True),
    ],
    ids=["gzip", "deflate", "gzip-chunked"],
)
async def test_compressed_answer_is_never_inflated(
    encoding: str, compress: Callable[[bytes], bytes], chunked: bool
) -> None:
    """3: no compression is asked for, and a compressed answer is held as sent: bounded."""
    packed = compress(BOMB)

    async def bomb(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Encoding": encoding, "Content-Type": "application/json"}
        )
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(packed)
        await response.prepare(request)
        await response.write(packed)
        await response.write_eof()
        return response

    async with served(bomb) as server:
        async with PolyAIClient(**CREDS, base_url=server.url, retry=ONCE) as client:
            with pytest.raises(ResponseValidationError) as info:
                await client.respond("C", "hi")
    assert server.requests[0][2]["Accept-Encoding"] == "identity"
    assert len(info.value.body) <= client.max_response_bytes
    assert len(info.value.body) <= len(packed)


async def test_userinfo_is_hidden_wherever_a_url_is_printed() -> None:
    """5: repr(client) and every error show ``***`` for a base_url's user and password."""
    async with RawServer(["close"]) as server:
        url = server.url.replace("://", f"://user:{PASSWORD}@")
        async with PolyAIClient(**CREDS, base_url=url, retry=ONCE) as client:
            text = repr(client)
            with pytest.raises(APIConnectionError) as info:
                await client.respond("C", "hi")
    assert "***@127.0.0.1" in text
    assert "user" not in text
    assert_all_clean([text, *shown(info.value)])
    for bad in (f"ftp://user:{PASSWORD}@host", f"http://user:{PASSWORD}@example.com/?q=1"):
        with pytest.raises(ConfigurationError) as refused:
            PolyAIClient(**CREDS, base_url=bad)
        assert_all_clean([str(refused.value)])
        assert "***@" in str(refused.value)
