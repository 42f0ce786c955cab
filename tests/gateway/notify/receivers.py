"""Real receivers for outgoing notifications, on loopback: an aiohttp app with a signed
webhook endpoint (checks the HMAC independently of the gateway's code), a Slack-style
incoming webhook, and an endpoint that keeps failing; and an aiosmtpd SMTP server that
insists on STARTTLS and a login."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.target import free_port


@dataclass
class Hooks:
    secret: bytes = b""
    fail_first: int = 0  # the webhook answers 503 to this many requests first
    webhook: list[dict[str, Any]] = field(default_factory=list)  # accepted deliveries
    webhook_refused: int = 0
    bad_signatures: int = 0
    slack: list[dict[str, Any]] = field(default_factory=list)
    broken_calls: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Lockgate-Timestamp", "")
        mac = hmac.new(self.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(
            request.headers.get("X-Lockgate-Signature", ""), f"sha256={mac}"
        ):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.fail_first > 0:
            self.fail_first -= 1
            self.webhook_refused += 1
            return web.Response(status=503)
        self.webhook.append(
            {"headers": dict(request.headers), "body": json.loads(body), "raw": body}
        )
        return web.Response(status=204)

    async def _slack(self, request: web.Request) -> web.Response:
        self.slack.append(
            {"headers": dict(request.headers), "body": json.loads(await request.read())}
        )
        return web.Response(text="ok")

    async def _broken(self, request: web.Request) -> web.Response:
        self.broken_calls += 1
        return web.Response(status=500)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._webhook)
        app.router.add_post("/slack", self._slack)
        app.router.add_post("/broken", self._broken)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Mailbox:
    """aiosmtpd with STARTTLS required before AUTH; accepted messages kept in order."""

    tls: ssl.SSLContext
    login: tuple[bytes, bytes]
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)
    controller: Controller | None = None
    port: int = field(default_factory=free_port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == self.login
        if ok:
            self.logins.append(data.login)
        return AuthResult(success=ok)

    def start(self) -> None:
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=self.tls,
            require_starttls=True,
            auth_required=True,
            authenticator=self._authenticate,
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()


def tls_context(cert: Any, directory: Path) -> ssl.SSLContext:
    context: ssl.SSLContext = cert.server_context(directory)
    return context
