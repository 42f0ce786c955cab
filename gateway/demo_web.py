"""``lockgate demo``'s second target: a small web console, reached through the gateway.

The app listens on 127.0.0.1 only and answers 401 to every request (page, static file and
WebSocket alike) that lacks ``Authorization: Bearer <token>``, with a token made for this run
that lives only in the vault (an ``http_header`` credential), so the only way in is through
Lockgate, which adds it. The page says who is signed in, from the gateway's signed
``X-Lockgate-Assertion`` verified against its JWKS once ``trust_gateway`` has named the
gateway, has a form that POSTs, and a WebSocket (``/ws``) that ticks every second and echoes
what is sent, so a kill visibly cuts it. All paths are relative, so the app also works under a
path prefix. ``gateway.demo_web_setup`` provisions it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import pathlib
import secrets
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from gateway.http.assertion import HEADER, JWKS_PATH, AssertionInvalid, verify

DEMO_WEB_TARGET = "demo-web"  # also the audience of the assertions it accepts

_FILES = pathlib.Path(__file__).parent / "templates" / "demo_web"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_FILES), autoescape=True, undefined=jinja2.StrictUndefined
)
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LEEWAY = timedelta(seconds=5)
_KEYS_TTL = timedelta(minutes=5)
_REFETCH_AFTER = timedelta(seconds=10)  # an unknown key id refetches, at most this often


def _now() -> datetime:
    return datetime.now(UTC)


def _clock_text(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


# --- who is behind the shared credential ---------------------------------------------


@dataclass(frozen=True)
class Identity:
    subject: str = ""
    roles: tuple[str, ...] = ()
    grant: str = ""
    session: str = ""
    expires: str = ""
    verified: bool = False
    problem: str = ""


@dataclass
class _Trust:
    """Which gateway's assertions this app believes, and its keys as last fetched."""

    audience: str = DEMO_WEB_TARGET
    issuer: str | None = None
    jwks_url: str | None = None
    keys: dict[str, Any] | None = None
    fetched: datetime | None = None
    http: aiohttp.ClientSession | None = None

    async def fetch(self, now: datetime) -> dict[str, Any]:
        assert self.jwks_url is not None
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        async with self.http.get(self.jwks_url) as response:
            response.raise_for_status()
            keys = await response.json(content_type=None)
        if not isinstance(keys, dict):
            raise ValueError("the key set is not a JSON object")
        self.keys, self.fetched = keys, now
        return keys

    async def identify(self, token: str, now: datetime) -> Identity:
        if self.issuer is None:
            return _unverified(token, "this demo has not been told the gateway's keys")
        try:
            stale = self.fetched is None or now - self.fetched > _KEYS_TTL
            keys = await self.fetch(now) if stale or self.keys is None else self.keys
            try:
                claims = verify(
                    token, keys, audience=self.audience, issuer=self.issuer, now=now, leeway=_LEEWAY
                )
            except AssertionInvalid as exc:
                fetched = self.fetched or now
                if exc.reason != "unknown-key" or now - fetched < _REFETCH_AFTER:
                    raise
                claims = verify(
                    token,
                    await self.fetch(now),
                    audience=self.audience,
                    issuer=self.issuer,
                    now=now,
                    leeway=_LEEWAY,
                )
        except AssertionInvalid as exc:
            return Identity(problem=str(exc))
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return _unverified(token, "the gateway's keys could not be fetched")
        return Identity(
            subject=str(claims.get("sub", "")),
            roles=tuple(str(r) for r in claims.get("roles", []) if isinstance(r, str)),
            grant=str(claims.get("grant", "")),
            session=str(claims.get("sid", "")),
            expires=_clock_text(datetime.fromtimestamp(float(claims["exp"]), UTC)),
            verified=True,
        )

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.close()


def _unverified(token: str, problem: str) -> Identity:
    """The subject as the token says, for display only, labelled as not verified."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        subject = claims.get("sub") if isinstance(claims, dict) else None
    except (IndexError, ValueError, binascii.Error):
        subject = None
    if not isinstance(subject, str) or not subject:
        return Identity(problem="the assertion is unreadable")
    return Identity(subject=subject[:100], problem=problem)


# --- the app -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Note:
    at: str
    who: str
    text: str


@dataclass
class _State:
    token: str
    trust: _Trust = field(default_factory=_Trust)
    notes: deque[_Note] = field(default_factory=lambda: deque(maxlen=20))
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)


STATE = web.AppKey("demo_web_state", _State)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _bearer_only(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Every path needs the run's bearer token; compared in constant time."""
    expected = f"Bearer {request.app[STATE].token}".encode()
    sent = request.headers.get("Authorization", "").encode("utf-8", "replace")
    if not secrets.compare_digest(sent, expected):
        return web.Response(
            status=401,
            text="This demo console is reached through Lockgate, which adds its credential.\n",
            headers={"WWW-Authenticate": 'Bearer realm="lockgate-demo"', **_HEADERS},
        )
    response = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        response.headers.update(_HEADERS)
    return response


async def _identity(request: web.Request) -> Identity:
    token = request.headers.get(HEADER, "")
    if not token:
        return Identity()
    return await request.app[STATE].trust.identify(token, _now())


async def _index(request: web.Request) -> web.Response:
    state = request.app[STATE]
    html = _ENV.get_template("index.html").render(
        identity=await _identity(request), now=_clock_text(_now()), notes=list(state.notes)
    )
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _post_note(request: web.Request) -> web.Response:
    form = await request.post()
    text = str(form.get("note", "")).strip()[:200]
    if not text:
        raise web.HTTPBadRequest(text="A note needs some text.\n")
    who = (await _identity(request)).subject or "someone"
    request.app[STATE].notes.appendleft(_Note(_clock_text(_now()), who, text))
    raise web.HTTPSeeOther("./")


def _static(name: str, content_type: str) -> _Handler:
    body = (_FILES / name).read_bytes()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    return serve


async def _socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=65536, timeout=2.0)  # 2 s for a closing handshake
    await ws.prepare(request)
    request.app[STATE].sockets.add(ws)

    async def tick() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not ws.closed:
                await ws.send_json({"type": "tick", "time": _clock_text(_now())})
                await asyncio.sleep(1)

    ticker = asyncio.ensure_future(tick())
    try:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_json({"type": "echo", "text": str(message.data)[:1000]})
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    return ws


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[STATE].sockets):
        await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"demo stopping")
    await app[STATE].trust.aclose()


def build_demo_web(token: str) -> web.Application:
    if not token:
        raise ValueError("the demo web app needs a token")
    app = web.Application(middlewares=[_bearer_only], client_max_size=64 * 1024)
    app[STATE] = _State(token)
    app.router.add_get("/", _index)
    app.router.add_post("/notes", _post_note)
    app.router.add_get("/ws", _socket)
    app.router.add_get("/static/demo.js", _static("demo.js", "text/javascript"))
    app.router.add_get("/static/demo.css", _static("demo.css", "text/css"))
    app.on_shutdown.append(_close_sockets)
    return app


async def start_demo_web(token: str, *, port: int = 0) -> tuple[web.AppRunner, str]:
    """Serve the app on 127.0.0.1 (``port`` 0: any free one); returns (runner, base URL)."""
    runner = web.AppRunner(build_demo_web(token), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/"


def trust_gateway(runner: web.AppRunner, issuer: str, jwks_url: str | None = None) -> None:
    """Verify assertions from ``issuer`` with the keys at ``jwks_url`` (by default
    ``<issuer>/.well-known/jwks.json``, fetched when first needed)."""
    trust = runner.app[STATE].trust
    trust.issuer = issuer
    trust.jwks_url = jwks_url or issuer.rstrip("/") + JWKS_PATH
    trust.keys = trust.fetched = None
