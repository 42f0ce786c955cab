"""Moving one request and its response, or one WebSocket, between browser and upstream.

Streaming both ways with back-pressure: the request body is read from ``request.content``
only as fast as the upstream takes it (aiohttp stops reading the browser's socket while its
buffer is full), and each response chunk is written to the browser before the next is read
from the upstream, so a body of any size holds at most a few buffers of memory. Bodies pass
unchanged: no decompression, ``Range``/206 and ``HEAD`` as the upstream answers them, a
``Content-Length`` kept when the upstream sent one, chunked otherwise (HTTP/1.1; HTTP/1.0
clients get a close-delimited body), server-sent events written as they arrive.

When the upstream breaks off a body it had started, the browser's connection is cut instead
of ending the response cleanly, so a truncated download never looks complete. When the
browser goes away, the upstream connection is closed rather than returned to the pool with
an unread body.

WebSockets are terminated on both sides and relayed message by message (text, binary, ping
and pong as sent, close with its code and reason), counted each way. The browser's
``Origin`` must be the target's public origin (else 403), which stops another site's page
from opening the person's socket with their cookie. ``kill`` closes a socket at once with
code 1008 and the reason, and the upstream side with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from gateway.http.headers import ResponseRewriter, websocket_protocols
from gateway.http.target import WebTarget
from gateway.http.upstream import Attempt, UpstreamFailure, UpstreamPool, describe_failure

MAX_WS_MESSAGE = 16 * 1024 * 1024
WS_CLOSE_TIMEOUT = 2.0
KILL_CODE = 1008  # policy violation: the session was ended
_SENDABLE_CLOSE = range(1000, 5000)
_RESERVED_CLOSE = {1004, 1005, 1006, 1015}
UpstreamSocket = aiohttp.ClientWebSocketResponse[Literal[True]]


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or did not answer; nothing was sent to the browser
    yet, so the caller can still answer with a page."""

    def __init__(self, failure: UpstreamFailure) -> None:
        super().__init__(failure.what)
        self.failure = failure


@dataclass
class Exchange:
    """What one request or WebSocket did, for the recording and the metrics."""

    method: str
    path: str  # on the target's root, percent-encoded
    query: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    bytes_up: int = 0  # request body bytes (or WebSocket payload to the upstream)
    bytes_down: int = 0  # response body bytes (or WebSocket payload to the browser)
    reused: bool | None = None
    duration: float = 0.0
    error: str | None = None
    websocket: bool = False
    frames_up: int = 0
    frames_down: int = 0
    close_code: int | None = None
    responded: bool = False  # the response head went to the browser
    body_cap: int = 0  # keep up to this many request body bytes (the target records bodies)
    body: bytearray = field(default_factory=bytearray)

    def finish(self) -> None:
        self.duration = time.monotonic() - self.started


def _cut(request: web.BaseRequest) -> None:
    """Close the browser's connection without ending the response."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class Relay:
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    async def _body(self, request: web.BaseRequest, exchange: Exchange) -> AsyncIterator[bytes]:
        content = request.content
        while True:
            chunk = await content.readany()
            if not chunk:
                return
            exchange.bytes_up += len(chunk)
            room = exchange.body_cap - len(exchange.body)
            if room > 0:
                exchange.body += chunk[:room]
            yield chunk

    async def http(
        self,
        request: web.BaseRequest,
        target: WebTarget,
        headers: CIMultiDict[str],
        rewriter: ResponseRewriter,
        exchange: Exchange,
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back. Raises UpstreamUnavailable
        before anything was sent to the browser."""
        attempt = Attempt()
        data = self._body(request, exchange) if request.body_exists else None
        try:
            upstream = await self.pool.client(target).request(
                request.method,
                target.url(exchange.path, exchange.query),
                headers=headers,
                data=data,
                allow_redirects=False,
                trace_request_ctx=attempt,
            )
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            exchange.reused = attempt.reused
            failure = describe_failure(exc)
            exchange.status, exchange.error = failure.status, failure.what
            raise UpstreamUnavailable(failure) from None
        exchange.reused = attempt.reused
        exchange.status = upstream.status
        try:
            self.pool.streaming(upstream)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(rewriter.headers(upstream.headers))
            length = upstream.headers.get("Content-Length")
            if length is not None and length.isdigit():
                response.headers["Content-Length"] = length
            await response.prepare(request)
            exchange.responded = True
            await self._stream(request, upstream, response, exchange)
        except BaseException:
            upstream.close()
            raise
        if exchange.error:
            upstream.close()
        else:
            upstream.release()
        return response

    async def _stream(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        response: web.StreamResponse,
        exchange: Exchange,
    ) -> None:
        content = upstream.content
        try:
            while True:
                try:
                    chunk = await content.readany()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    exchange.error = describe_failure(exc).what
                    _cut(request)
                    return
                if not chunk:
                    break
                exchange.bytes_down += len(chunk)
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            exchange.error = exchange.error or "the browser went away"
            _cut(request)
            raise
        except asyncio.CancelledError:
            exchange.error = exchange.error or "cut off"
            _cut(request)
            raise

    # --- WebSockets ----------------------------------------------------------------------
    async def websocket(
        self,
        request: web.BaseRequest,
        target: WebTarget,
        headers: CIMultiDict[str],
        exchange: Exchange,
        *,
        expected_origin: str,
        sockets: set[RelayedSocket] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> web.StreamResponse:
        """Relay one WebSocket. Refuses (403) an ``Origin`` other than ``expected_origin``;
        answers with the upstream's status when it refuses the upgrade. While it is open the
        socket is in ``sockets`` (for ``RelayedSocket.kill``)."""
        exchange.websocket = True
        origin = request.headers.get("Origin", "")
        if origin.lower() != expected_origin.lower():
            exchange.status, exchange.error = 403, "WebSocket from another origin"
            return web.Response(status=403, text="lockgate: WebSocket origin not allowed\n")
        url = target.url(exchange.path, exchange.query)
        try:
            upstream = await self.pool.client(target).ws_connect(
                url,
                headers=headers,
                protocols=websocket_protocols(request.headers),
                autoclose=False,
                autoping=False,
                compress=0,
                max_msg_size=MAX_WS_MESSAGE,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=WS_CLOSE_TIMEOUT),
            )
        except aiohttp.WSServerHandshakeError as exc:
            exchange.status, exchange.error = exc.status, "the target refused the WebSocket"
            return web.Response(status=exc.status or 502, text="lockgate: upgrade refused\n")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            failure = describe_failure(exc)
            exchange.status, exchange.error = failure.status, failure.what
            raise UpstreamUnavailable(failure) from None
        browser = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            max_msg_size=MAX_WS_MESSAGE,
            timeout=WS_CLOSE_TIMEOUT,
        )
        try:
            await browser.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        exchange.status = 101
        exchange.responded = True
        socket = RelayedSocket(browser, upstream, exchange)
        if sockets is not None:
            sockets.add(socket)
        if on_open is not None:
            on_open()
        try:
            await socket.run()
        finally:
            if sockets is not None:
                sockets.discard(socket)
        return browser


def _close_code(code: object) -> int:
    if isinstance(code, int) and code in _SENDABLE_CLOSE and code not in _RESERVED_CLOSE:
        return code
    return 1000


class RelayedSocket:
    """The two halves of one relayed WebSocket."""

    def __init__(
        self,
        browser: web.WebSocketResponse,
        upstream: UpstreamSocket,
        exchange: Exchange,
    ) -> None:
        self.browser = browser
        self.upstream = upstream
        self.exchange = exchange

    async def run(self) -> None:
        to_upstream = asyncio.ensure_future(self._pump(self.browser, self.upstream, True))
        to_browser = asyncio.ensure_future(self._pump(self.upstream, self.browser, False))
        try:
            await asyncio.wait((to_upstream, to_browser), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_upstream, to_browser):
                task.cancel()
            await asyncio.gather(to_upstream, to_browser, return_exceptions=True)
            await self._close_both(1000, b"")

    async def _pump(
        self,
        src: web.WebSocketResponse | UpstreamSocket,
        dst: web.WebSocketResponse | UpstreamSocket,
        up: bool,
    ) -> None:
        ex = self.exchange
        while True:
            msg = await src.receive()
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
                size = len(msg.data.encode())
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
                size = len(msg.data)
            elif msg.type is WSMsgType.PING:
                await dst.ping(msg.data)
                size = len(msg.data)
            elif msg.type is WSMsgType.PONG:
                await dst.pong(msg.data)
                size = len(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                code = _close_code(msg.data)
                ex.close_code = code
                reason = (msg.extra or "").encode()[:123]
                await self._close_both(code, reason)
                return
            else:  # CLOSING, CLOSED, ERROR
                return
            if up:
                ex.frames_up += 1
                ex.bytes_up += size
            else:
                ex.frames_down += 1
                ex.bytes_down += size

    async def _close_both(self, code: int, reason: bytes) -> None:
        await asyncio.gather(
            self.upstream.close(code=code, message=reason),
            self.browser.close(code=code, message=reason),
            return_exceptions=True,
        )

    async def kill(self, reason: str) -> None:
        """Close both sides at once: the browser gets 1008 and the reason."""
        text = f"lockgate: session terminated: {reason}".encode()[:123]
        self.exchange.close_code = KILL_CODE
        with contextlib.suppress(Exception):
            await asyncio.gather(
                self.browser.close(code=KILL_CODE, message=text),
                self.upstream.close(code=1001, message=b"lockgate: session terminated"),
                return_exceptions=True,
            )


def is_websocket(request: web.BaseRequest) -> bool:
    """An upgrade to the WebSocket protocol (the only upgrade the proxy passes)."""
    if request.headers.get("Upgrade", "").strip().lower() != "websocket":
        return False
    tokens = request.headers.get("Connection", "").lower().split(",")
    return request.method == "GET" and "upgrade" in (t.strip() for t in tokens)
