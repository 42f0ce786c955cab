"""HTTP/1.1 on the wire, for the web fast path: a strict subset read, the rest refused.

The fast path (``gateway.http.fastpath``) reads a request only where it can be read in exactly
one way; anything else is left to aiohttp's full parser and the framing rules of
``gateway.http.framing``. So ``request_head`` is narrower than both on purpose: it accepts a
request in origin form over HTTP/1.1 with a token method, token header names, values of
visible ASCII, space and tab only, lines under ``MAX_LINE``, at most ``MAX_HEADERS`` fields,
exactly one ``Host``, at most one ``Content-Length`` of plain digits, and no
``Transfer-Encoding``, ``Upgrade`` or ``Expect`` at all — so where the request ends is known.
A request outside that subset is not an error here: it returns None, and the connection goes
to the full path unread.

Upstream answers are read as strictly, but they are the upstream's: ``response_head``
raises ``BadResponse`` for a head that is not clean HTTP/1.x, for ``Content-Length`` that is
not one number, and for ``Transfer-Encoding`` other than exactly ``chunked`` or together
with ``Content-Length`` — a response that could be framed two ways is not relayed.
``Chunks`` follows a chunked body as it streams, so the gateway knows where it ends without
re-framing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from multidict import CIMultiDict

from gateway.http.framing import MAX_HEADER_BYTES, MAX_HEADERS

MAX_LINE = 8190  # aiohttp's own limit for a request or header line
MAX_RESPONSE_HEAD = 64 * 1024
# Heads are decoded as Latin-1 (one character per byte) and matched as text; every pattern
# admits ASCII only, so what passes is exactly what the bytes said. One match checks all of
# a head's fields.
_NAME = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD = _NAME + r":[\x20-\x7e\t]*"
_FIELDS = re.compile(rf"(?:{_FIELD}\r\n)*{_FIELD}")
_REQUEST_LINE = re.compile(rf"({_NAME}) (/[\x21-\x7e]*) HTTP/1\.1")
_STATUS = re.compile(r"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([\x20-\x7e\t]*))?")
_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\x20-\x7e\t]*)?")
_UNFRAMED = ("Transfer-Encoding", "Upgrade", "Expect")


class BadResponse(ValueError):
    """The upstream's answer cannot be relayed: its framing is unclear."""


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str  # origin form, as sent
    host: str
    # The client's headers carry the gateway's sign-in cookies: kept out of any repr.
    headers: CIMultiDict[str] = field(repr=False)
    close: bool  # the client asked to close after this response
    length: int | None  # Content-Length, if sent
    block: str = field(default="", repr=False)  # the header lines (``previous`` compares them)

    @property
    def bodiless_read(self) -> bool:
        """A GET or HEAD without a body: what the fast path may relay."""
        return self.method in ("GET", "HEAD") and self.length is None


def _fields(block: str) -> list[tuple[str, str]] | None:
    """The header fields in ``block`` (a head's lines after the first, decoded as Latin-1 so
    that each byte is one character), or None unless every line is a token name, a colon
    and a value of visible ASCII, space and tab, under ``MAX_LINE``."""
    if not block:
        return []
    if not _FIELDS.fullmatch(block):
        return None
    lines = block.split("\r\n")
    if max(map(len, lines)) > MAX_LINE:
        return None
    return [(name, value.strip(" \t")) for name, _, value in (x.partition(":") for x in lines)]


def _tokens(headers: CIMultiDict[str], name: str) -> set[str]:
    """The comma-separated tokens of every ``name`` field, lowercased."""
    return {t.strip().lower() for value in headers.getall(name, ()) for t in value.split(",")}


def request_head(head: bytes, previous: RequestHead | None = None) -> RequestHead | None:
    """The request in ``head`` (without its final blank line), or None when it is outside
    the fast path's subset (see the module docstring). When the header lines are those of
    ``previous`` (a client often repeats them on a connection), its reading of them is reused:
    the same text reads the same way."""
    if len(head) > MAX_HEADER_BYTES:
        return None
    first, _, block = head.decode("latin-1").partition("\r\n")
    request = _REQUEST_LINE.fullmatch(first)
    if request is None or len(first) > MAX_LINE:
        return None
    if previous is not None and block == previous.block:
        return RequestHead(
            request.group(1),
            request.group(2),
            previous.host,
            previous.headers,
            previous.close,
            previous.length,
            block,
        )
    if block.count("\r\n") >= MAX_HEADERS:
        return None
    fields = _fields(block)
    if fields is None:
        return None
    headers: CIMultiDict[str] = CIMultiDict(fields)
    if any(name in headers for name in _UNFRAMED):
        return None
    hosts = headers.getall("Host", ())
    lengths = headers.getall("Content-Length", ())
    if len(hosts) != 1 or len(lengths) > 1 or any(not _LENGTH.fullmatch(n) for n in lengths):
        return None
    return RequestHead(
        method=request.group(1),
        target=request.group(2),
        host=hosts[0],
        headers=headers,
        close="close" in _tokens(headers, "Connection"),
        length=int(lengths[0]) if lengths else None,
        block=block,
    )


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: CIMultiDict[str]
    length: int | None  # Content-Length, if sent
    chunked: bool
    keep_alive: bool  # the connection may carry another request after this one


def response_head(head: bytes) -> ResponseHead:
    """The upstream response in ``head`` (without its final blank line); raises
    BadResponse."""
    first, _, block = head.decode("latin-1").partition("\r\n")
    status = _STATUS.fullmatch(first)
    if status is None or block.count("\r\n") >= MAX_HEADERS:
        raise BadResponse("the target's response line is not HTTP/1.x")
    fields = _fields(block)
    if fields is None:
        raise BadResponse("the target's response headers are malformed")
    headers: CIMultiDict[str] = CIMultiDict(fields)
    lengths = set(headers.getall("Content-Length", ()))
    codings = headers.getall("Transfer-Encoding", ())
    if len(lengths) > 1 or any(not _LENGTH.fullmatch(n) for n in lengths):
        raise BadResponse("the target sent an unclear Content-Length")
    if codings and (lengths or len(codings) > 1 or codings[0].lower() != "chunked"):
        raise BadResponse("the target sent an unclear Transfer-Encoding")
    connection = _tokens(headers, "Connection")
    http10 = status.group(1) == "0"
    return ResponseHead(
        status=int(status.group(2)),
        reason=status.group(3) or "",
        headers=headers,
        length=int(lengths.pop()) if lengths else None,
        chunked=bool(codings),
        keep_alive="close" not in connection and (not http10 or "keep-alive" in connection),
    )


def has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status >= 200 and status not in (204, 304)


class Chunks:
    """Where a chunked body ends, followed across the pieces it arrives in. ``feed`` returns
    how many bytes of ``data`` belong to the body (all of them until the end is reached);
    raises BadResponse on malformed chunking."""

    def __init__(self) -> None:
        self._left = 0  # data bytes of the current chunk still to come
        self._line = bytearray()  # a size line or trailer line being read
        self._state = "size"  # size | data | data_end | trailer | done
        self.done = False

    def feed(self, data: bytes | memoryview) -> int:
        i, n = 0, len(data)
        while i < n and not self.done:
            if self._state == "data":
                take = min(self._left, n - i)
                i += take
                self._left -= take
                if not self._left:
                    self._state = "data_end"
                continue
            end = bytes(data[i : min(n, i + 1025)]).find(b"\n")
            if end < 0:
                self._line += data[i:n]
                i = n
            else:
                self._line += data[i : i + end + 1]
                i += end + 1
                self._end_of_line()
            if len(self._line) > 1024:
                raise BadResponse("the target's chunked body has an overlong line")
        return i

    def _end_of_line(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        if not line.endswith(b"\r\n"):
            raise BadResponse("the target's chunked body has a bare line feed")
        line = line[:-2]
        if self._state == "data_end":
            if line:
                raise BadResponse("the target's chunk is longer than its size")
            self._state = "size"
        elif self._state == "size":
            size = _CHUNK_SIZE.fullmatch(line)
            if size is None:
                raise BadResponse("the target's chunk size is malformed")
            self._left = int(size.group(1), 16)
            self._state = "data" if self._left else "trailer"
        elif not line:  # the blank line after the trailers
            self.done = True
        elif _fields(line.decode("latin-1")) is None:
            raise BadResponse("the target's trailer is malformed")


def serialize_head(first_line: str, headers: CIMultiDict[str]) -> bytes:
    """A head to send; raises ValueError for a value that would break the framing (a
    vaulted credential with a line break, say)."""
    return first_line.encode("utf-8") + b"\r\n" + serialize_fields(headers)


def serialize_fields(headers: CIMultiDict[str]) -> bytes:
    """The header lines of a head, with the blank line that ends it (``serialize_head``)."""
    parts = []
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name} cannot be sent")
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8")
