"""Real upstream web apps for the proxy's tests, each an aiohttp app on 127.0.0.1:0.

- ``echo``: tells what reached it (method, raw path, query, every header, body size and
  digest) and serves the awkward cases: a large generated body, ``Range``, server-sent
  events, a request that hangs until released, an absolute redirect, cookies, a WebSocket
  echo;
- ``basic``: needs ``Authorization: Basic`` with its one user;
- ``bearer``: needs ``Authorization: Bearer`` with its one token;
- ``login``: its own login form and session cookie.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

BASIC_USER = "svc-grafana"
BASIC_PASSWORD = "canary-basic-6f1d9a"  # a test canary
BEARER_TOKEN = "canary-bearer-42b7c3"
CHUNK = b"0123456789abcdef" * 4096  # 64 KiB


@dataclass
class Echo:
    """State the echo app shares with tests."""

    seen: list[dict[str, object]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    sse_next: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    upstream_closed: list[int | None] = field(default_factory=list)
    port: int = 0
    file: Path | None = None


def echo_app(state: Echo) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        record: dict[str, object] = {
            "method": request.method,
            "raw_path": request.raw_path,
            "path": request.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "size": size,
            "sha256": digest.hexdigest(),
        }
        state.seen.append(record)
        return web.json_response(record, headers={"X-Upstream": "echo"})

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", str(len(CHUNK) * 16)))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        if request.query.get("length") != "no":
            response.content_length = size + int(request.query.get("missing", "0"))
        await response.prepare(request)
        left = size
        while left > 0:
            piece = CHUNK if left >= len(CHUNK) else CHUNK[:left]
            await response.write(piece)
            left -= len(piece)
        if request.query.get("truncate"):
            request.transport.close()  # type: ignore[union-attr]
            return response
        await response.write_eof()
        return response

    async def ranged(request: web.Request) -> web.FileResponse:
        assert state.file is not None
        return web.FileResponse(state.file)

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        while True:
            event = await state.sse_next.get()
            if event == "end":
                break
            await response.write(f"data: {event}\n\n".encode())
        await response.write_eof()
        return response

    async def hang(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if request.query.get("head") == "first":
            await response.prepare(request)
            await response.write(b"started\n")
        state.hanging.set()
        await state.release.wait()
        if not response.prepared:
            await response.prepare(request)
        await response.write(b"done\n")
        return response

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{state.port}/landed?from=redirect")

    async def cookies(request: web.Request) -> web.Response:
        response = web.json_response({"cookies": dict(request.cookies)})
        response.headers.add("Set-Cookie", "app_pref=blue; Domain=127.0.0.1; Path=/")
        response.headers.add("Set-Cookie", "lockgate_session=forged; Path=/")
        return response

    async def head_only(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234, content_type="text/plain")

    async def fixed(request: web.Request) -> web.Response:
        # the same response head for GET and HEAD (within one second of Date)
        return web.Response(body=b"0123456789", content_type="text/plain")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse(protocols=("chat.v2", "chat.v1"))
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "close-me":
                    await sock.close(code=4003, message=b"asked to")
                    break
                await sock.send_str(f"echo:{msg.data}")
            elif msg.type is WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        state.upstream_closed.append(sock.close_code)
        return sock

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/range", ranged)
    app.router.add_get("/sse", sse)
    app.router.add_route("*", "/hang", hang)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/cookies", cookies)
    app.router.add_route("HEAD", "/head", head_only)
    app.router.add_get("/fixed", fixed)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def basic_app() -> web.Application:
    expected = "Basic " + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()

    async def page(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            return web.Response(
                status=401, text="who?", headers={"WWW-Authenticate": 'Basic realm="app"'}
            )
        return web.Response(text=f"basic ok {request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


def bearer_app() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {BEARER_TOKEN}".encode()):
            return web.Response(status=401, text="token?")
        return web.json_response({"ok": True, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


def login_app() -> web.Application:
    sessions: set[str] = set()

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("user") != "ops" or form.get("password") != "app-own-password":
            return web.Response(status=403, text="bad login")
        sid = secrets.token_hex(8)
        sessions.add(sid)
        response = web.HTTPFound("/home")
        response.set_cookie("app_sid", sid, path="/", httponly=True)
        raise response

    async def home(request: web.Request) -> web.Response:
        if request.cookies.get("app_sid") not in sessions:
            raise web.HTTPFound("/login")
        return web.Response(text=json.dumps({"home": True, "sid": request.cookies["app_sid"]}))

    app = web.Application()
    app.router.add_post("/login", login)
    app.router.add_get("/home", home)
    return app


@dataclass
class Served:
    port: int
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> Served:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    return Served(port, runner)


async def stop_all(served: list[Served]) -> None:
    for s in served:
        await s.runner.cleanup()


async def echo_upstream(tmp: Path) -> AsyncIterator[tuple[Echo, Served]]:
    state = Echo()
    state.file = tmp / "ranged.bin"
    state.file.write_bytes(bytes(range(256)) * 64)
    served = await serve(echo_app(state))
    state.port = served.port
    try:
        yield state, served
    finally:
        state.release.set()
        await state.sse_next.put("end")
        await served.runner.cleanup()
