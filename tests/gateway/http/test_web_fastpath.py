"""The web fast path (``gateway.http.fastpath``): bodiless GETs and HEADs of a live web
session relayed on raw sockets, everything else through aiohttp on the same connection, and
each answered exactly as the full path answers it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.http.wire import Chunks
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.gateway.http.conftest import DOMAIN, ECHO_KEY, WEB_RULE, Starter, WebTargets
from tests.gateway.http.test_kill import opened
from tests.gateway.http.upstreams import CHUNK
from vault.secret import Secret


def fast(web: WebTargets) -> float:
    return float(web.node.metrics.http_fastpath._value.get())


async def get(browser: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with browser.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.read()


async def test_after_the_hand_off_page_loads_go_fast_and_a_post_does_not(
    web: WebTargets,
) -> None:
    browser = await opened(web)  # the hand-off went through aiohttp on this connection
    before = fast(web)
    status, body = await get(browser, web.base("echo") + "a/b?x=1")
    assert status == 200 and fast(web) == before + 1  # the connection came back to it
    seen = json.loads(body)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert seen["raw_path"] == "/a/b?x=1"
    assert headers["x-api-key"] == ECHO_KEY  # the vaulted credential, injected
    assert "lockgate" not in headers.get("cookie", "")
    assert headers["x-forwarded-host"] == f"echo.{DOMAIN}:{web.port}"
    assert "x-lockgate-assertion" in headers
    async with browser.post(web.base("echo") + "form", data=b"a=1") as resp:
        assert resp.status == 200 and (await resp.json())["size"] == 3
    assert fast(web) == before + 1  # a body goes the full way
    assert (await get(browser, web.base("echo") + "again"))[0] == 200
    assert fast(web) == before + 2  # and the connection comes back after it
    (session,) = web.sessions("echo")
    assert session.bytes_down > 0 and len(web.echo.seen) >= 3


async def test_chunked_streamed_and_bodiless_answers_keep_their_framing(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    before = fast(web)
    size = len(CHUNK) * 5 + 7
    async with browser.get(web.base("echo") + f"big?length=no&size={size}") as resp:
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Length" not in resp.headers
        body = await resp.read()
    expected = (CHUNK * 6)[:size]
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    async with browser.head(web.base("echo") + "head") as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == "1234"
        assert await resp.read() == b""
    async with browser.get(web.base("echo") + "sse") as resp:
        for event in ("one", "two"):
            await web.echo.sse_next.put(event)
            line = await asyncio.wait_for(resp.content.readline(), 10)
            assert line == f"data: {event}\n".encode()  # as it arrives, not when it ends
            await resp.content.readline()
        await web.echo.sse_next.put("end")
        assert await resp.read() == b""
    assert fast(web) == before + 3


async def test_a_body_the_upstream_breaks_off_cuts_the_browsers_connection(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    before = fast(web)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with browser.get(web.base("echo") + "big?truncate=1&size=1000000&length=no") as resp:
            await resp.read()
    assert fast(web) == before + 1
    assert (await get(browser, web.base("echo") + "after"))[0] == 200  # a new connection


async def test_terminate_answers_a_waiting_request_and_cuts_a_streaming_one(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    streaming = await browser.get(web.base("echo") + "hang?head=first", allow_redirects=False)
    assert await streaming.content.readline() == b"started\n"
    web.echo.hanging.clear()
    waiting = asyncio.ensure_future(get(browser, web.base("echo") + "hang"))
    await web.echo.hanging.wait()
    before = fast(web)
    assert await web.node.registry.terminate(session.id, "terminated by ada: enough")
    status, body = await waiting
    assert status == 403 and b"session terminated: terminated by ada: enough" in body
    with pytest.raises(aiohttp.ClientPayloadError):
        await streaming.read()
    assert fast(web) == before  # both were fast-path flights before the terminate
    assert not session.fast


@pytest.fixture
async def raw_upstream() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A target that answers each request with what the test queued, byte for byte."""
    answers: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(answers.pop(0))
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/", answers
    server.close()


RAW_RULE = Rule(
    name="raw",
    roles=frozenset({"dev"}),
    targets=("raw",),
    approvals=0,
    require_reason=False,
    channels=frozenset({"http"}),
)


async def test_an_answer_framed_two_ways_is_refused_and_never_relayed(
    start_web: Starter, raw_upstream: tuple[str, list[bytes]]
) -> None:
    url, answers = raw_upstream
    web = await start_web("host", rules=(WEB_RULE, RAW_RULE))
    await web.policy.add_target(SYSTEM_ACTOR, "raw", kind="http", url=url, accounts=["svc"])
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    smuggled = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nHTTP/1.1 200 OK\r\n"
    )
    answers += [ok, ok, smuggled]
    await web.node.services.vault.set_credential(
        SYSTEM_ACTOR, "raw", "svc", "http_header", Secret("k"), public={"header": "X-Key"}
    )
    browser = await opened(web, "raw")
    before = fast(web)
    assert await get(browser, web.base("raw") + "x") == (200, b"ok")
    status, body = await get(browser, web.base("raw") + "y")
    assert status == 502 and b"unclear" in body and b"HTTP/1.1 200" not in body
    assert fast(web) == before + 2


async def test_pipelined_requests_are_answered_in_order_and_smuggling_goes_to_aiohttp(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    cookie = "; ".join(
        f"{c.key}={c.value}" for c in browser.cookie_jar if c["domain"] in ("", f"echo.{DOMAIN}")
    )
    host = f"echo.{DOMAIN}:{web.port}"
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    request = f"GET /{{}} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n"
    before = fast(web)
    writer.write(request.format("one").encode() + request.format("two").encode())
    for name in ("one", "two"):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        assert json.loads(await reader.readexactly(length))["path"] == f"/{name}"
    assert fast(web) == before + 2
    writer.write(
        f"GET /three HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode()
    )
    answer = await reader.read()  # refused by the full path, and the connection closed
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request") and fast(web) == before + 2
    writer.close()
    assert [s["path"] for s in web.echo.seen][-2:] == ["/one", "/two"]


async def test_with_the_fast_path_off_every_request_goes_through_aiohttp(
    start_web: Starter,
) -> None:
    web = await start_web("host", fastpath=False)
    browser = await opened(web)
    assert (await get(browser, web.base("echo") + "plain"))[0] == 200
    assert fast(web) == 0


def test_chunked_bodies_end_where_their_last_chunk_says() -> None:
    body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    for step in (1, 3, len(body)):
        chunks, taken = Chunks(), 0
        for i in range(0, len(body), step):
            piece = body[i : i + step]
            used = chunks.feed(piece)
            taken += used
            if chunks.done:
                break
            assert used == len(piece)
        assert chunks.done and body[:taken].endswith(b"\r\n\r\n") and body[taken:] == b"NEXT"
