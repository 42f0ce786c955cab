"""Request framing the proxy accepts: one reading only, so smuggling cannot happen.

A proxy is open to request smuggling when it and the upstream could disagree about where a
request ends. The gateway re-frames every request it sends upstream (aiohttp's client writes
its own ``Content-Length`` or chunking), so the risk is on the way in: a message the gateway
reads one way must not be readable another way. aiohttp's server parser (llhttp, and the
pure-Python parser with ``AIOHTTP_NO_EXTENSIONS``) already refuses, with 400 and a closed
connection: ``Content-Length`` together with ``Transfer-Encoding``, duplicate or non-numeric
``Content-Length`` (``+5``, ``0x5``, ``5, 5``), obs-fold continuation lines, whitespace
before a colon, bare LF or CR, NUL and other control characters in values, bad chunk sizes,
lines over 8190 bytes and more than 128 headers (tests/gateway/http/test_framing.py checks
each against both parsers over raw sockets). What gets through them, and is refused here
(400, connection closed):

- a ``Transfer-Encoding`` other than exactly ``chunked`` (``identity, chunked``,
  ``gzip, chunked``; both parsers read these as chunked), more than one, or any with HTTP/1.0;
- a request target not in origin form (``GET http://other/ HTTP/1.1``: aiohttp would take the
  host from the URL, not the Host header; ``CONNECT host:port``; ``OPTIONS *``);
- an HTTP version other than 1.0 and 1.1 (llhttp accepts ``GET /`` as HTTP/0.9 and the
  version text ``HTTP/2.0``): 505;
- not exactly one ``Host``.

And over the caps a browser never reaches (431): more than ``MAX_HEADERS`` header fields or
more than ``MAX_HEADER_BYTES`` of them in total.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11

MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024


@dataclass(frozen=True)
class FramingRefusal:
    status: int
    reason: str


def check_framing(request: web.BaseRequest) -> FramingRefusal | None:
    """Why the request cannot be proxied as framed, or None."""
    if request.version not in (HttpVersion10, HttpVersion11):
        return FramingRefusal(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    if not request.raw_path.startswith("/"):
        return FramingRefusal(400, "the request target must be a path")
    raw = request.raw_headers
    if len(raw) > MAX_HEADERS:
        return FramingRefusal(431, f"more than {MAX_HEADERS} header fields")
    if sum(len(name) + len(value) + 4 for name, value in raw) > MAX_HEADER_BYTES:
        return FramingRefusal(431, f"more than {MAX_HEADER_BYTES // 1024} KiB of headers")
    hosts = 0
    codings: list[bytes] = []
    for name, value in raw:
        lowered = name.lower()
        if lowered == b"host":
            hosts += 1
        elif lowered == b"transfer-encoding":
            codings.append(value)
    if hosts != 1:
        return FramingRefusal(400, "exactly one Host header is required")
    if codings:
        if len(codings) > 1 or codings[0].strip().lower() != b"chunked":
            return FramingRefusal(400, "Transfer-Encoding must be exactly 'chunked'")
        if request.version == HttpVersion10:
            return FramingRefusal(400, "Transfer-Encoding is not allowed with HTTP/1.0")
    return None


async def refuse(request: web.BaseRequest, refusal: FramingRefusal) -> web.StreamResponse:
    """Answer plainly and close the connection at once: after a framing doubt nothing more is
    read from it (not even the rest of a body, which aiohttp would otherwise linger over)."""
    response = web.Response(
        status=refusal.status,
        text=f"lockgate: {refusal.reason}\n",
        headers={"Connection": "close", "Cache-Control": "no-store"},
    )
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response
