"""proxy= and trust_env=True, against a loopback proxy; the proxy's password is never shown."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from polyai_async import (
    APIConnectionError,
    APIStatusError,
    ConfigurationError,
    PolyAIClient,
    PolyAIError,
    RetryPolicy,
    SessionPool,
)
from polyai_async.testing import FakePolyAI
from tests.conftest import CREDS
from tests.proxy_server import ProxyServer
from tests.servers import REPLY, answer, served

PASSWORD = "pr0xy-s3cret"
ONCE = RetryPolicy(max_attempts=1)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every exception reachable through __cause__ and __context__."""
    todo, seen = [error], set()
    while todo:
        current = todo.pop()
        if id(current) not in seen:
            seen.add(id(current))
            yield current
            todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def assert_no_password(error: BaseException) -> None:
    for current in chain(error):
        for text in (str(current), repr(current), repr(current.args), repr(vars(current))):
            assert PASSWORD not in text, text


async def test_calls_go_through_the_proxy_with_its_login(
    polyai_fake: FakePolyAI, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request is relayed by the proxy, which checked the login; the fake answered."""
    async with ProxyServer(user="me", password=PASSWORD) as proxy:
        proxied = f"http://me:{PASSWORD}@127.0.0.1:{proxy.port}"
        with caplog.at_level(logging.DEBUG, logger="polyai_async"):
            async with polyai_fake.client(proxy=proxied) as client:
                async with client.conversation() as chat:
                    await chat.send("hello")
                shown = [repr(client), repr(client.pool), str(client.pool)]
    assert proxy.refused == 0
    assert len(proxy.relayed) == 3
    assert all(url.startswith(polyai_fake.url) for url in proxy.relayed)
    assert polyai_fake.requests["respond"] == 1
    assert f"proxy=http://***@127.0.0.1:{proxy.port}" in shown[1]
    for text in [*shown, caplog.text]:
        assert PASSWORD not in text


async def test_a_wrong_login_is_a_407_that_shows_no_password(polyai_fake: FakePolyAI) -> None:
    """The proxy refuses a wrong password: APIStatusError 407, the password nowhere in it."""
    async with ProxyServer(user="me", password="another") as proxy:
        proxied = f"http://me:{PASSWORD}@127.0.0.1:{proxy.port}"
        async with polyai_fake.client(proxy=proxied, retry=ONCE) as client:
            with pytest.raises(APIStatusError) as raised:
                await client.create_chat()
    assert raised.value.status == 407
    assert proxy.refused == 1
    assert polyai_fake.requests["create"] == 0
    assert_no_password(raised.value)


async def test_an_unreachable_proxy_shows_no_password(polyai_fake: FakePolyAI) -> None:
    """A proxy that refuses connections: APIConnectionError, no password in the whole chain."""
    proxied = f"http://me:{PASSWORD}@127.0.0.1:9"
    async with polyai_fake.client(proxy=proxied, retry=ONCE) as client:
        with pytest.raises(APIConnectionError) as raised:
            await client.create_chat()
    assert_no_password(raised.value)


async def test_proxy_variables_need_trust_env(
    polyai_fake: FakePolyAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is ignored by default and followed with trust_env=True."""
    async with ProxyServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        async with polyai_fake.client() as client:
            await client.create_chat()
        assert proxy.relayed == []
        async with polyai_fake.client(trust_env=True) as client:
            await client.create_chat()
        assert len(proxy.relayed) == 1
    assert polyai_fake.requests["create"] == 2


async def test_no_proxy_is_honoured_with_trust_env(
    polyai_fake: FakePolyAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With trust_env=True a host in NO_PROXY is reached directly."""
    async with ProxyServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with polyai_fake.client(trust_env=True) as client:
            await client.create_chat()
    assert proxy.relayed == []
    assert polyai_fake.requests["create"] == 1


async def test_a_shared_pool_carries_the_proxy(polyai_fake: FakePolyAI) -> None:
    """SessionPool(proxy=...) sends every client's requests through it."""
    async with ProxyServer() as proxy, SessionPool(proxy=proxy.url) as pool:
        async with polyai_fake.client(pool=pool) as client:
            await client.create_chat()
    assert len(proxy.relayed) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"proxy": f"socks5://me:{PASSWORD}@host:1080"}, "must be an http:// or https:// URL"),
        ({"proxy": f"http://me:{PASSWORD}@host:3128/path"}, "just scheme, host and port"),
        ({"proxy": 3128}, "proxy must be a URL string"),
        ({"proxy": "http://p:1", "trust_env": True}, "not both"),
        ({"trust_env": "yes"}, "trust_env must be True or False"),
        ({"proxy": "http://p:1", "pool": "POOL"}, "pass proxy or pool, not both"),
    ],
)
async def test_bad_proxy_settings_are_refused(options: dict[str, object], message: str) -> None:
    """A wrong proxy setting is a ConfigurationError that never quotes the password."""
    if options.get("pool") == "POOL":
        options["pool"] = SessionPool()
    with pytest.raises(ConfigurationError, match=message) as raised:
        PolyAIClient(api_key="k", token="t", account_id="A", project_id="P", **options)  # type: ignore[arg-type]
    assert PASSWORD not in str(raised.value)
    assert isinstance(raised.value, PolyAIError)


async def test_proxy_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """19: HTTP(S)_PROXY and ALL_PROXY are not used (trust_env=False), by design."""
    async with served(answer({"proxied": True})) as proxy, served(answer(REPLY)) as api:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with PolyAIClient(**CREDS, base_url=api.url, retry=ONCE) as client:
            assert (await client.respond("C", "hi")).response == "hi"
    assert proxy.requests == []
    assert len(api.requests) == 1
