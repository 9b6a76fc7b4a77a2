"""Every error the client raises, and the one place transport failures are translated.

The hierarchy::

    PolyAIError
    ├── ConfigurationError          bad settings or arguments, raised before anything is sent
    ├── ClientClosedError           the client (or its pool) was closed
    ├── APIConnectionError          the transport failed: refused, reset, disconnected
    │   └── APITimeoutError         connect or read timeout, or the call's deadline
    ├── ResponseValidationError     a 2xx answer that is not the documented JSON
    └── APIStatusError              the API answered with an error status
        ├── BadRequestError         400
        ├── AuthenticationError     401
        ├── PermissionDeniedError   403
        ├── NotFoundError           404
        ├── ConversationEndedError  410 (also raised locally, with no request, by Conversation.send)
        ├── RateLimitError          429
        └── InternalServerError     5xx

Every error carries ``attempts``: the number of HTTP attempts the call made (0 when it was refused
before sending). No error message holds a secret: each is redacted when the error is made
(``_redact``: the client's key, token and proxy password, secrets from the environment, URL
userinfo, bearer tokens), also where it quotes a server that repeated them. The attributes
that keep what the server sent (``body``, ``error_message``, ``headers``) are as received.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import aiohttp
import orjson
from yarl import URL

from . import _wire
from ._redact import redact, redactor

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "ConversationEndedError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "PolyAIError",
    "RateLimitError",
    "ResponseValidationError",
]

CORRELATION_HEADER = "X-PolyAI-Correlation-Id"

# How much of a raw body, or of any text a server or aiohttp sent, an error message quotes:
# enough to recognise an HTML error page, never a 512 KiB error_message in every log line.
_BODY_EXCERPT = 200
_QUOTE_LIMIT = 200
# Runs of whitespace and control characters, which would break a one-line message.
_BREAKS = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]+")


def one_line(text: str, limit: int = _QUOTE_LIMIT, *, clean: Callable[[str], str] = redact) -> str:
    """``text`` on one line, at most ``limit`` characters, secrets hidden.

    Secrets are hidden first (so a cut cannot leave half of one); line breaks and control
    characters become single spaces; a longer text is cut and ends with an ellipsis. The
    whole text stays wherever it came from (``error.body``...). ``clean`` hides them: a
    caller quoting several pieces passes one ``redactor()`` to look the secrets up once.
    """
    text = _BREAKS.sub(" ", clean(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def display_url(url: object) -> str:
    """A URL fit to print: any user and password in it shown as ``***``."""
    if not isinstance(url, URL):
        try:
            url = URL(url)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return f"<{type(url).__name__} that is not a URL>"
    if url.raw_user is None and url.raw_password is None:
        return str(url)
    return str(url.with_user(None)).replace("://", "://***@", 1)


class PolyAIError(Exception):
    """The base of every error raised by polyai_async.

    Attributes:
        message: what went wrong and, where it can, what to do about it.
        attempts: HTTP attempts made by the call that failed (0 if nothing was sent).
    """

    attempts: int

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        # Whatever a message quotes, no secret this process knows reaches it.
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.attempts = attempts

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (after {self.attempts} attempts)"
        return self.message


class ConfigurationError(PolyAIError, ValueError):
    """A setting or argument is missing or invalid; the message says which and how to fix it."""


class ClientClosedError(PolyAIError):
    """The client or its session pool has been closed; make a new client."""


class APIConnectionError(PolyAIError):
    """The request could not be completed at the transport level.

    Attributes:
        request_sent: False only when the request provably never reached the server (the
            connection could not be made); True when the server may have processed it.
    """

    def __init__(self, message: str, *, request_sent: bool = True, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.request_sent = request_sent


class APITimeoutError(APIConnectionError):
    """A connect or read timeout, or the call's overall deadline, expired."""


class ResponseValidationError(PolyAIError):
    """A successful status came with a body that is not the documented JSON.

    Attributes:
        status: the HTTP status of the answer.
        body: the raw body, as received.
    """

    def __init__(self, message: str, *, status: int, body: bytes, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.status = status
        self.body = body


class APIStatusError(PolyAIError):
    """The API answered with an error status.

    Attributes:
        status: the HTTP status code.
        error_code: the API's ``error_code`` (for example ``CHAT_TIMEOUT``), if it sent one.
        error_message: the API's ``error_message``, if it sent one.
        correlation_id: the ``X-PolyAI-Correlation-Id`` header, or the body's ``error_id``;
            quote it to PolyAI support.
        body: the parsed JSON body if it was a JSON object, else the raw bytes.
        headers: the response headers (they never hold credentials).
        status_code: the status a subclass stands for (None on the base class).
    """

    status_code: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: str | None = None,
        error_message: str | None = None,
        correlation_id: str | None = None,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message, attempts=attempts)
        self.status = status
        self.error_code = error_code
        self.error_message = error_message
        self.correlation_id = correlation_id
        self.body = body
        self.headers: Mapping[str, str] = headers if headers is not None else {}

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked callers to wait (``Retry-After``/``retry-after-ms``), if any."""
        return parse_retry_after(self.headers)


# RFC 9110 5.6.7: IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") and the two obsolete forms
# a recipient must accept (RFC 850's "Sunday, 06-Nov-94 08:49:37 GMT" and asctime's
# "Sun Nov  6 08:49:37 1994"); ASCII only.
_HTTP_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
    r"|(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, [0-9]{2}-[A-Z][a-z]{2}-[0-9]{2} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 0-9][0-9] "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} [0-9]{4}",
    re.ASCII,
)


def _digits(value: str) -> int | None:
    """``1*DIGIT`` as RFC 9110 means it: ASCII digits only, nothing else ("1_0", "nan", "٣")."""
    return int(value) if value.isascii() and value.isdigit() else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    Only what RFC 9110 allows counts: a whole number of seconds (``1*DIGIT``) or an HTTP date
    for ``Retry-After``, a whole number for ``retry-after-ms``. Anything else is ignored, so
    the computed backoff applies.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        millis = _digits(ms.strip())
        if millis is not None:
            return millis / 1000
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    seconds = _digits(value)
    if seconds is not None:
        return float(seconds)
    if not _HTTP_DATE.fullmatch(value):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class BadRequestError(APIStatusError):
    """400: the request is invalid, or a chat code such as ``CHAT_TIMEOUT``; not retried."""

    status_code = 400


class AuthenticationError(APIStatusError):
    """401: the API key or connector token is missing or wrong."""

    status_code = 401


class PermissionDeniedError(APIStatusError):
    """403: the credentials may not use this account or project."""

    status_code = 403


class NotFoundError(APIStatusError):
    """404: the account, project or conversation does not exist."""

    status_code = 404


class ConversationEndedError(APIStatusError):
    """410: the conversation has already ended; start a new one."""

    status_code = 410


class RateLimitError(APIStatusError):
    """429: rate limited; the client retries after ``Retry-After`` within the deadline."""

    status_code = 429


class InternalServerError(APIStatusError):
    """5xx: the API failed; retried with backoff within the deadline."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConversationEndedError,
        RateLimitError,
    )
    if cls.status_code is not None
}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _fields(parsed: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(error_code, error_message, correlation id) from any of the three body shapes."""
    nested = parsed.get("error")
    if isinstance(nested, dict):
        # {"error": {"code", "id", "message", "correlation_id"}}: "id" is a number there.
        return (
            _text(nested.get("code")),
            _text(nested.get("message")),
            _text(nested.get("correlation_id")),
        )
    return (
        _text(parsed.get("error_code")),
        _text(parsed.get("error_message")) or _text(nested),
        _text(parsed.get("error_id")),
    )


def status_error(
    status: int, reason: str | None, headers: Mapping[str, str], raw: bytes, *, what: str
) -> APIStatusError:
    """Build the typed error for an error answer.

    The three documented body shapes parse; a body that is not a JSON object (an HTML page
    from a proxy) still yields the class its status calls for. The message quotes at most
    ``_QUOTE_LIMIT`` characters of anything the server sent, on one line; the attributes keep
    it whole. A 3xx is never followed: its message names where it pointed.
    """
    body: Mapping[str, Any] | bytes = raw
    error_code = error_message = error_id = None
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        body = parsed
        error_code, error_message, error_id = _fields(parsed)
    correlation_id = headers.get(CORRELATION_HEADER) or error_id
    if status >= 500:
        cls: type[APIStatusError] = InternalServerError
    else:
        cls = _STATUS_CLASSES.get(status, APIStatusError)
    detail = error_message
    if detail is None and raw:
        # More than is quoted: secrets are hidden before the cut, so none is cut in half.
        detail = raw[: _BODY_EXCERPT * 8].decode("utf-8", "replace")
    clean = redactor()
    parts = [
        f"{what} failed: HTTP {status}"
        + (f" {one_line(reason, 60, clean=clean)}" if reason else "")
    ]
    if status < 400:
        location = headers.get("Location")
        parts.append(
            f"- a redirect to {one_line(display_url(location), clean=clean)} was not followed "
            "(the API never redirects: check base_url)"
            if location
            else "- not an answer the API gives"
        )
    if error_code:
        parts.append(f"[{one_line(error_code, 60, clean=clean)}]")
    if detail and (detail := one_line(detail, clean=clean)):
        parts.append(f"- {detail}")
    if correlation_id:
        parts.append(f"(correlation id {one_line(correlation_id, 80, clean=clean)})")
    return cls(
        " ".join(parts),
        status=status,
        error_code=error_code,
        error_message=error_message,
        correlation_id=correlation_id,
        body=body,
        headers=headers,
    )


def detach(error: BaseException) -> None:
    """Cut every link from ``error``'s chain to an exception that is not ours.

    aiohttp's exceptions hold the request, and so the credentials, in ``request_info``. They
    are never chained on purpose, but Python sets ``__context__`` from whatever exception is
    being handled where ours is raised, and on Python 3.10 that can be one the event loop is
    handling a few frames up (the exception it woke the task with). So the client cuts them
    off on the way out: what stays reachable through ``__cause__`` and ``__context__`` is
    only ever a PolyAIError.
    """
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.__cause__ is not None:
            if isinstance(current.__cause__, PolyAIError):
                todo.append(current.__cause__)
            else:
                current.__cause__ = None
        if current.__context__ is not None:
            if isinstance(current.__context__, PolyAIError):
                todo.append(current.__context__)
            else:
                current.__context__ = None


#: What a request can raise below us; the client catches exactly these and translates them.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _failure(kind: str, what: str, detail: str = "") -> PolyAIError:
    """The error for a transport failure of ``kind``: the same words whichever path failed."""
    if kind == "connect-timeout":
        return APITimeoutError(
            f"{what} failed: timed out connecting to the server", request_sent=False
        )
    if kind == "certificate":
        return APIConnectionError(
            f"{what} failed: the server's TLS certificate was rejected ({detail})",
            request_sent=False,
        )
    if kind == "connect":
        return APIConnectionError(
            f"{what} failed: could not connect to {detail}", request_sent=False
        )
    if kind == "disconnected":
        return APIConnectionError(
            f"{what} failed: the server closed the connection before answering"
        )
    if kind == "broken":
        return APIConnectionError(
            f"{what} failed: the connection broke while reading the answer ({detail})"
        )
    # A status line, header or framing that could not be parsed: not an answer in HTTP.
    return APIConnectionError(f"{what} failed: the server's answer is not valid HTTP ({detail})")


# The client's own connections' failures, by kind (anything else is not valid HTTP).
_WIRE_KINDS: dict[type[_wire.WireError], str] = {
    _wire.ConnectTimeout: "connect-timeout",
    _wire.Certificate: "certificate",
    _wire.Disconnected: "disconnected",
    _wire.PayloadBroken: "broken",
}


def _wire_error(exc: _wire.WireError, what: str) -> PolyAIError:
    """A failure on the client's own connections (``_wire``)."""
    if isinstance(exc, _wire.ConnectFailed):
        return _failure("connect", what, f"{exc.host}:{exc.port} ({one_line(exc.reason)})")
    return _failure(_WIRE_KINDS.get(type(exc), "not-http"), what, one_line(str(exc)))


def transport_error(  # noqa: PLR0911 - a table
    exc: BaseException, what: str, *, proxy: URL | None = None
) -> PolyAIError:
    """Translate an aiohttp, asyncio or OS error into ours.

    The one place such exceptions are interpreted: above it, only PolyAIError is seen.
    ``asyncio.CancelledError`` is never passed here, so cancellation works as asyncio intends.
    The error returned must be raised without chaining ``exc``: aiohttp's exceptions hold the
    request, and so the credentials, in ``request_info``. Only a one-line, capped excerpt of
    their text is quoted. ``proxy`` is the proxy the request went through, if any: a proxy
    that refuses our login (407) is a ConfigurationError naming it (never its password), as
    no retry can fix it.
    """
    if isinstance(exc, _wire.WireError):
        return _wire_error(exc, what)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        where = "the proxy" if proxy is None else f"the proxy {display_url(proxy.origin())}"
        if exc.status == 407:
            return ConfigurationError(
                f"{what} failed: {where} answered HTTP 407 (Proxy Authentication Required): "
                "check the proxy's user and password"
            )
        return APIConnectionError(
            f"{what} failed: {where} refused to open a tunnel: HTTP {exc.status} "
            f"{one_line(exc.message, 60)}",
            request_sent=False,
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _failure("connect-timeout", what)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return APITimeoutError(f"{what} failed: timed out waiting for the answer")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _failure("certificate", what, one_line(str(exc.certificate_error)))
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _failure("connect", what, f"{exc.host}:{exc.port} ({one_line(str(exc.strerror))})")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _failure("disconnected", what)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return _failure("broken", what, one_line(str(exc)))
    if isinstance(exc, aiohttp.ClientResponseError):
        return _failure("not-http", what, one_line(exc.message))
    return APIConnectionError(
        f"{what} failed: {type(exc).__name__}: {one_line(str(exc)) or 'connection error'}"
    )
