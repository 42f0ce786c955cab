"""Reaching upstreams: TLS verified as each target says, pools per target, reuse reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from gateway.http.target import TargetUnusable, WebTarget, parse_base_url
from gateway.http.upstream import Attempt, Timeouts, UpstreamPool, describe_failure, ssl_setting
from tests.gateway.http.certs import ServerCert, ca_signed, self_signed

Serve = Callable[[ServerCert | None], Awaitable[int]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def hello(request: web.Request) -> web.StreamResponse:
        if request.path != "/stream":
            return web.Response(text="hello")
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.sleep(0.05)
        await response.write(b"second")
        return response

    async def start(cert: ServerCert | None) -> int:
        app = web.Application()
        app.router.add_get("/{tail:.*}", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        directory = tmp_path / f"c{len(runners)}"
        directory.mkdir()
        ctx = cert.server_context(directory) if cert else None
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        runners.append(runner)
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    p = UpstreamPool(Timeouts(connect=5, first_byte=5, idle=7))
    yield p
    await p.aclose()


async def fetch(pool: UpstreamPool, target: WebTarget) -> tuple[int, Attempt]:
    attempt = Attempt()
    async with pool.client(target).get(target.url("/", ""), trace_request_ctx=attempt) as resp:
        await resp.read()
        return resp.status, attempt


async def test_a_pinned_fingerprint_reaches_a_self_signed_upstream(
    serve: Serve, pool: UpstreamPool
) -> None:
    cert = self_signed()
    port = await serve(cert)
    target = parse_base_url(
        "console", f"https://127.0.0.1:{port}/", tls_fingerprint=cert.fingerprint
    )
    assert (await fetch(pool, target))[0] == 200


async def test_a_different_certificate_than_the_pinned_one_is_refused(
    serve: Serve, pool: UpstreamPool
) -> None:
    port = await serve(self_signed())
    other = self_signed().fingerprint
    target = parse_base_url("console", f"https://127.0.0.1:{port}/", tls_fingerprint=other)
    with pytest.raises(Exception) as caught:
        await fetch(pool, target)
    failure = describe_failure(caught.value)
    assert failure.status == 502 and "pinned" in failure.what


async def test_a_target_ca_bundle_verifies_its_upstream(serve: Serve, pool: UpstreamPool) -> None:
    cert = ca_signed()
    port = await serve(cert)
    target = parse_base_url("console", f"https://127.0.0.1:{port}/", tls_ca=cert.ca_pem.decode())
    assert (await fetch(pool, target))[0] == 200


async def test_a_certificate_from_another_ca_is_refused_with_a_clear_reason(
    serve: Serve, pool: UpstreamPool
) -> None:
    port = await serve(ca_signed())
    wrong_ca = ca_signed().ca_pem.decode()
    target = parse_base_url("console", f"https://127.0.0.1:{port}/", tls_ca=wrong_ca)
    with pytest.raises(Exception) as caught:
        await fetch(pool, target)
    failure = describe_failure(caught.value)
    assert failure.status == 502 and "did not verify" in failure.what


async def test_the_system_store_does_not_trust_a_self_signed_upstream(
    serve: Serve, pool: UpstreamPool
) -> None:
    port = await serve(self_signed())
    with pytest.raises(Exception) as caught:
        await fetch(pool, parse_base_url("console", f"https://127.0.0.1:{port}/"))
    assert "did not verify" in describe_failure(caught.value).what


async def test_verification_off_reaches_any_upstream(serve: Serve, pool: UpstreamPool) -> None:
    port = await serve(self_signed())
    target = parse_base_url("console", f"https://127.0.0.1:{port}/", tls_verify=False)
    assert (await fetch(pool, target))[0] == 200


async def test_an_unusable_ca_bundle_is_reported_not_ignored() -> None:
    target = parse_base_url("console", "https://x/", tls_ca="not a certificate")
    with pytest.raises(TargetUnusable):
        ssl_setting(target)


async def test_connection_reuse_is_reported_per_request(serve: Serve, pool: UpstreamPool) -> None:
    port = await serve(None)
    target = parse_base_url("app", f"http://127.0.0.1:{port}/")
    first = await fetch(pool, target)
    second = await fetch(pool, target)
    assert (first[1].reused, second[1].reused) == (False, True)


async def test_each_target_has_its_own_pool_rebuilt_when_its_settings_change(
    serve: Serve, pool: UpstreamPool
) -> None:
    port = await serve(None)
    a = parse_base_url("a", f"http://127.0.0.1:{port}/")
    b = parse_base_url("b", f"http://127.0.0.1:{port}/")
    assert pool.client(a) is pool.client(a)
    assert pool.client(a) is not pool.client(b)
    old = pool.client(a)
    assert pool.client(replace(a, preserve_host=True)) is not old
    assert (await fetch(pool, a))[0] == 200


async def test_once_the_head_arrives_the_read_timeout_is_the_idle_timeout(
    serve: Serve, pool: UpstreamPool
) -> None:
    port = await serve(None)
    target = parse_base_url("app", f"http://127.0.0.1:{port}/")
    async with pool.client(target).get(target.url("/stream", "")) as resp:
        assert resp.connection is not None and resp.connection.protocol is not None
        assert resp.connection.protocol.read_timeout == 5
        pool.streaming(resp)
        assert resp.connection.protocol.read_timeout == 7
        await resp.read()


def test_unreachable_and_slow_upstreams_are_told_apart() -> None:
    assert describe_failure(TimeoutError()).status == 504
    assert describe_failure(ConnectionResetError()).status == 502
