"""Construction: settings, environment fallbacks, regions, and what is refused before sending."""

from __future__ import annotations

import math
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from polyai_async import (
    REGIONS,
    ConfigurationError,
    PolyAIClient,
    PoolLimits,
    RetryPolicy,
    SessionPool,
    Timeouts,
)
from tests.conftest import CREDS
from tests.servers import CREATED, REPLY, RawServer, answer, served


@pytest.mark.parametrize(
    ("argument", "variable"),
    [
        ("api_key", "POLYAI_API_KEY"),
        ("token", "POLYAI_TOKEN"),
        ("account_id", "POLYAI_ACCOUNT_ID"),
        ("project_id", "POLYAI_PROJECT_ID"),
    ],
)
def test_missing_setting_names_argument_and_variable(argument: str, variable: str) -> None:
    """A missing setting raises ConfigurationError naming both the argument and its variable."""
    kwargs = {k: v for k, v in CREDS.items() if k != argument}
    with pytest.raises(ConfigurationError, match=f"{argument}.*{variable}"):
        PolyAIClient(**kwargs)


def test_settings_fall_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each setting is read from its POLYAI_* variable when the argument is not given."""
    monkeypatch.setenv("POLYAI_API_KEY", "env-key")
    monkeypatch.setenv("POLYAI_TOKEN", "env-token")
    monkeypatch.setenv("POLYAI_ACCOUNT_ID", "ACCOUNT-env")
    monkeypatch.setenv("POLYAI_PROJECT_ID", "PROJECT-env")
    monkeypatch.setenv("POLYAI_REGION", "euw-1")
    client = PolyAIClient()
    assert client.account_id == "ACCOUNT-env"
    assert client.project_id == "PROJECT-env"
    assert str(client.base_url) == "https://api.euw-1.platform.polyai.app"
    assert client._headers["X-API-KEY"] == "env-key"
    assert client._headers["X-TOKEN"] == "env-token"


def test_base_url_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """POLYAI_BASE_URL overrides the region's host."""
    monkeypatch.setenv("POLYAI_BASE_URL", "http://127.0.0.1:9999")
    client = PolyAIClient(**CREDS)
    assert str(client._respond.url) == "http://127.0.0.1:9999/v1/ACCOUNT-1/PROJ-1/chat/respond"


def test_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit argument is used even when the variable is set."""
    monkeypatch.setenv("POLYAI_ACCOUNT_ID", "ACCOUNT-env")
    assert PolyAIClient(**CREDS).account_id == "ACCOUNT-1"


HOSTS = {
    "us-1": "https://api.us-1.platform.polyai.app",
    "uk-1": "https://api.uk-1.platform.polyai.app",
    "euw-1": "https://api.euw-1.platform.polyai.app",
    "studio": "https://api.studio.poly.ai",
}


def test_regions_are_the_documented_ones() -> None:
    """REGIONS lists exactly the hosts the API documents, the self-serve Studio included."""
    assert dict(REGIONS) == HOSTS


@pytest.mark.parametrize("region", sorted(HOSTS))
def test_regions_map_to_their_hosts(region: str) -> None:
    """Each documented region maps to its API host."""
    client = PolyAIClient(**CREDS, region=region)
    assert str(client._create.url) == f"{HOSTS[region]}/v1/ACCOUNT-1/PROJ-1/chat/create"


def test_default_region_is_us_1() -> None:
    """With no region anywhere, us-1 is used."""
    assert PolyAIClient(**CREDS).base_url.host == "api.us-1.platform.polyai.app"


def test_unknown_region_lists_valid_ones() -> None:
    """An unknown region is refused with the list of valid regions."""
    with pytest.raises(ConfigurationError, match="us-1, uk-1, euw-1"):
        PolyAIClient(**CREDS, region="mars-1")


def test_base_url_with_prefix_keeps_it() -> None:
    """A base_url with a path (a proxy) keeps that path before the API path."""
    client = PolyAIClient(**CREDS, base_url="https://proxy.example/polyai")
    assert str(client._close.url) == "https://proxy.example/polyai/v1/ACCOUNT-1/PROJ-1/chat/close"


@pytest.mark.parametrize("url", ["http://api.example.com", "http://10.0.0.5:8080"])
def test_plain_http_to_remote_host_is_refused(url: str) -> None:
    """Plain http to a non-loopback host is refused: it would send the key in clear."""
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        PolyAIClient(**CREDS, base_url=url)


def test_plain_http_allowed_when_opted_in() -> None:
    """allow_insecure_http=True lets a plain http base_url through."""
    client = PolyAIClient(**CREDS, base_url="http://api.example.com", allow_insecure_http=True)
    assert client.base_url.scheme == "http"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8"])
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    """A fake server on loopback needs no opt-in."""
    assert PolyAIClient(**CREDS, base_url=url).base_url.scheme == "http"


@pytest.mark.parametrize("url", ["ftp://x", "not a url", "https://h/?q=1", "/relative"])
def test_bad_base_url_is_refused(url: str) -> None:
    """A base_url that is not an absolute http(s) origin is refused."""
    with pytest.raises(ConfigurationError, match="base_url"):
        PolyAIClient(**CREDS, base_url=url)


@pytest.mark.parametrize("value", ["a/b", "..", ".", "x?y", "x#y", "a\r\nb", "", "a b", "%2F"])
@pytest.mark.parametrize("argument", ["account_id", "project_id", "version"])
def test_path_segments_cannot_change_the_target(argument: str, value: str) -> None:
    """An id with /, .., ?, #, CR/LF or % is refused before any request."""
    kwargs: dict[str, Any] = {**CREDS, argument: value}
    with pytest.raises(ConfigurationError, match=argument):
        PolyAIClient(**kwargs)


@pytest.mark.parametrize("argument", ["api_key", "token"])
@pytest.mark.parametrize("value", ["abc\r\nX-Evil: 1", "abc\n", "   "])
def test_header_values_with_line_breaks_are_refused(argument: str, value: str) -> None:
    """A credential with CR/LF (header injection) or only spaces is refused at construction."""
    with pytest.raises(ConfigurationError, match=argument) as info:
        PolyAIClient(**{**CREDS, argument: value})
    assert value.strip() == "" or value not in str(info.value)


def test_repr_never_shows_secrets() -> None:
    """Neither the API key nor the token appears in the client's repr."""
    client = PolyAIClient(**CREDS)
    text = repr(client)
    assert "key-123" not in text
    assert "tok-456" not in text
    assert "ACCOUNT-1" in text


def test_timeout_accepts_a_number() -> None:
    """timeout=2.5 bounds both connecting and reading."""
    client = PolyAIClient(**CREDS, timeout=2.5)
    assert client.timeouts == Timeouts(connect=2.5, read=2.5)


@pytest.mark.parametrize("bad", [0, -1, "5", True])
def test_bad_timeouts_are_refused(bad: object) -> None:
    """A non-positive or non-numeric timeout is refused."""
    with pytest.raises(ConfigurationError, match=r"timeout|seconds"):
        PolyAIClient(**CREDS, timeout=bad)  # type: ignore[arg-type]


def test_configuration_is_frozen_and_evolvable() -> None:
    """Configuration objects are frozen; attrs.evolve makes a changed copy."""
    import attrs

    policy = RetryPolicy()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    assert attrs.evolve(policy, max_attempts=1).max_attempts == 1
    assert attrs.evolve(PoolLimits(), max_connections=7).max_connections == 7


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"deadline": 0}, {"initial_backoff": -1}, {"retry_statuses": {200}}],
)
def test_bad_retry_policy_is_refused(kwargs: dict[str, object]) -> None:
    """A RetryPolicy that cannot work is refused with a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_pool_and_limits_are_exclusive() -> None:
    """A shared pool keeps its own limits, so passing both is an error."""
    with pytest.raises(ConfigurationError, match="limits or pool"):
        PolyAIClient(**CREDS, pool=SessionPool(), limits=PoolLimits())


def test_connector_options_cannot_override_limits() -> None:
    """Connector options may not silently replace the PoolLimits."""
    with pytest.raises(ConfigurationError, match="limit"):
        SessionPool(connector_options={"limit": 5})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"retry": {"max_attempts": 3}}, "retry must be a RetryPolicy"),
        ({"max_response_bytes": "1MB"}, "max_response_bytes must be a whole number"),
        ({"max_response_bytes": True}, "max_response_bytes must be a whole number"),
        ({"max_response_bytes": 0}, "max_response_bytes must be at least 1"),
        ({"pool": object()}, "pool must be a SessionPool"),
        ({"limits": PoolLimits(), "pool": SessionPool()}, "limits or pool"),
    ],
)
def test_bad_client_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    """Arguments of the wrong kind are refused at construction, saying which and how."""
    with pytest.raises(ConfigurationError, match=match):
        PolyAIClient(**CREDS, **kwargs)


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("argument", ["api_key", "token"])
@pytest.mark.parametrize(
    "value",
    [
        "key\x01value",
        "key\x1b[31mvalue",
        "key\x0bvalue",
        "key\x7fvalue",
        "key\x00value",
        "key\x85value",
        "key\u2028value",
        "key\u00e9value",
        " leading-space",
        "trailing-tab\t",
    ],
)
async def test_credentials_must_be_http_field_values(argument: str, value: str) -> None:
    """4: a character an HTTP field value cannot hold is refused at construction, named."""
    async with RawServer() as server:
        with pytest.raises(ConfigurationError, match=argument) as info:
            PolyAIClient(**{**CREDS, argument: value, "base_url": server.url})
    assert value.strip() not in str(info.value)
    assert server.requests == 0


async def test_credentials_with_inner_spaces_are_sent() -> None:
    """4: visible ASCII with inner spaces is a valid field value and is sent unchanged."""
    async with served(answer(REPLY)) as server:
        async with PolyAIClient(**{**CREDS, "token": "a b~!"}, base_url=server.url) as client:
            await client.respond("C", "hi")
    assert server.requests[0][2]["X-TOKEN"] == "a b~!"


@pytest.mark.parametrize(
    ("make", "kwargs", "field"),
    [
        (RetryPolicy, {"deadline": NAN}, "deadline"),
        (RetryPolicy, {"deadline": INF}, "deadline"),
        (RetryPolicy, {"initial_backoff": NAN}, "initial_backoff"),
        (RetryPolicy, {"max_backoff": NAN}, "max_backoff"),
        (RetryPolicy, {"max_backoff": INF}, "max_backoff"),
        (RetryPolicy, {"max_retry_after": NAN}, "max_retry_after"),
        (RetryPolicy, {"max_retry_after": "5"}, "max_retry_after"),
        (RetryPolicy, {"max_attempts": 2.0}, "max_attempts"),
        (RetryPolicy, {"max_attempts": True}, "max_attempts"),
        (RetryPolicy, {"retry_statuses": {"500"}}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": 500}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": "500"}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": {True}}, "retry_statuses"),
        (RetryPolicy, {"retry_statuses": {302}}, "retry_statuses"),
        (RetryPolicy, {"retry_budget": "5"}, "retry_budget"),
        (RetryPolicy, {"retry_budget": True}, "retry_budget"),
        (RetryPolicy, {"retry_budget": 5.5}, "retry_budget"),
        (RetryPolicy, {"retry_budget": -1}, "retry_budget"),
        (RetryPolicy, {"retry_ambiguous": "no"}, "retry_ambiguous"),
        (RetryPolicy, {"retry_ambiguous": 0}, "retry_ambiguous"),
        (Timeouts, {"connect": NAN}, "connect"),
        (Timeouts, {"read": INF}, "read"),
        (Timeouts, {"read": "30"}, "read"),
        (Timeouts, {"connect": True}, "connect"),
        (PoolLimits, {"max_connections": NAN}, "max_connections"),
        (PoolLimits, {"max_connections": "100"}, "max_connections"),
        (PoolLimits, {"keepalive_timeout": INF}, "keepalive_timeout"),
        (PoolLimits, {"keepalive_timeout": NAN}, "keepalive_timeout"),
        (PoolLimits, {"dns_ttl": True}, "dns_ttl"),
        (SessionPool, {"limits": "many"}, "limits"),
        (SessionPool, {"trace_configs": "trace"}, "trace_configs"),
        (SessionPool, {"trace_configs": [object()]}, "trace_configs"),
        (SessionPool, {"connector_options": [("ssl", False)]}, "connector_options"),
        (PolyAIClient, {**CREDS, "timeout": NAN}, "timeout"),
        (PolyAIClient, {**CREDS, "timeout": INF}, "timeout"),
        (PolyAIClient, {**CREDS, "allow_insecure_http": "no"}, "allow_insecure_http"),
        (PolyAIClient, {**CREDS, "version": 1}, "version"),
        (PolyAIClient, {**CREDS, "base_url": 8080}, "base_url"),
        (PolyAIClient, {**CREDS, "max_response_bytes": NAN}, "max_response_bytes"),
    ],
)
def test_every_configuration_field_refuses_nonsense(
    make: Callable[..., object], kwargs: dict[str, Any], field: str
) -> None:
    """7: a wrong type, NaN or infinity is a ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError, match=field):
        make(**kwargs)


async def test_nan_deadline_cannot_make_a_call_hang() -> None:
    """7: deadline=nan (which turned the per-attempt timeout off) is refused; nothing is sent."""
    async with RawServer(["hang"]) as server:
        with pytest.raises(ConfigurationError, match="deadline"):
            PolyAIClient(**CREDS, base_url=server.url, retry=RetryPolicy(deadline=NAN))
    assert server.requests == 0


async def test_close_after_handoff_must_be_a_bool() -> None:
    """7: conversation(close_after_handoff="no") is refused before anything is sent."""
    async with served(answer(CREATED)) as server:
        async with PolyAIClient(**CREDS, base_url=server.url) as client:
            with pytest.raises(ConfigurationError, match="close_after_handoff"):
                async with client.conversation(close_after_handoff="no"):  # type: ignore[arg-type]
                    pass
    assert server.requests == []


class LoopbackResolver(AbstractResolver):
    """Resolves every host name to a port on 127.0.0.1 (so a region's host is a local server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


STUDIO_HOST = "api.studio.poly.ai"


@pytest.fixture
def studio_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for api.studio.poly.ai, made with openssl."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments, openssl from PATH
        [
            # An EC P-256 key: as good for TLS as RSA, and made in a millisecond, not 0.1-0.6 s.
            *("openssl", "req", "-x509", "-newkey", "ec", "-nodes", "-days", "1"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-subj", f"/CN={STUDIO_HOST}", "-addext", f"subjectAltName=DNS:{STUDIO_HOST}"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_studio_region_reaches_its_host_over_tls(studio_cert: tuple[Path, Path]) -> None:
    """18: region="studio" connects to api.studio.poly.ai, verifying its certificate."""
    host = STUDIO_HOST
    cert, key = studio_cert
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.host, request.path))
        return web.json_response(CREATED)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    resolver = LoopbackResolver(runner.addresses[0][1])
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        pool = SessionPool(connector_options={"resolver": resolver, "ssl": trusted})
        async with pool, PolyAIClient(**CREDS, region="studio", pool=pool) as client:
            created = await client.create_chat()
    finally:
        await runner.cleanup()
    assert created.conversation_id == "CONV-1"
    assert resolver.asked == [host]
    assert seen == [(host, "/v1/ACCOUNT-1/PROJ-1/chat/create")]


def test_studio_region_is_the_self_serve_host() -> None:
    """18: region="studio" sends to https://api.studio.poly.ai; unknown regions list it."""
    client = PolyAIClient(**CREDS, region="studio")
    assert str(client.base_url) == "https://api.studio.poly.ai"
    assert REGIONS["studio"] == "https://api.studio.poly.ai"
    with pytest.raises(ConfigurationError, match=r"us-1, uk-1, euw-1, studio"):
        PolyAIClient(**CREDS, region="eu")
