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
from dataclasses import dataclass

from multidict import CIMultiDict

from gateway.http.framing import MAX_HEADER_BYTES, MAX_HEADERS

MAX_LINE = 8190  # aiohttp's own limit for a request or header line
MAX_RESPONSE_HEAD = 64 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x20-\x7e\t]*")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: ([\x20-\x7e\t]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\x20-\x7e\t]*)?")
_UNFRAMED = frozenset({b"transfer-encoding", b"upgrade", b"expect"})


class BadResponse(ValueError):
    """The upstream's answer cannot be relayed: its framing is unclear."""


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str  # origin form, as sent
    host: str
    headers: CIMultiDict[str]
    close: bool  # the client asked to close after this response
    length: int | None  # Content-Length, if sent

    @property
    def bodiless_read(self) -> bool:
        """A GET or HEAD without a body: what the fast path may relay."""
        return self.method in ("GET", "HEAD") and self.length is None


def _fields(lines: list[bytes]) -> list[tuple[bytes, bytes]] | None:
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        if len(line) > MAX_LINE:
            return None
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return None
        value = value.strip(b" \t")
        if not _VALUE.fullmatch(value):
            return None
        fields.append((name, value))
    return fields


def _tokens(value: str) -> set[str]:
    return {t.strip().lower() for t in value.split(",")}


def request_head(head: bytes) -> RequestHead | None:
    """The request in ``head`` (without its final blank line), or None when it is outside
    the fast path's subset (see the module docstring)."""
    if len(head) > MAX_HEADER_BYTES:
        return None
    lines = head.split(b"\r\n")
    if len(lines) - 1 > MAX_HEADERS or len(lines[0]) > MAX_LINE:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not _TOKEN.fullmatch(parts[0]):
        return None
    if not _TARGET.fullmatch(parts[1]):
        return None
    fields = _fields(lines[1:])
    if fields is None:
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    hosts = 0
    lengths: list[bytes] = []
    for name, value in fields:
        lowered = name.lower()
        if lowered in _UNFRAMED:
            return None
        hosts += lowered == b"host"
        if lowered == b"content-length":
            lengths.append(value)
        headers.add(name.decode("ascii"), value.decode("ascii"))
    if hosts != 1 or len(lengths) > 1 or any(not n.isdigit() or len(n) > 18 for n in lengths):
        return None
    close = "close" in _tokens(headers.get("Connection", ""))
    return RequestHead(
        method=parts[0].decode("ascii"),
        target=parts[1].decode("ascii"),
        host=headers["Host"],
        headers=headers,
        close=close,
        length=int(lengths[0]) if lengths else None,
    )


@dataclass(frozen=True)
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
    lines = head.split(b"\r\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None or len(lines) - 1 > MAX_HEADERS:
        raise BadResponse("the target's response line is not HTTP/1.x")
    fields = _fields(lines[1:])
    if fields is None:
        raise BadResponse("the target's response headers are malformed")
    headers: CIMultiDict[str] = CIMultiDict(
        (n.decode("ascii"), v.decode("ascii")) for n, v in fields
    )
    lengths = set(headers.getall("Content-Length", []))
    codings = headers.getall("Transfer-Encoding", [])
    if len(lengths) > 1 or any(not n.isdigit() or len(n) > 18 for n in lengths):
        raise BadResponse("the target sent an unclear Content-Length")
    if codings and (lengths or len(codings) > 1 or codings[0].lower() != "chunked"):
        raise BadResponse("the target sent an unclear Transfer-Encoding")
    http10 = status.group(1) == b"0"
    connection = _tokens(headers.get("Connection", ""))
    keep_alive = "keep-alive" in connection if http10 else "close" not in connection
    return ResponseHead(
        status=int(status.group(2)),
        reason=(status.group(3) or b"").decode("ascii"),
        headers=headers,
        length=int(lengths.pop()) if lengths else None,
        chunked=bool(codings),
        keep_alive=keep_alive,
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
        elif _fields([line]) is None:
            raise BadResponse("the target's trailer is malformed")


def serialize_head(first_line: str, headers: CIMultiDict[str]) -> bytes:
    """A head to send; raises ValueError for a value that would break the framing (a
    vaulted credential with a line break, say)."""
    parts = [first_line]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name} cannot be sent")
        parts.append(f"{name}: {value}")
    parts.append("\r\n")
    return "\r\n".join(parts).encode("utf-8")
