"""HTTP request paths normalised for rule matching, and HTTP method tokens.

A rule's ``http_paths`` globs are an allowlist, so the path they see must be the path the
upstream will act on. ``normalize_http_path`` therefore resolves everything an upstream might
resolve (percent-encoded unreserved characters, ``.`` and ``..`` segments, empty segments) and
refuses, rather than guesses at, whatever upstreams disagree about: an encoded ``/`` or ``\\``,
control characters, double encoding, a ``..`` above the root, and a ``;params`` suffix on a
dot or empty segment (``/public/..;/admin`` is ``/admin`` to some servers). The proxy should
send the normalised form upstream, so the path checked is the path served.
"""

from __future__ import annotations

import re

MAX_PATH = 8192
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # RFC 9110 token
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# Encoded characters whose meaning upstreams disagree about: refused outright.
_REFUSED_ESCAPES = frozenset({"2F", "5C", "7F", *(f"{n:02X}" for n in range(0x20))})
_PARAMS = re.compile(r";|%3B", re.IGNORECASE)


def is_method_token(method: str) -> bool:
    """Whether ``method`` is a syntactically valid HTTP method (an RFC 9110 token)."""
    return bool(_TOKEN.match(method)) and len(method) <= 32


def _decode(path: str) -> str | None:
    """Percent-decode unreserved characters; upper-case the hex of every other escape; None
    for a malformed, refused or double-encoded escape, or a character outside visible ASCII."""
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "%":
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEX:
                return None
            pair = pair.upper()
            if pair in _REFUSED_ESCAPES:
                return None
            decoded = chr(int(pair, 16))
            if decoded in _UNRESERVED:
                out.append(decoded)
            elif pair == "25" and set(path[i + 3 : i + 5]) <= _HEX and len(path) >= i + 5:
                return None  # %25XX: decoded twice, this would be another escape
            else:
                out.append("%" + pair)
            i += 3
            continue
        if not "!" <= ch <= "~" or ch in "\\?#":
            return None
        out.append(ch)
        i += 1
    return "".join(out)


def normalize_http_path(path: str) -> str | None:
    """The canonical form of a request path (no query), or None when it cannot be normalised
    safely. The result starts with ``/``, has no empty, ``.`` or ``..`` segment, and keeps a
    trailing ``/`` when the request had one (``/a/b/.`` -> ``/a/b/``)."""
    if not path.startswith("/") or len(path) > MAX_PATH:
        return None
    decoded = _decode(path)
    if decoded is None:
        return None
    segments = decoded.split("/")[1:]
    resolved: list[str] = []
    trailing = False
    for segment in segments:
        head, *params = _PARAMS.split(segment, maxsplit=1)
        if params and head in ("", ".", ".."):
            return None  # a ;params suffix must not turn a dot or empty segment into a name
        trailing = segment in ("", ".", "..")
        if segment in ("", "."):
            continue
        if segment == "..":
            if not resolved:
                return None  # above the root: outside any base path the target has
            resolved.pop()
            continue
        resolved.append(segment)
    text = "/" + "/".join(resolved)
    if trailing and resolved:
        text += "/"
    return text
