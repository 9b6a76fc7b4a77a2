"""Configuration values, regions, and the checks that run before anything is sent."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import attrs
from yarl import URL

from ._errors import ConfigurationError, display_url

__all__ = ["REGIONS", "PoolLimits", "Timeouts"]

REGIONS: Mapping[str, str] = {
    "us-1": "https://api.us-1.platform.polyai.app",
    "uk-1": "https://api.uk-1.platform.polyai.app",
    "euw-1": "https://api.euw-1.platform.polyai.app",
    "studio": "https://api.studio.poly.ai",
}
"""The documented regions and their API hosts; a workspace lives in exactly one.

``studio`` is the self-serve Agent Studio (``https://studio.poly.ai``).
"""
DEFAULT_REGION = "us-1"

# A path segment that can only ever name one segment: no "/", "?", "#", "%", space or control
# character, and not "." or "..". Real ids look like "ACCOUNT-1a2b", "ws-x", "my-project".
_SEGMENT = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")


def _owner(instance: object) -> str:
    return type(instance).__name__


def _is_number(value: object) -> bool:
    """A real, finite int or float; never a bool (``True`` is not 1 second), NaN or infinity."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def positive_seconds(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _is_number(value) or not value > 0:
        raise ConfigurationError(
            f"{_owner(instance)}.{attribute.name} must be a finite number of seconds > 0, "
            f"got {value!r}"
        )


def seconds_or_zero(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _is_number(value) or value < 0:
        raise ConfigurationError(
            f"{_owner(instance)}.{attribute.name} must be a finite number of seconds >= 0, "
            f"got {value!r}"
        )


def check_bool(value: object, name: str) -> bool:
    """Refuse anything but True or False: ``"no"`` is truthy."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {type(value).__name__}")
    return value


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

    connect: float = attrs.field(default=5.0, validator=positive_seconds)
    read: float = attrs.field(default=30.0, validator=positive_seconds)

    @classmethod
    def coerce(cls, value: Timeouts | float | None) -> Timeouts:
        """Accept a Timeouts, a number of seconds for both bounds, or None for the defaults."""
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if not _is_number(value) or not value > 0:
            raise ConfigurationError(
                "timeout must be a finite number of seconds > 0 or a Timeouts, "
                f"got {value!r} ({type(value).__name__})"
            )
        return cls(connect=value, read=value)


def positive_int(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"{_owner(instance)}.{attribute.name} must be a whole number >= 1, got {value!r}"
        )


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
            Where requests go through aiohttp (a proxy, trace configs); the client's own
            connections look the host up each time they open one.
    """

    max_connections: int = attrs.field(default=100, validator=positive_int)
    keepalive_timeout: float = attrs.field(default=15.0, validator=positive_seconds)
    dns_ttl: int = attrs.field(default=10, validator=positive_int)


def setting(value: str | None, argument: str, variable: str, default: str | None = None) -> str:
    """Return the argument, else the environment variable, else the default."""
    if value is None:
        value = os.environ.get(variable) or default
    if value is None:
        raise ConfigurationError(
            f"{argument} is not set: pass {argument}=... or set the {variable} environment variable"
        )
    if not isinstance(value, str):
        raise ConfigurationError(f"{argument} must be a string, not {type(value).__name__}")
    return value


# RFC 9110 5.5: a field value is visible ASCII (and obs-text, which no credential needs),
# with spaces or tabs only inside it. Anything else would be refused by aiohttp on every
# call (control characters), split the header (CR, LF), or be changed in transit (edges).
_FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")


def check_header_value(value: str, argument: str) -> str:
    """Refuse a credential that is not a valid HTTP field value.

    The message names the argument, never the value: it is a secret.
    """
    if not value.strip():
        raise ConfigurationError(f"{argument} is empty")
    if _FIELD_VALUE.fullmatch(value) is None:
        if any(ch in value for ch in "\r\n\0"):
            problem = "contains a line break or NUL"
        elif value != value.strip():
            problem = "starts or ends with whitespace"
        elif not value.isascii():
            problem = "contains a character that is not ASCII"
        else:
            problem = "contains a control character"
        raise ConfigurationError(
            f"{argument} {problem}, which an HTTP header cannot carry; check how it was read"
        )
    return value


def check_segment(value: str, argument: str) -> str:
    """Refuse a path segment that could change the request's target."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{argument} must be a string, not {type(value).__name__}")
    if not _SEGMENT.fullmatch(value) or value in {".", ".."}:
        raise ConfigurationError(
            f"{argument}={value!r} is not a valid id: use letters, digits, '-', '_', '.' or '~'"
        )
    return value


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine: ``localhost`` or a loopback address."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_base_url(base_url: str | None, region: str, *, allow_insecure_http: bool) -> URL:
    """Pick the API origin from ``base_url`` or the region and check it."""
    if base_url is None:
        try:
            return URL(REGIONS[region])
        except KeyError:
            raise ConfigurationError(
                f"unknown region {region!r}: use one of {', '.join(REGIONS)}, "
                "or pass base_url for any other host"
            ) from None
    shown = display_url(base_url)  # never the password of a user:password@host URL
    try:
        url = URL(base_url)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"base_url {shown} is not a URL: pass a string such as https://host:port"
        ) from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ConfigurationError(
            f"base_url {shown!r} must be an absolute http(s) URL such as https://host:port"
        )
    if url.query_string or url.fragment:
        raise ConfigurationError(f"base_url {shown!r} must not have a query or fragment")
    if url.scheme == "http" and not allow_insecure_http and not is_loopback(url.host):
        raise ConfigurationError(
            f"base_url {shown!r} uses plain http to a non-loopback host, which would send the "
            "API key unencrypted: use https, or pass allow_insecure_http=True if you must"
        )
    return url
