"""Secrets never leak (reprs, errors, logs); TLS is verified; requests cannot be redirected."""

from __future__ import annotations

import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from polyai_async import (
    APIConnectionError,
    AuthenticationError,
    PolyAIClient,
    PolyAIError,
    RetryPolicy,
    Timeouts,
)
from polyai_async.testing import FakePolyAI, Faults
from tests.client.test_retry import refused_port
from tests.servers import RawServer

API_KEY = "sk-live-SECRET-api-key-0123456789"
TOKEN = "tok-SECRET-connector-9876543210"
SECRETS = (API_KEY, TOKEN, "SECRET")


def assert_clean(text: str) -> None:
    """Fail if any secret appears in text."""
    for secret in SECRETS:
        assert secret not in text, f"secret leaked: {text[:200]}"


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
