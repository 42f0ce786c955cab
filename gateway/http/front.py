"""One browser connection to the HTTP listener: the fast path, or aiohttp, request by request.

The connection reads each request head itself. What the fast path serves
(``FastFront.plan``) becomes a ``Flight``. Every other request goes to aiohttp's request
handler, which sees the connection through ``_Shim``, a transport that writes to the real one:

- ``one``: a request in the strict subset of ``gateway.http.wire`` (so where it ends is known:
  with its head, or ``Content-Length`` bytes after it) is given to aiohttp alone — a form post,
  the hand-off, the gateway's own pages, a refusal, a session still to open. The connection
  watches aiohttp's answer go out (``_Watch``, the same reading as for upstream answers) and,
  once it is complete, reads the next request itself again. Requests queued behind it wait.
- ``all``: anything else (a body, a WebSocket, a framing doubt, an answer it cannot follow) —
  aiohttp reads the connection from that request's first byte to its end. aiohttp's own parser
  and ``gateway.http.framing`` then judge every byte, as without the fast path.

So aiohttp always starts at a request's first byte and no two answers ever interleave.

The listener's limits hold on every connection: each counts against its address's cap of
unauthenticated connections (``Admission``) until it carries a request of a signed-in person
(a fast one, or one aiohttp's handler says was); a request head must be complete within
``header_timeout`` of its first byte, and a connection with nothing in progress is closed
after ``idle_timeout`` (aiohttp's handler keeps the same limits while it serves one).
"""

from __future__ import annotations

import asyncio
import logging
from asyncio.constants import _SendfileMode
from asyncio.transports import _FlowControlMixin
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiohttp._cookie_helpers import parse_cookie_header

from gateway.http.framing import MAX_HEADER_BYTES
from gateway.http.handoff import CookieNames
from gateway.http.memo import Answer, UpstreamFields
from gateway.http.wire import (
    MAX_RESPONSE_HEAD,
    BadResponse,
    Chunks,
    RequestHead,
    has_body,
    request_head,
    response_head,
)

if TYPE_CHECKING:
    from gateway.http.fastpath import FastFront
    from gateway.http.flight import Flight

Mode = Literal["fast", "one", "all"]
log = logging.getLogger(__name__)


class Admission(Protocol):
    """Unauthenticated connections per address (the listener's cap)."""

    def admit(self, address: str) -> bool: ...

    def release(self, address: str) -> None: ...


_HIGH_WATER = 256 * 1024  # buffered bytes of queued requests before reading pauses


class FrontConnection(asyncio.Protocol):
    def __init__(self, front: FastFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.client_ip = ""
        self.buffer = bytearray()
        self.flight: Flight | None = None
        self.mode: Mode = "fast"
        self.closed = False
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._shim: _Shim | None = None
        self._watch: _Watch | None = None
        self._body_left = 0  # of the request aiohttp is serving alone, still to come
        self._cookie: tuple[str, str, str | None] = ("", "", None)  # header, name -> value
        # The last heads each way and what they became (gateway.http.memo)
        self._previous: RequestHead | None = None
        self.upstream_fields: UpstreamFields | None = None
        self.answer: Answer | None = None
        self._counted = False  # against the address's unauthenticated connections
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for = ""  # what the timer waits for: "head" or "request"
        self._deadline: float | None = None  # when that wait ends (loop time)
        # Kept: on Python 3.11, asyncio.get_running_loop() makes a getpid system call.
        self._loop = asyncio.get_running_loop()

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else ""
        if not self.front.admission.admit(self.client_ip):
            log.info("HTTP connection from %s refused: too many unauthenticated", self.client_ip)
            self.closed = True
            transport.abort()
            return
        self._counted = True
        self.front.connections.add(self)
        self._wait("request")

    def data_received(self, data: bytes) -> None:
        if self.mode == "all":
            assert self._shim is not None
            self._shim.protocol.data_received(data)
            return
        if self._body_left:
            assert self._shim is not None
            body, data = data[: self._body_left], data[self._body_left :]
            self._body_left -= len(body)
            self._shim.protocol.data_received(body)
        self.buffer += data
        if self.mode == "fast" and self.flight is None:
            self._next()
        elif len(self.buffer) > _HIGH_WATER and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self.mode == "all":
            assert self._shim is not None
            self._shim.protocol.eof_received()
        elif self.mode == "fast" and self.flight is None:
            self._next()
        return True  # an answer in progress is still written

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._waiting_for, self._deadline = "", None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.authenticated()
        self.front.connections.discard(self)
        flight, self.flight = self.flight, None
        if flight is not None:
            flight.client_gone()
        shim, self._shim = self._shim, None
        if shim is not None:
            shim.protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._writing(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._writing(False)

    def _writing(self, paused: bool) -> None:
        if self.flight is not None:
            self.flight.downstream_paused(paused)
        elif self._shim is not None and self.mode != "fast":
            self._shim._protocol_paused = paused
            protocol = self._shim.protocol
            if paused:
                protocol.pause_writing()
            else:
                protocol.resume_writing()

    def authenticated(self) -> None:
        """No longer counted as unauthenticated (idempotent)."""
        if self._counted:
            self._counted = False
            self.front.admission.release(self.client_ip)

    def _wait(self, what: str) -> None:
        """Time what the connection waits for: a request's head to complete ("head", from
        its first byte), the next request ("request"), or nothing ("")."""
        if what == self._waiting_for:
            return
        self._waiting_for = what
        delay = self.front.header_timeout if what == "head" else self.front.idle_timeout
        if not what or not delay:
            self._deadline = None
            return
        # One timer per connection, moved only when it would fire too late: a keep-alive
        # connection's requests set deadlines, and arm no timer each.
        loop = self._loop
        self._deadline = loop.time() + delay
        if self._timer is not None and self._timer.when() > self._deadline:
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.closed:
            return
        loop = self._loop
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._timed_out)
            return
        if self.mode == "fast" and self.flight is None:
            log.info("HTTP connection from %s closed: %s timeout", self.client_ip,
                     "header" if self._waiting_for == "head" else "idle")  # fmt: skip
            self.close()

    # --- used by flights -----------------------------------------------------------------
    def cookie(self, header: str, names: CookieNames) -> str | None:
        """The gateway's target cookie in a ``Cookie`` header, read as aiohttp reads it (a
        browser sends the same header request after request: the last answer is kept)."""
        if self._cookie[:2] != (header, names.session):
            values = [m.value for n, m in parse_cookie_header(header) if n == names.session]
            self._cookie = (header, names.session, values[-1] if values else None)
        return self._cookie[2]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def finished(self, keep_open: bool) -> None:
        """The flight's answer is complete."""
        self.flight = None
        if not keep_open:
            self.close()
            return
        self._next()

    # --- reading requests ----------------------------------------------------------------
    def _next(self) -> None:
        if self.closed or self.transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES or (self._eof and self.buffer):
                self._to_aiohttp_for_good()  # aiohttp answers what is wrong with it
            elif self._eof:
                self.close()
            else:
                self._wait("head" if self.buffer else "request")
                self._resume()
            return
        self._wait("")
        head = request_head(bytes(self.buffer[:end]), self._previous)
        if head is None:
            self._to_aiohttp_for_good()
            return
        self._previous = head
        flight = self.front.plan(self, head)
        if flight is None:
            whole = end + 4 + (head.length or 0)
            request = bytes(self.buffer[:whole])
            del self.buffer[:whole]
            self._body_left = whole - len(request)
            self._to_aiohttp_once(request, head.method, head.close)
            return
        del self.buffer[: end + 4]
        self.flight = flight
        flight.start()

    def _resume(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _handler(self) -> _Shim:
        if self._shim is None:
            handler = self.front.server()
            handler.on_authenticated = self.authenticated  # a request it served was signed in
            self._shim = _Shim(self, handler)
            handler.connection_made(self._shim)
        return self._shim

    def _to_aiohttp_once(self, request: bytes, method: str, close: bool) -> None:
        self.mode = "one"
        self._watch = _Watch(method, close)
        self._handler().protocol.data_received(request)

    def _to_aiohttp_for_good(self) -> None:
        self.mode = "all"
        self._watch = None
        protocol = self._handler().protocol
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            protocol.data_received(data)
        if self._eof:
            protocol.eof_received()
        self._resume()

    # --- aiohttp's side, through the shim ------------------------------------------------
    def aiohttp_wrote(self, data: bytes) -> None:
        self.write(data)
        watch = self._watch
        if self.mode != "one" or watch is None:
            return
        try:
            complete = watch.feed(data)
        except BadResponse:
            complete = False
            self._watch = None  # an answer it cannot follow: aiohttp keeps the connection
            self.mode = "all"
            asyncio.get_running_loop().call_soon(self._back)
        if complete and (self._body_left or not watch.keep_alive):
            # the answer ends the connection (asked by either side), or came before the
            # request's body was all sent: nothing after it is read as a request
            self._watch = None
            self.close()
        elif complete:
            self._watch = None
            self.mode = "fast"
            asyncio.get_running_loop().call_soon(self._back)

    def _back(self) -> None:
        if self.mode == "fast" and self.flight is None:
            self._next()
        elif self.mode == "all":
            self._to_aiohttp_for_good()

    def aiohttp_closed(self, abort: bool) -> None:
        if self.mode == "fast":
            # aiohttp ends its idle keep-alive while the fast path uses the connection:
            # only its handler goes.
            shim, self._shim = self._shim, None
            if shim is not None:
                asyncio.get_running_loop().call_soon(shim.protocol.connection_lost, None)
            return
        if abort:
            self.abort()
        else:
            self.close()

    def aiohttp_reading(self, on: bool) -> None:
        if self.mode == "all" and self.transport is not None and not self.closed:
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()


class _Watch:
    """Where aiohttp's answer to one bodiless request ends, read from its bytes."""

    def __init__(self, method: str, close: bool) -> None:
        self.method = method
        self.keep_alive = not close  # and the answer's own Connection header
        self._head = bytearray()
        self._left: int | None = None  # body bytes still to come (Content-Length)
        self._chunks: Chunks | None = None
        self._eof = False

    def feed(self, data: bytes) -> bool:
        """True once the answer is complete; raises BadResponse when it cannot be followed
        (and for an answer that ends only with the connection)."""
        if self._left is None and self._chunks is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_RESPONSE_HEAD:
                    raise BadResponse("head too large")
                return False
            head = response_head(bytes(self._head[:end]))
            if head.status < 200:
                raise BadResponse("an interim answer")
            self.keep_alive = self.keep_alive and head.keep_alive
            data = bytes(self._head[end + 4 :])
            self._head.clear()
            if not has_body(self.method, head.status):
                self._left = 0
            elif head.chunked:
                self._chunks = Chunks()
            elif head.length is not None:
                self._left = head.length
            else:
                raise BadResponse("an answer that ends with the connection")
        if self._chunks is not None:
            taken = self._chunks.feed(data)
            if taken < len(data):
                raise BadResponse("bytes after the answer")
            return self._chunks.done
        assert self._left is not None
        if len(data) > self._left:
            raise BadResponse("bytes after the answer")
        self._left -= len(data)
        return self._left == 0


class _Shim(_FlowControlMixin):
    """The transport aiohttp's request handler is given: writes reach the real connection;
    closing it closes the connection unless the fast path is using it."""

    # asyncio's sendfile (aiohttp's static files) writes through write() here
    _sendfile_compatible = _SendfileMode.FALLBACK

    def __init__(self, conn: FrontConnection, protocol: Any) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self._conn = conn
        self.protocol: Any = protocol
        self._closing = False
        self._protocol_paused = False  # read by asyncio's sendfile fallback

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._conn.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self._closing or self._conn.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.is_closing():
            self._conn.aiohttp_wrote(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._conn.aiohttp_closed(abort=False)

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            self._conn.aiohttp_closed(abort=True)

    def is_reading(self) -> bool:
        return not self._conn._reading_paused

    def pause_reading(self) -> None:
        self._conn.aiohttp_reading(False)

    def resume_reading(self) -> None:
        self._conn.aiohttp_reading(True)

    def get_write_buffer_size(self) -> int:
        transport = self._conn.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        transport = self._conn.transport
        if transport is not None:
            transport.set_write_buffer_limits(high, low)
