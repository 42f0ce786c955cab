"""One request on the web fast path, from the upstream request to the response's end.

The answer streams back as it arrives, with back-pressure both ways; a ``Content-Length`` or
chunked body is relayed in its own framing (chunk boundaries followed by ``wire.Chunks``,
never re-framed), and a body with neither ends the connection, as it must. A response that
breaks off cuts the browser's connection, so a truncated download never looks complete. A
kept-alive upstream connection that turns out closed is tried again once (these are
``GET``/``HEAD``). The session's end cuts a flight at once (``Flight.cut``): a page if
nothing was answered yet, else the connection. Each flight is recorded and counted by its
session like any other request (``LiveHttpSession.record_done``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from multidict import CIMultiDict

from gateway.http import refusal
from gateway.http.fastpool import TargetPool, UpstreamConnection
from gateway.http.headers import ClientView, ResponseRewriter
from gateway.http.memo import Answer
from gateway.http.relay import Exchange
from gateway.http.splice import DestinationGone, SourceEnded, Splicer, plain_socket
from gateway.http.upstream import describe_failure
from gateway.http.wire import (
    MAX_RESPONSE_HEAD,
    BadResponse,
    Chunks,
    ResponseHead,
    has_body,
    response_head,
    serialize_head,
)

if TYPE_CHECKING:
    from gateway.http.front import FrontConnection
    from gateway.http.session import LiveHttpSession

log = logging.getLogger(__name__)
Framing = Literal["none", "length", "chunked", "eof"]
# A body at least this long left to come goes socket to socket in the kernel (gateway.http.splice)
SPLICE_FROM = 256 * 1024


_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class Flight:
    """One request on the fast path, from the upstream request to the response's end."""

    def __init__(
        self,
        conn: FrontConnection,
        session: LiveHttpSession,
        pool: TargetPool,
        view: ClientView,
        exchange: Exchange,
        upstream_request: bytes,
        client_close: bool,
    ) -> None:
        self.conn = conn
        self.session = session
        self.pool = pool
        self.view = view
        self.exchange = exchange
        self.request = upstream_request
        self.client_close = client_close
        self.upstream: UpstreamConnection | None = None
        self.head: ResponseHead | None = None
        self.framing: Framing = "none"
        self._buffer = bytearray()
        self._left = 0
        self._chunks: Chunks | None = None
        self._retried = False
        self._done = False
        self._last = time.monotonic()  # the last bytes from the upstream (or the send)
        self._connecting: asyncio.Task[None] | None = None
        self._out: list[bytes] = []  # written to the browser at the end of each read
        self._splicer: Splicer | None = None
        self._splicing: asyncio.Task[None] | None = None

    # --- sending -----------------------------------------------------------------------
    def start(self) -> None:
        self.session.fast.add(self)
        self.conn.front.flights.add(self)
        if not self.session.recheck_due:
            upstream = self.pool.checkout()
            if upstream is not None:
                self._send(upstream)
                return
        self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        session = self.session
        if session.recheck_due:
            try:
                ending = await session.still_allowed()
            except Exception:
                # Fail closed: what cannot be checked does not go upstream.
                log.exception("session %s: re-checking access failed", session.id)
                self._refuse(refusal.unavailable(session.target))
                return
            if ending is not None:
                await session.core.registry.terminate(session.id, ending)  # cuts this flight
                return
            upstream = self.pool.checkout()
            if upstream is not None:
                self._send(upstream)
                return
        try:
            upstream = await self.pool.connect()
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            if not self._done:
                failure = describe_failure(exc)
                self._refuse(refusal.upstream(self.session.target, failure.status, failure.what))
            return
        if self._done:
            self.pool.release(upstream)
            return
        self._send(upstream)

    def _send(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        upstream.receiver = self
        self.exchange.reused = upstream.reused
        self._last = time.monotonic()
        upstream.write(self.request)

    def check_timeouts(self, now: float) -> None:
        """The upstream's time to answer (``first_byte``) and to go on (``idle``): called
        by the front's once-a-second sweep, so a request arms no timer of its own."""
        if self._done or self.upstream is None:
            return
        timeouts = self.pool.timeouts
        if self.head is None and now - self._last >= timeouts.first_byte:
            self._bad("the target did not answer in time", 504)
        elif self.head is not None and now - self._last >= timeouts.idle:
            self._break("the target went quiet")

    # --- the answer --------------------------------------------------------------------
    def upstream_data(self, data: bytes) -> None:
        self._last = time.monotonic()
        try:
            self._read(data)
        finally:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self.conn.write(out[0] if len(out) == 1 else b"".join(out))

    def _read(self, data: bytes) -> None:
        if self.head is None:
            self._buffer += data
            while self.head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_RESPONSE_HEAD:
                        self._bad("the target's response head is too large")
                    return
                raw = bytes(self._buffer[:end])
                del self._buffer[: end + 4]
                answer = self._answer(raw)
                if answer is None:
                    return
                if answer.head.status >= 200:
                    self._respond(answer)
            data, self._buffer = bytes(self._buffer), bytearray()
            if self.framing == "none" or (self.framing == "length" and not self._left):
                self._complete(reusable=not data)  # bytes past the end: framing lost
                return
        self._body(data)

    def _answer(self, raw: bytes) -> Answer | None:
        """The response head in ``raw`` and what the browser gets for it (remembered by the
        connection: ``gateway.http.memo``); None when it cannot be relayed (answered)."""
        conn, session, method = self.conn, self.session, self.exchange.method
        date = http_date()
        known = conn.answer
        if known is not None and known.fits(
            raw, method, date, self.view, session, self.client_close
        ):
            return known
        try:
            head = response_head(raw)
        except BadResponse as exc:
            self._bad(str(exc))
            return None
        if head.status == 101:
            self._bad("the target switched protocols unasked")
            return None
        if head.status < 200:  # an interim answer: not relayed
            return Answer(
                raw, method, date, self.view, session, self.client_close, head, "none", b""
            )
        headers = ResponseRewriter(session.web, self.view).headers(head.headers)
        framing: Framing
        if not has_body(method, head.status):
            framing = "none"
            if head.length is not None:
                headers["Content-Length"] = str(head.length)
        elif head.chunked:
            framing = "chunked"
            headers["Transfer-Encoding"] = "chunked"
        elif head.length is not None:
            framing = "length"
            headers["Content-Length"] = str(head.length)
        else:
            framing = "eof"
        if framing == "eof" or self.client_close:
            headers["Connection"] = "close"
        headers["Date"] = date
        try:
            out = serialize_head(f"HTTP/1.1 {head.status} {head.reason}", headers)
        except ValueError:
            self._bad("the target's response headers cannot be relayed")
            return None
        answer = Answer(
            raw, method, date, self.view, session, self.client_close, head, framing, out
        )
        conn.answer = answer
        return answer

    def _respond(self, answer: Answer) -> None:
        head = self.head = answer.head
        self.exchange.status = head.status
        self.framing = answer.framing
        if self.framing == "chunked":
            self._chunks = Chunks()
        elif self.framing == "length":
            assert head.length is not None
            self._left = head.length
        self._out.append(answer.out)
        self.exchange.responded = True

    def _body(self, data: bytes) -> None:
        if not data or self._done:
            return
        framing = self.framing
        if framing == "length":
            take = min(self._left, len(data))
            self._left -= take
            self._forward(data if take == len(data) else data[:take])
            if not self._left:
                self._complete(reusable=take == len(data))
            elif self._left >= SPLICE_FROM and self._splicer is None:
                self._splice()
        elif framing == "chunked":
            assert self._chunks is not None
            try:
                take = self._chunks.feed(data)
            except BadResponse as exc:
                self._break(str(exc))
                return
            self._forward(data if take == len(data) else data[:take])
            if self._chunks.done:
                self._complete(reusable=take == len(data))
        elif framing == "eof":
            self._forward(data)
        else:  # bytes after a bodiless answer: the connection's framing is lost
            self._drop_upstream()

    def _forward(self, data: bytes) -> None:
        self.exchange.bytes_down += len(data)
        self._out.append(data)

    def _splice(self) -> None:
        """The rest of a long body by ``splice(2)``, where both sides are plain TCP."""
        upstream = self.upstream
        assert upstream is not None
        source = plain_socket(upstream.transport)
        destination = plain_socket(self.conn.transport)
        if source is None or destination is None or upstream.transport is None:
            return
        try:
            self._splicer = Splicer(source, destination)
        except OSError:
            return
        upstream.transport.pause_reading()
        self._splicing = asyncio.ensure_future(self._spliced(self._splicer, self._left))

    async def _spliced(self, splicer: Splicer, length: int) -> None:
        transport = self.conn.transport
        assert transport is not None

        spliced = self.session.core.metrics.http_spliced

        def moved(n: int) -> None:
            self._last = time.monotonic()
            self.exchange.bytes_down += n
            spliced.inc(n)

        try:
            await splicer.run(length, lambda: not transport.get_write_buffer_size(), moved)
        except SourceEnded:
            self._break("the target broke off the response")
            return
        except DestinationGone:
            self.client_gone()
            self.conn.abort()
            return
        finally:
            splicer.close()
        self._left = 0
        self._splicer = None
        if self.upstream is not None:
            self.upstream.pause_reading(False)
        self._complete()

    def upstream_lost(self) -> None:
        if self._done:
            return
        self.upstream = None
        if self.head is None:
            if self.exchange.reused and not self._retried and not self._buffer:
                # a kept-alive connection the target had closed: a GET goes again, once
                self._retried = True
                self._connecting = asyncio.ensure_future(self._connect())
                return
            self._bad("the target closed the connection")
        elif self.framing == "eof":
            self._complete(reusable=False)
        else:
            self._break("the target broke off the response")

    # --- back-pressure -----------------------------------------------------------------
    def downstream_paused(self, paused: bool) -> None:
        if self.upstream is not None and self._splicer is None:
            self.upstream.pause_reading(paused)

    def upstream_paused(self, paused: bool) -> None:
        """The request is one head: nothing to hold back."""

    # --- ends --------------------------------------------------------------------------
    def _finish(self, outcome: str) -> bool:
        if self._done:
            return False
        self._done = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._splicer is not None:
            self._splicer.close()
            if self._splicing is not None and self._splicing is not asyncio.current_task():
                self._splicing.cancel()
        self.session.fast.discard(self)
        self.conn.front.flights.discard(self)
        self.session.record_done(self.exchange, outcome)
        return True

    def _complete(self, reusable: bool = True) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            head = self.head
            if reusable and head is not None and head.keep_alive and self.framing != "eof":
                self.pool.release(upstream)
            else:
                upstream.close()
        self._flush()  # before the next request on this connection can answer
        if self._finish("killed" if self.session.ended is not None else "ok"):
            self.conn.finished(keep_open=self.framing != "eof" and not self.client_close)

    def _drop_upstream(self) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.close()

    def _refuse(self, page: refusal.Refusal, *, outcome: str = "upstream_error") -> None:
        """Before the response head: the person gets a page and the connection lives on."""
        self._drop_upstream()
        self.exchange.status = page.status
        self.exchange.error = page.message
        close = outcome == "killed" or self.client_close
        self.conn.write(serialized(refusal.page(page), close))
        if self._finish(outcome):
            self.conn.finished(keep_open=not close)

    def _bad(self, what: str, status: int = 502) -> None:
        if self.head is None:
            self._refuse(refusal.upstream(self.session.target, status, what))
        else:
            self._break(what)

    def _break(self, what: str) -> None:
        """After the head: the browser's connection is cut, never ended cleanly."""
        self.exchange.error = what
        self._drop_upstream()
        if self._finish("upstream_error"):
            self.conn.abort()

    def cut(self, reason: str) -> None:
        """The session ended: a page if nothing was answered yet, else the cut."""
        if self.head is None:
            gateway = self.view.gateway_origin or self.view.public_origin
            self._refuse(refusal.terminated(self.session.target, reason, gateway), outcome="killed")
            return
        self.exchange.error = "cut off"
        self._drop_upstream()
        if self._finish("killed"):
            self.conn.abort()

    def client_gone(self) -> None:
        self.exchange.error = self.exchange.error or "the browser went away"
        self._drop_upstream()
        self._finish("client_gone")


def serialized(response: web.Response, close: bool) -> bytes:
    """A page the gateway answers itself, on the raw connection."""
    body = response.body
    assert isinstance(body, bytes)
    headers: CIMultiDict[str] = CIMultiDict(response.headers)
    headers["Content-Length"] = str(len(body))
    headers["Date"] = http_date()
    if close:
        headers["Connection"] = "close"
    return serialize_head(f"HTTP/1.1 {response.status} {response.reason}", headers) + body
