"""Request smuggling: crafted bytes on raw sockets against a real aiohttp server, with the C
parser (llhttp) and the pure-Python one, through the proxy's framing check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp.web_protocol
import pytest
from aiohttp import web
from aiohttp.http_parser import HttpRequestParserC, HttpRequestParserPy

from gateway.http.framing import check_framing, refuse

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def framing(request: web.Request, handler: Handler) -> web.StreamResponse:
    refusal = check_framing(request)
    if refusal is not None:
        return await refuse(request, refusal)
    return await handler(request)


class Server:
    def __init__(self, port: int, seen: list[str]) -> None:
        self.port = port
        self.seen = seen

    async def exchange(self, data: bytes) -> tuple[int, bytes, bool]:
        """Send ``data``; (status of the first response, all bytes read, closed by server)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(data)
        chunks = []
        closed = False
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 2.0)
                if not chunk:
                    closed = True
                    break
                chunks.append(chunk)
        except TimeoutError:
            pass
        writer.close()
        out = b"".join(chunks)
        status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/") else 0
        return status, out, closed


@pytest.fixture(params=["llhttp", "python"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    parser = HttpRequestParserC if request.param == "llhttp" else HttpRequestParserPy
    mp = pytest.MonkeyPatch()
    mp.setattr(aiohttp.web_protocol, "HttpRequestParser", parser)
    seen: list[str] = []

    async def handler(req: web.Request) -> web.Response:
        body = await req.read()
        seen.append(f"{req.method} {req.raw_path} {len(body)}")
        return web.Response(text="ok")

    app = web.Application(middlewares=[framing])
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Server(port, seen)
    finally:
        await runner.cleanup()
        mp.undo()


def after_first_response(out: bytes) -> bytes:
    head, _, rest = out.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return rest[int(value) :]
    return b""


def req(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"

REFUSED = {
    # refused by aiohttp's parsers themselves
    "content-length with transfer-encoding": req(
        "POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n",
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "duplicate content-length, same value": req(
        "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 5\n", b"hello"
    ),
    "duplicate content-length, different values": req(
        "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nContent-Length: 6\n", b"hello!"
    ),
    "content-length list": req("POST / HTTP/1.1\nHost: a\nContent-Length: 5, 5\n", b"hello"),
    "content-length with sign": req("POST / HTTP/1.1\nHost: a\nContent-Length: +5\n", b"hello"),
    "content-length in hex": req("POST / HTTP/1.1\nHost: a\nContent-Length: 0x5\n", b"hello"),
    "obs-fold": req("GET / HTTP/1.1\nHost: a\nX-A: b\n c\n"),
    "obs-fold hiding transfer-encoding": req(
        "POST / HTTP/1.1\nHost: a\nX-A: b\n Transfer-Encoding: chunked\n", b"0\r\n\r\n"
    ),
    "space before the colon": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding : chunked\n", b"0\r\n\r\n"
    ),
    "bare LF line endings": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare CR in a value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
    "vertical tab before a coding": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding:\x0bchunked\n", b"0\r\n\r\n"
    ),
    "transfer-encoding identity": req("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity\n"),
    "transfer-encoding chunked, identity": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, identity\n", b"0\r\n\r\n"
    ),
    "two transfer-encoding headers": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked\n",
        b"0\r\n\r\n",
    ),
    "bad chunk size": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n", b"0x5\r\nhello\r\n0\r\n\r\n"
    ),
    "no host": b"GET / HTTP/1.1\r\n\r\n",
    "two hosts": req("GET / HTTP/1.1\nHost: a\nHost: b\n"),
    "too many headers for the parser": req(
        "GET / HTTP/1.1\nHost: a\n" + "".join(f"X-{i}: v\n" for i in range(200))
    ),
    "a header line over 8190 bytes": req("GET / HTTP/1.1\nHost: a\nX-Big: " + "a" * 9000 + "\n"),
    # what gets through the parsers and the proxy refuses
    "transfer-encoding identity, chunked": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity, chunked\n",
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "transfer-encoding gzip, chunked": req(
        "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "transfer-encoding with HTTP/1.0": req(
        "POST / HTTP/1.0\nHost: a\nTransfer-Encoding: chunked\n", b"0\r\n\r\n" + SMUGGLED
    ),
    "absolute-form target": req("GET http://other.internal/admin HTTP/1.1\nHost: a\n"),
    "connect": req("CONNECT a:443 HTTP/1.1\nHost: a:443\n"),
    "asterisk-form": req("OPTIONS * HTTP/1.1\nHost: a\n"),
    "HTTP/0.9": b"GET /\r\n\r\n",
    "HTTP/2.0 text": req("GET / HTTP/2.0\nHost: a\n"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_ambiguous_framing_is_refused_and_the_connection_closed(
    server: Server, case: str
) -> None:
    status, out, closed = await server.exchange(REFUSED[case])
    assert status in (400, 505), out[:200]
    assert closed, "the connection must not be reused after a framing doubt"
    assert server.seen == [], "no request may reach the handler"
    assert after_first_response(out) == b"", "a smuggled second request must not be answered"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        ("GET / HTTP/1.1\nHost: a\n" + "".join(f"X-{i}: v\n" for i in range(110)), 431),
        ("GET / HTTP/1.1\nHost: a\n" + "".join(f"X-{i}: {'v' * 4000}\n" for i in range(10)), 431),
    ],
)
async def test_headers_over_the_caps_get_431(server: Server, head: str, status: int) -> None:
    got, _, closed = await server.exchange(req(head))
    assert (got, closed) == (status, True)
    assert server.seen == []


async def test_well_framed_requests_pass_and_the_connection_stays_open(server: Server) -> None:
    chunked = req(
        "POST /up HTTP/1.1\nHost: a\nTransfer-Encoding: Chunked\n",
        b"5;ext=1\r\nhello\r\n0\r\n\r\n",
    )
    sized = req("POST /up HTTP/1.1\nHost: a\nContent-Length: 5\n", b"hello")
    status, out, closed = await server.exchange(chunked + sized)
    assert status == 200 and out.count(b"HTTP/1.1 200") == 2
    assert not closed
    assert server.seen == ["POST /up 5", "POST /up 5"]
