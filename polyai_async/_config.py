"""Configuration values, regions, and the checks that run before anything is sent."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs
from yarl import URL

from ._errors import ConfigurationError

__all__ = ["REGIONS", "PoolLimits", "Timeouts"]

REGIONS: Mapping[str, str] = {
    "us-1": "https://api.us-1.platform.polyai.app",
    "uk-1": "https://api.uk-1.platform.polyai.app",
    "euw-1": "https://api.euw-1.platform.polyai.app",
}
"""The documented regions and their API hosts; a workspace lives in exactly one."""
DEFAULT_REGION = "us-1"

# A path segment that can only ever name one segment: no "/", "?", "#", "%", space or control
# character, and not "." or "..". Real ids look like "ACCOUNT-1a2b", "ws-x", "my-project".
_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


def _positive_seconds(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be a positive number of seconds")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Bounds on each HTTP attempt; the retry policy's ``deadline`` bounds the whole call.

    An attempt may take ``read`` seconds in all (less if the deadline is nearer), and
    opening a new connection may take at most ``connect`` of them.

    Args:
        connect: seconds to open a TCP (and TLS) connection to the API.
        read: seconds one attempt may take to get its answer, connecting included; an agent
            may think for a while, so this is generous.
    """

    connect: float = attrs.field(default=5.0, validator=_positive_seconds)
    read: float = attrs.field(default=30.0, validator=_positive_seconds)

    @classmethod
    def coerce(cls, value: Timeouts | float | None) -> Timeouts:
        """Accept a Timeouts, a number of seconds for both bounds, or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(
                f"timeout must be a number of seconds or a Timeouts, not {type(value).__name__}"
            )
        return cls(connect=value, read=value)


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a whole number >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class PoolLimits:
    """Connection limits, applied to each region's (each host's) pool separately.

    Args:
        max_connections: most TCP connections open to one host at once. 100 is aiohttp's own
            default and what httpx allows: enough for hundreds of concurrent conversations
            (a request holds a connection only while in flight), few enough not to exhaust
            file descriptors. Load benchmarks raise it.
        keepalive_timeout: seconds an idle connection is kept for reuse. 15 s, below the 60 s
            idle timeout of common load balancers, so we close idle connections before the
            server does and rarely pick a dead one from the pool.
        dns_ttl: seconds a DNS answer is cached; short enough to follow a regional failover.
    """

    max_connections: int = attrs.field(default=100, validator=_positive_int)
    keepalive_timeout: float = attrs.field(default=15.0, validator=_positive_seconds)
    dns_ttl: int = attrs.field(default=10, validator=_positive_int)


def setting(value: str | None, argument: str, variable: str, default: str | None = None) -> str:
    """Return the argument, else the environment variable, else the default (private helper)."""
    if value is None:
        value = os.environ.get(variable) or default
    if value is None:
        raise ConfigurationError(
            f"{argument} is not set: pass {argument}=... or set the {variable} environment variable"
        )
    if not isinstance(value, str):
        raise ConfigurationError(f"{argument} must be a string, not {type(value).__name__}")
    return value


def check_header_value(value: str, argument: str) -> str:
    """Refuse a credential that is empty or could split a header line (private helper)."""
    if not value.strip():
        raise ConfigurationError(f"{argument} is empty")
    if any(ch in value for ch in "\r\n\0"):
        raise ConfigurationError(f"{argument} contains a line break or NUL; check how it was read")
    return value


def check_segment(value: str, argument: str) -> str:
    """Refuse a path segment that could change the request's target (private helper)."""
    if not _SEGMENT.fullmatch(value) or value in {".", ".."}:
        raise ConfigurationError(
            f"{argument}={value!r} is not a valid id: use letters, digits, '-', '_', '.' or '~'"
        )
    return value


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_base_url(base_url: str | None, region: str, *, allow_insecure_http: bool) -> URL:
    """Pick the API origin from ``base_url`` or the region and check it (private helper)."""
    if base_url is None:
        try:
            return URL(REGIONS[region])
        except KeyError:
            raise ConfigurationError(
                f"unknown region {region!r}: use one of {', '.join(REGIONS)}, "
                "or pass base_url for any other host"
            ) from None
    try:
        url = URL(base_url)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"base_url {base_url!r} is not a URL: {exc}") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigurationError(
            f"base_url {base_url!r} must be an absolute http(s) URL such as https://host:port"
        )
    if url.query_string or url.fragment:
        raise ConfigurationError(f"base_url {base_url!r} must not have a query or fragment")
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ConfigurationError(
            f"base_url {base_url!r} uses plain http to a non-loopback host, which would send the "
            "API key unencrypted: use https, or pass allow_insecure_http=True if you must"
        )
    return url
