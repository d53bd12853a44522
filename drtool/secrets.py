"""Secret values that cannot leak by accident, and URL credential stripping."""

from __future__ import annotations

import re
import urllib.parse


class Secret:
    """Holds a secret; repr/str never show it. Call reveal() at the one place it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


_USERINFO_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")
_QUERY_PASSWORD = re.compile(r"(?i)((?:[a-z]|%[0-9a-f]{2})+)=([^&\s]+)")
_QUERY_SECRET_KEYS = {"password", "passwd", "pwd", "secret", "token", "sslpassword"}
_KV_PASSWORD = re.compile(r"(?i)\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def redact(text: str) -> str:
    """Remove passwords from URLs, query strings and libpq key=value strings in `text`."""
    text = _USERINFO_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    text = _QUERY_PASSWORD.sub(_redact_query_value, text)
    return _KV_PASSWORD.sub(r"\1=***", text)


def _redact_query_value(m: re.Match) -> str:
    """key=value with the value hidden when the key, percent-decoded as libpq decodes it, names a secret."""
    key = m.group(1)
    decoded = urllib.parse.unquote(key).lower()
    return f"{key}=***" if any(k in decoded for k in _QUERY_SECRET_KEYS) else m.group(0)


def dsn_has_password(dsn: str) -> bool:
    """True when a libpq DSN (URL or key=value form) carries a password."""
    return redact(dsn) != dsn
