"""The fast path's memory of a connection's last heads (``gateway.http.memo``): a repeated head
is rewritten once, and never for a request it does not fit."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import timedelta

import aiohttp

from tests.gateway.http.conftest import DOMAIN, ECHO_KEY, WebTargets
from tests.gateway.http.test_kill import opened
from tests.gateway.http.test_web_fastpath import fast

LENGTH = re.compile(rb"\r\nContent-Length: (\d+)\r\n", re.IGNORECASE)


class Raw:
    """One kept-alive connection that sends exactly the head it is given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, method: str, path: str, host: str, cookie: str) -> tuple[bytes, bytes]:
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        found = LENGTH.search(head)
        assert found is not None, head
        if method == "HEAD":
            return head, b""
        return head, await asyncio.wait_for(self.reader.readexactly(int(found.group(1))), 10)


async def raw(web: WebTargets) -> Raw:
    return Raw(*await asyncio.open_connection("127.0.0.1", web.port))


def echo_cookies(browser: aiohttp.ClientSession) -> str:
    """The Cookie header a browser sends to the echo target's origin."""
    return "; ".join(
        f"{c.key}={c.value}" for c in browser.cookie_jar if c["domain"] in ("", f"echo.{DOMAIN}")
    )


def claims(headers: dict[str, str]) -> dict[str, object]:
    payload = headers["X-Lockgate-Assertion"].split(".")[1]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(decoded, dict)
    return decoded


async def test_the_same_header_lines_to_two_targets_get_each_targets_own_headers(
    path_web: WebTargets,
) -> None:
    web = path_web
    browser = await opened(web, "echo")
    await web.grant("alice", "db_01")
    assert (await web.open(browser, "db_01")).status == 200
    # Both target cookies in one header: the same header lines go to both prefixes.
    cookie = "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar if "_t_" in c.key)
    conn = await raw(web)
    before = fast(web)
    for target in ("echo", "db_01", "echo"):
        _, body = await conn.send("GET", f"/t/{target}/who", f"127.0.0.1:{web.port}", cookie)
        headers = dict(json.loads(body)["headers"])
        assert headers["X-Forwarded-Prefix"] == f"/t/{target}"
        assert claims(headers)["aud"] == target
    for target in ("echo", "db_01", "echo"):
        # one upstream, so the same response head: mapped under each target's own prefix
        head, _ = await conn.send("GET", f"/t/{target}/redirect", f"127.0.0.1:{web.port}", cookie)
        assert f"\r\nLocation: {web.base(target)}landed?from=redirect\r\n".encode() in head
    assert fast(web) == before + 6  # each went the fast way
    assert web.node.front is not None
    held = [c.upstream_fields for c in web.node.front.connections if c.upstream_fields]
    assert held and all(ECHO_KEY.encode() in f.fields for f in held)
    assert all(f.assertion and f.assertion not in repr(f) for f in held)
    assert not any(ECHO_KEY in repr(f) for f in held)


async def test_a_repeated_request_carries_the_assertion_of_its_moment(web: WebTargets) -> None:
    browser = await opened(web)
    cookie = echo_cookies(browser)
    conn = await raw(web)
    host = f"echo.{DOMAIN}:{web.port}"

    async def sent() -> dict[str, object]:
        _, body = await conn.send("GET", "/same", host, cookie)
        return claims(dict(json.loads(body)["headers"]))

    first = await sent()
    # Within a minute of its end: the next request gets a new assertion (this one may
    # go the full way: the sign-in is read again after so long), and so does the one after
    # it with the very same head, which goes the fast way.
    await web.timer.advance(timedelta(minutes=4, seconds=30))
    second = await sent()
    before = fast(web)
    third = await sent()
    assert fast(web) == before + 1
    assert first["jti"] != second["jti"] == third["jti"]
    assert third["iat"] == first["iat"] + 270  # type: ignore[operator]


async def test_get_and_head_of_one_resource_keep_their_own_framing(web: WebTargets) -> None:
    browser = await opened(web)
    cookie = echo_cookies(browser)
    conn = await raw(web)
    host = f"echo.{DOMAIN}:{web.port}"
    before = fast(web)
    for method in ("GET", "HEAD", "GET", "HEAD", "GET"):
        head, body = await conn.send(method, "/fixed", host, cookie)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert body == (b"0123456789" if method == "GET" else b"")
    assert fast(web) == before + 5
