r"""The one place that knows the secrets and hides them from every output.

What it hides, wherever the text goes (an error message, a log line, the terminal, a JSON, CSV
or HTML report, what the Locust bridge hands Locust):

- the credentials of every ``PolyAIClient`` made in this process (API key, connector token,
  proxy password): the client hands them to ``remember`` when it is made;
- the value of every ``POLYAI_*`` environment variable named like a secret (``KEY``, ``TOKEN``,
  ``SECRET``, ``PASSWORD``, ``PASSWD``, ``AUTH``, ``CREDENTIAL``, ``COOKIE``), and the password
  of the proxy variables (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``);
- by shape, in any text: a URL's userinfo (``https://user:pass@host`` shows as
  ``https://***@host``), the credential after ``Bearer`` or ``Basic``, and the value after
  ``X-API-KEY:`` or ``X-TOKEN:``;
- in a mapping (a report's settings), the value of a key named like a credential
  (``api_key``, ``proxy_password``, ``auth``...), whatever it holds.

A secret is looked for in every form an output may hold it (as it is, JSON-escaped,
HTML-escaped, percent-encoded, or as ``repr`` shows it) and replaced by ``***``. ``redact_value``
works on values *before* they are encoded, walking dicts, lists and tuples, so a credential
holding ``"`` or ``\`` is still found and no output is corrupted: a JSON report still parses, a
CSV keeps its columns. Secrets shorter than ``MIN_SECRET_LENGTH`` characters are not searched
for: hiding every ``"ab"`` would garble the text without protecting anything worth the name.

``visible`` shows control characters (C0 and C1, except newline and tab) as escapes such as
``\x1b``, so server text printed on a terminal cannot drive it (OSC 52 clipboard writes, window
titles, clearing the screen).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, unquote, urlsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "RedactingFormatter",
    "forget",
    "known_secrets",
    "redact",
    "redact_value",
    "redactor",
    "remember",
    "safe_text",
    "visible",
]

T = TypeVar("T")

#: What a hidden secret shows as.
MASK = "***"
#: Secrets shorter than this are not searched for (see the module docstring).
MIN_SECRET_LENGTH = 4
# How many credentials remembered from clients are kept (the most recent): a process that
# makes clients with ever new keys must not grow without bound.
_REMEMBERED_MAX = 256
_remembered: dict[str, None] = {}
# Bumped whenever _remembered changes: known_secrets is cached on it and on the environment.
_generation = [0]

# POLYAI_* variables whose value is a secret, by the words of their name.
_SECRET_VARIABLE = re.compile(
    r"KEY|TOKEN|SECRET|PASSW(?:OR)?D|PWD|AUTH|CREDENTIAL|COOKIE|SIGNATURE", re.IGNORECASE
)
_PROXY_VARIABLES = frozenset({"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"})
_PROXY_BYTES = frozenset(n.encode() for n in (*_PROXY_VARIABLES, *map(str.lower, _PROXY_VARIABLES)))

# A mapping key naming a credential, as a whole word of a snake_case or kebab-case name
# ("api_key", "proxy_password", "X-API-KEY", "auth"; not "AuthenticationError", not "key").
_SECRET_KEY = re.compile(
    r"(?:^|[_\-.\s])(?:api[_-]?key|apikey|x[_-]api[_-]key|token|x[_-]token|secret|"
    r"passw(?:or)?d|passwd|pwd|auth|authorization|credentials?|cookie|bearer|"
    r"private[_-]?key|signature|session[_-]?id)(?:$|[_\-.\s])",
    re.IGNORECASE,
)
# By shape, in any text: a URL's userinfo, a bearer or basic credential, a credential header.
_USERINFO = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://)[^/\s@?#\"'<>]+@", re.IGNORECASE)
_SCHEME_CREDENTIAL = re.compile(r"(?P<head>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+", re.I)
_CREDENTIAL_HEADER = re.compile(
    r"(?P<head>\b(?:x-api-key|x-token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+", re.IGNORECASE
)
# C0 and C1 control characters (and DEL), except newline and tab.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED_CONTROLS = {"\r": "\\r", "\x0b": "\\v", "\x0c": "\\f", "\x08": "\\b", "\x00": "\\0"}


def remember(*secrets: str | None) -> None:
    """Hide these values from every output of this process from now on.

    The client calls it with its API key, token and proxy password when it is made.
    """
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH:
            if secret not in _remembered:
                _generation[0] += 1
            _remembered[secret] = None
    while len(_remembered) > _REMEMBERED_MAX:
        del _remembered[next(iter(_remembered))]


def forget() -> None:
    """Forget every remembered credential (tests start from nothing with it)."""
    _remembered.clear()
    _generation[0] += 1


def _proxy_password(value: str) -> str | None:
    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
    except ValueError:
        return None
    return unquote(parts.password) if parts.password else None


def _candidate_variables() -> tuple[tuple[Any, Any], ...]:
    """The POLYAI_* and proxy variables set now, as (name, value) pairs.

    Every error message is redacted, so this is on the path of every failed call: it reads
    ``os.environ``'s own mapping when it can (bytes on POSIX: nothing decoded, some 3 us
    instead of 15), else ``os.environ``.
    """
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict) and isinstance(next(iter(data), b""), bytes):  # POSIX
        return tuple(
            (key, value)
            for key, value in data.items()
            if key.startswith(b"POLYAI_") or key in _PROXY_BYTES
        )
    return tuple(
        (name, value)
        for name, value in os.environ.items()
        if name[:7].upper() == "POLYAI_" or name.upper() in _PROXY_VARIABLES
    )


def known_secrets() -> tuple[str, ...]:
    """Every secret known now: remembered ones and the environment's, longest first."""
    return _known(_candidate_variables(), _generation[0])


@functools.lru_cache(maxsize=8)
def _known(variables: tuple[tuple[Any, Any], ...], generation: int) -> tuple[str, ...]:
    found = set(_remembered)
    for raw_name, raw_value in variables:
        name = os.fsdecode(raw_name)
        value = os.fsdecode(raw_value)
        if name.upper() in _PROXY_VARIABLES:
            password = _proxy_password(value)
            if password:
                found.add(password)
        elif _SECRET_VARIABLE.search(name, 7):
            found.add(value)
    # Longest first, so a secret holding another is hidden whole.
    return tuple(
        sorted((s for s in found if len(s) >= MIN_SECRET_LENGTH), key=lambda s: (-len(s), s))
    )


def _forms(secret: str) -> set[str]:
    """``secret`` as each encoding an output may use would write it."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }
    for quoted in (html.escape(secret, quote=True), html.escape(secret, quote=False)):
        forms |= {quoted, quoted.replace("&#x27;", "&#39;"), quoted.replace("&quot;", "&#34;")}
    # ...and their HTML-escaped forms (a JSON-escaped secret quoted in an HTML page).
    forms |= {html.escape(form) for form in list(forms)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


@functools.lru_cache(maxsize=32)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms = sorted({f for s in secrets for f in _forms(s)}, key=lambda f: (-len(f), f))
    if not forms:
        return None
    return re.compile("|".join(re.escape(f) for f in forms))


def _redact_text(text: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is not None:
        text = pattern.sub(MASK, text)
    # Each shape is looked for only where its words are: most texts have none of them.
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    lower = text.lower()
    if "bearer" in lower or "basic" in lower:
        text = _SCHEME_CREDENTIAL.sub(lambda m: m["head"] + MASK, text)
    if "x-api-key" in lower or "x-token" in lower:
        text = _CREDENTIAL_HEADER.sub(lambda m: m["head"] + MASK, text)
    return text


def redact(text: str) -> str:
    """``text`` with every secret (see the module docstring) shown as ``***``."""
    return _redact_text(text, _pattern(known_secrets()))


def redactor() -> Callable[[str], str]:
    """``redact`` with the secrets known now looked up once, for several texts in a row."""
    return functools.partial(_redact_text, pattern=_pattern(known_secrets()))


def redact_value(value: T, *, terminal: bool = False, by_name: bool = True) -> T:
    """``value`` with every string in it redacted, dicts, lists and tuples walked.

    Keys are names (the report's own, a scenario's personas, error classes) and are kept as
    they are, so a credential that happens to be a field's name (``requests``) cannot change
    the report's shape; the value of a key named like a credential (``api_key``,
    ``proxy_password``, ``auth``) is hidden whole unless it is a number, a bool or None.
    Numbers and other values are kept as they are, so the result encodes as the input did.
    With ``terminal``, control characters in the strings are shown as escapes too
    (``visible``). With ``by_name=False`` no value is hidden whole for its key's name (for
    structures someone else reads, such as Locust's web UI, where a task or an option named
    ``login_token`` holds a dict its page needs): only the strings are redacted.
    """
    pattern = _pattern(known_secrets())
    if terminal:
        return _walk(value, lambda text: visible(_redact_text(text, pattern)), by_name)  # type: ignore[no-any-return]
    return _walk(value, lambda text: _redact_text(text, pattern), by_name)  # type: ignore[no-any-return]


def _walk(value: Any, clean: Callable[[str], str], by_name: bool = True) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        walked: dict[Any, Any] = {}
        for key, item in value.items():
            if (
                by_name
                and isinstance(key, str)
                and _SECRET_KEY.search(key)
                and item is not None
                and not isinstance(item, (bool, int, float))
            ):
                walked[key] = MASK
            else:
                walked[key] = _walk(item, clean, by_name)
        return walked
    if isinstance(value, list):
        return [_walk(item, clean, by_name) for item in value]
    if isinstance(value, tuple):
        return tuple(_walk(item, clean, by_name) for item in value)
    return value


def _escape(match: re.Match[str]) -> str:
    char = match[0]
    return _NAMED_CONTROLS.get(char) or f"\\x{ord(char):02x}"


def visible(text: str) -> str:
    r"""``text`` with C0 and C1 control characters but newline and tab shown as escapes.

    ``"\x1b]52;c;...\x07"`` (a write to the clipboard) prints as ``\x1b]52;c;...\x07``, inert.
    """
    return _CONTROL.sub(_escape, text)


def safe_text(text: str) -> str:
    """``text`` fit for a terminal: redacted, its control characters shown as escapes."""
    return visible(redact(text))


class RedactingFormatter(logging.Formatter):
    """A logging Formatter whose lines are redacted and show control characters as escapes.

    The record's exception, if any, is formatted as usual, then redacted with the rest.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The line as the base Formatter writes it, made safe."""
        return safe_text(super().format(record))
