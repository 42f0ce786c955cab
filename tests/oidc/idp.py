"""A real OpenID provider for the tests: the npm package ``oidc-provider`` (installed from
``tests/oidc/package-lock.json`` with ``npm ci`` the first time) run by Node.js with
``provider.mjs``, on a free loopback port, with the clients, keys and accounts a test gives.

``Proxy`` is a real reverse proxy in front of it (the provider's issuer is the proxy's URL):
it passes everything through, and a test may rewrite the token endpoint's answer on the
wire to show what the gateway does with a token the real flow would not give it.
``Agent`` is a plain HTTP user agent (cookies, manual redirects) that signs in at the
provider the way a browser does, and stops at the gateway's callback.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).parent
HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def ensure_installed() -> None:
    """``npm ci`` into tests/oidc/node_modules unless it is there (pinned by the lockfile);
    parallel test workers install it one at a time."""
    with (HERE / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install()


def _install() -> None:
    if (HERE / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    assert npm is not None, "the OIDC tests need npm (Debian package npm) and Node.js"
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def rsa_jwk(kid: str) -> dict[str, Any]:
    """A fresh RSA signing key as a private JWK."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


def client(client_id: str, secret: str, redirect_uris: list[str]) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }


def account(
    name: str, groups: list[str], *, email_verified: bool = True, disabled: bool = False
) -> dict[str, Any]:
    return {
        "claims": {
            "preferred_username": name,
            "name": name.title(),
            "email": f"{name}@example.test",
            "email_verified": email_verified,
            "groups": groups,
        },
        "disabled": disabled,
    }


@dataclass
class Provider:
    process: asyncio.subprocess.Process
    port: int
    issuer: str
    admin_token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def set_account(self, sub: str, value: dict[str, Any]) -> None:
        """Change an account at run time (groups, claims, ``disabled``)."""
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"{self.url}/__admin/accounts/{sub}",
                json=value,
                headers={"Authorization": f"Bearer {self.admin_token}"},
            ) as response,
        ):
            assert response.status == 204, response.status

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def start_provider(
    workdir: Path,
    *,
    clients: list[dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
    jwk: dict[str, Any],
    issuer: str | None = None,
    id_token_ttl: int | None = None,
) -> Provider:
    ensure_installed()
    token = secrets.token_urlsafe(24)
    config = {
        "issuer": issuer,
        "jwks": {"keys": [jwk]},
        "clients": clients,
        "accounts": accounts,
        "idTokenTtl": id_token_ttl,
        "adminToken": token,
    }
    path = workdir / f"idp-{secrets.token_hex(4)}.json"
    path.write_text(json.dumps(config))
    node = shutil.which("node")
    assert node is not None, "the OIDC tests need Node.js"
    process = await asyncio.create_subprocess_exec(
        node, str(HERE / "provider.mjs"), str(path), stdout=asyncio.subprocess.PIPE, cwd=HERE
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    port = int(json.loads(line)["port"])
    return Provider(process, port, issuer or f"http://127.0.0.1:{port}", token)


@dataclass
class Proxy:
    """A reverse proxy on 127.0.0.1:0 in front of ``backend`` (set once it is known)."""

    runner: web.AppRunner | None = None
    port: int = 0
    backend: str = ""
    # Rewrites the token endpoint's JSON answer (to the gateway) on its way back.
    tamper_token: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    token_answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with (
            aiohttp.ClientSession(auto_decompress=False) as http,
            http.request(
                request.method,
                self.backend + request.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as upstream,
        ):
            payload = await upstream.read()
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP]
            if request.path.endswith("/token") and upstream.status == 200:
                answer = json.loads(payload)
                if self.tamper_token is not None:
                    answer = self.tamper_token(answer)
                    payload = json.dumps(answer).encode()
                self.token_answers.append(answer)
            response = web.Response(status=upstream.status, body=payload)
            for key, value in out:
                response.headers.add(key, value)
            return response

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Agent:
    """A user agent: cookies kept (loopback hosts included), redirects followed by hand."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def aclose(self) -> None:
        await self.http.close()

    async def get(self, url: str) -> tuple[int, str, str | None]:
        """(status, body, absolute Location)"""
        async with self.http.get(url, allow_redirects=False) as response:
            location = response.headers.get("Location")
            return (
                response.status,
                await response.text(),
                urljoin(url, location) if location else None,
            )

    async def redirected(self, url: str) -> str:
        status, body, location = await self.get(url)
        assert status in (302, 303) and location, (status, body[:500])
        return location

    async def sign_in_at_provider(self, authorize_url: str, login: str, stop_at: str) -> str:
        """Follow the provider's pages from ``authorize_url``, signing in as ``login``,
        until a redirect to ``stop_at`` (the gateway's callback), which is returned."""
        url = authorize_url
        for _ in range(10):
            if url.startswith(stop_at):
                return url
            status, body, location = await self.get(url)
            if location:
                url = location
                continue
            assert status == 200 and 'name="login"' in body, (status, body[:500])
            async with self.http.post(
                url,
                data={"prompt": "login", "login": login, "password": "x"},
                allow_redirects=False,
            ) as response:
                location = response.headers.get("Location")
                assert location, (response.status, (await response.text())[:500])
                url = urljoin(url, location)
        raise AssertionError(f"no redirect to {stop_at}")
