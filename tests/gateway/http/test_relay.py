"""Faithful proxying through the relay alone (no sessions): streaming with flat memory,
chunked bodies, Range, SSE, HEAD, keep-alive, redirects and cookies rewritten, WebSockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway.http.framing import check_framing, refuse
from gateway.http.headers import ClientView, ResponseRewriter, request_headers
from gateway.http.relay import Exchange, Relay, RelayedSocket, UpstreamUnavailable, is_websocket
from gateway.http.routing import check_path
from gateway.http.target import WebTarget, parse_base_url
from gateway.http.upstream import UpstreamPool
from tests.gateway.http.upstreams import CHUNK, Echo, Served, echo_upstream, serve


class MiniProxy:
    """Every request to this app goes to one target through the relay."""

    def __init__(self, target: WebTarget) -> None:
        self.target = target
        self.pool = UpstreamPool()
        self.relay = Relay(self.pool)
        self.exchanges: list[Exchange] = []
        self.sockets: set[RelayedSocket] = set()
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = check_framing(request)
        if refusal is not None:
            return await refuse(request, refusal)
        path, query = check_path(request.raw_path)
        view = ClientView(
            client_ip=request.remote or "?",
            proto="http",
            host=request.host,
            public_origin=f"http://{request.host}",
        )
        ws = is_websocket(request)
        headers = request_headers(request.headers, self.target, view, websocket=ws)
        exchange = Exchange(request.method, path, query)
        self.exchanges.append(exchange)
        try:
            if ws:
                return await self.relay.websocket(
                    request,
                    self.target,
                    headers,
                    exchange,
                    expected_origin=view.public_origin,
                    sockets=self.sockets,
                )
            rewriter = ResponseRewriter(self.target, view)
            return await self.relay.http(request, self.target, headers, rewriter, exchange)
        except UpstreamUnavailable as exc:
            return web.Response(status=exc.failure.status, text=exc.failure.what)
        finally:
            exchange.finish()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[Echo, Served]]:
    async for pair in echo_upstream(tmp_path):
        yield pair


@pytest.fixture
async def proxy(upstream: tuple[Echo, Served]) -> AsyncIterator[MiniProxy]:
    mini = MiniProxy(parse_base_url("echo", upstream[1].url + "/"))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", mini.handle)
    served = await serve(app)
    mini.port = served.port
    yield mini
    await served.runner.cleanup()
    await mini.pool.aclose()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def download(client: aiohttp.ClientSession, url: str) -> tuple[int, str, int]:
    """(bytes, sha256, peak RSS growth while reading)."""
    digest = hashlib.sha256()
    size, start, peak = 0, rss(), 0
    async with client.get(url) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            peak = max(peak, rss() - start)
    return size, digest.hexdigest(), peak


def expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    left = size
    while left > 0:
        piece = CHUNK[: min(left, len(CHUNK))]
        digest.update(piece)
        left -= len(piece)
    return digest.hexdigest()


async def test_a_large_download_streams_through_with_flat_memory(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    await download(client, f"{proxy.base}/big?size={32 << 20}")  # warm the allocator up
    size = 200 << 20
    got, digest, peak = await download(client, f"{proxy.base}/big?size={size}")
    assert (got, digest) == (size, expected_digest(size))
    assert peak < 24 << 20, f"RSS grew by {peak >> 20} MB while streaming"
    assert proxy.exchanges[-1].bytes_down == size


async def test_a_large_upload_streams_to_the_upstream_with_flat_memory(
    proxy: MiniProxy, upstream: tuple[Echo, Served], client: aiohttp.ClientSession
) -> None:
    size = 128 << 20
    peak = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal peak
        start = rss()
        for _ in range(size // len(CHUNK)):
            peak = max(peak, rss() - start)
            yield CHUNK

    async with client.post(f"{proxy.base}/upload", data=body()) as resp:
        seen = await resp.json()
    assert (seen["size"], seen["sha256"]) == (size, expected_digest(size))
    assert peak < 24 << 20, f"RSS grew by {peak >> 20} MB while uploading"
    assert proxy.exchanges[-1].bytes_up == size
    # the browser's chunked upload reached the upstream without its framing headers
    names = {k.lower() for k, _ in seen["headers"]}
    assert "transfer-encoding" not in names or upstream[0].seen[-1]["size"] == size


async def test_an_upload_with_content_length_keeps_it(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    async with client.put(f"{proxy.base}/file", data=b"x" * 1000) as resp:
        seen = await resp.json()
    assert ["Content-Length", "1000"] in seen["headers"] and seen["size"] == 1000


async def test_a_body_without_length_is_relayed_chunked(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{proxy.base}/big?size=300000&length=no") as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert len(await resp.read()) == 300000


async def test_a_body_the_upstream_breaks_off_is_not_delivered_as_complete(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(f"{proxy.base}/big?size=5000000&truncate=1&length=no") as resp:
            await resp.read()
    await asyncio.sleep(0)
    assert proxy.exchanges[-1].error


async def test_range_requests_get_the_upstreams_partial_content(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{proxy.base}/range", headers={"Range": "bytes=10-19"}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == "bytes 10-19/16384"
        assert await resp.read() == bytes(range(10, 20))


async def test_server_sent_events_arrive_one_by_one(
    proxy: MiniProxy, upstream: tuple[Echo, Served], client: aiohttp.ClientSession
) -> None:
    state = upstream[0]
    async with client.get(f"{proxy.base}/sse") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        for event in ("one", "two", "three"):
            await state.sse_next.put(event)
            assert await resp.content.readline() == f"data: {event}\n".encode()
            assert await resp.content.readline() == b"\n"
        await state.sse_next.put("end")
        assert await resp.read() == b""


async def test_head_gets_the_headers_and_no_body(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    async with client.head(f"{proxy.base}/head") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
        assert await resp.read() == b""


async def test_keep_alive_reuses_both_connections(proxy: MiniProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    one = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    writer.write(one + one)
    data = b""
    while data.count(b"HTTP/1.1 200") < 2:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, "the proxy closed a keep-alive connection"
        data += chunk
    writer.close()
    assert [e.reused for e in proxy.exchanges[-2:]] == [False, True]


async def test_an_absolute_redirect_stays_on_the_public_origin(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{proxy.base}/redirect", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == f"{proxy.base}/landed?from=redirect"


async def test_app_cookies_become_host_only_and_gateway_named_ones_are_dropped(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{proxy.base}/cookies") as resp:
        assert resp.headers.getall("Set-Cookie") == ["app_pref=blue; Path=/"]


async def test_an_unreachable_upstream_gets_502(client: aiohttp.ClientSession) -> None:
    mini = MiniProxy(parse_base_url("gone", "http://127.0.0.1:9/"))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", mini.handle)
    served = await serve(app)
    try:
        async with client.get(f"http://127.0.0.1:{served.port}/") as resp:
            assert resp.status == 502
            assert "could not be reached" in await resp.text()
    finally:
        await served.runner.cleanup()
        await mini.pool.aclose()


# --- WebSockets ---------------------------------------------------------------------


async def test_websocket_frames_are_relayed_both_ways_and_counted(
    proxy: MiniProxy, upstream: tuple[Echo, Served], client: aiohttp.ClientSession
) -> None:
    origin = f"http://127.0.0.1:{proxy.port}"
    async with client.ws_connect(
        f"{proxy.base}/ws", origin=origin, protocols=("chat.v0", "chat.v2"), autoping=False
    ) as ws:
        assert ws.protocol == "chat.v2"
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
        await ws.send_bytes(b"\x01\x02\x03")
        assert (await ws.receive()).data == b"\x03\x02\x01"
        await ws.ping(b"are you there")
        pong = await ws.receive()
        assert (pong.type, pong.data) == (WSMsgType.PONG, b"are you there")
        await ws.send_str("close-me")
        closing = await ws.receive()
        assert closing.type is WSMsgType.CLOSE
        assert (closing.data, closing.extra) == (4003, "asked to")
    await asyncio.sleep(0.05)
    exchange = proxy.exchanges[-1]
    assert exchange.websocket and exchange.status == 101
    assert (exchange.frames_up, exchange.frames_down) == (4, 3)  # close frames not counted
    assert exchange.close_code == 4003


async def test_a_websocket_from_another_origin_is_refused(
    proxy: MiniProxy, client: aiohttp.ClientSession
) -> None:
    for origin in ("http://evil.example", None):
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            async with client.ws_connect(f"{proxy.base}/ws", origin=origin):
                pass
        assert caught.value.status == 403


async def test_killing_a_websocket_closes_both_sides_at_once(
    proxy: MiniProxy, upstream: tuple[Echo, Served], client: aiohttp.ClientSession
) -> None:
    origin = f"http://127.0.0.1:{proxy.port}"
    async with client.ws_connect(f"{proxy.base}/ws", origin=origin) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
        (socket,) = proxy.sockets
        await socket.kill("revoked by ada: done")
        closing = await ws.receive()
        assert closing.type is WSMsgType.CLOSE
        assert closing.data == 1008
        assert closing.extra == "lockgate: session terminated: revoked by ada: done"
    for _ in range(100):
        if upstream[0].upstream_closed:
            break
        await asyncio.sleep(0.01)
    assert upstream[0].upstream_closed == [1001]
