"""Ending web sessions: terminate, expiry, revocation, lock and idle cut what is in flight and
every open WebSocket at once; the browser's next request gets the Lockgate page."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import WSMsgType

from gateway.http.session import IDLE_TIMEOUT
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.http.conftest import WebTargets


async def opened(web: WebTargets, target: str = "echo") -> aiohttp.ClientSession:
    await web.grant("alice", target)
    browser = await web.browser("alice")
    landed = await web.open(browser, target)
    assert landed.status == 200
    return browser


async def test_terminate_answers_a_request_still_waiting_for_its_upstream(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    pending = asyncio.ensure_future(browser.get(web.base("echo") + "hang"))
    await web.echo.hanging.wait()
    assert await web.node.registry.terminate(session.id, "terminated by ada: enough")
    # terminate returns once the in-flight request is answered; the upstream never replied
    assert pending.done()
    resp = await pending
    assert resp.status == 403
    assert "session terminated: terminated by ada: enough" in await resp.text()
    assert not web.echo.release.is_set()


async def test_terminate_cuts_a_response_that_is_streaming(web: WebTargets) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    async with browser.get(web.base("echo") + "hang?head=first") as resp:
        assert await resp.content.readline() == b"started\n"
        await web.node.registry.terminate(session.id, "terminated by ada: enough")
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_terminate_closes_an_open_websocket_with_the_reason(web: WebTargets) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
        await web.node.registry.terminate(session.id, "terminated by ada: enough")
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
        assert msg.extra == "lockgate: session terminated: terminated by ada: enough"
    assert await eventually(lambda: web.echo.upstream_closed, what="the upstream socket to close")


async def test_after_a_terminate_the_next_request_gets_the_page_and_no_new_session(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    await web.node.registry.terminate(session.id, "terminated by ada: enough")
    async with browser.get(web.base("echo") + "again") as resp:
        assert resp.status == 403
        text = await resp.text()
    assert "session terminated: terminated by ada: enough" in text
    assert f'href="{web.gateway}/open/echo"' in text
    assert web.sessions("echo") == []
    record = await web.node.services.sessions.get(SYSTEM_ACTOR, session.id)
    assert record.end_reason == "terminated by ada: enough"


async def test_an_admin_terminate_through_the_api_reaches_the_session(web: WebTargets) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await web.node.services.sessions.terminate("ada", session.id, "done here")
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008
        assert "terminated by ada: done here" in (msg.extra or "")


async def test_at_the_grants_end_the_session_ends_on_the_fake_clock(web: WebTargets) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await web.timer.advance(timedelta(hours=1, seconds=1))
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1008)
        assert "grant expired" in (msg.extra or "")
    async with browser.get(web.base("echo") + "x", allow_redirects=False) as resp:
        # the sign-in ended with the grant: back through the hand-off (where a zero-approval
        # rule would grant again, as connecting over SSH does)
        assert resp.status == 303 and "/open/echo" in resp.headers["Location"]

    async def ended() -> str | None:
        return (await web.node.services.sessions.get(SYSTEM_ACTOR, session.id)).end_reason

    assert await eventually(ended, what="the session's end") == "grant expired"


async def test_a_revocation_ends_the_session(web: WebTargets) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    assert session.grant_id is not None
    await web.policy.revoke("ada", session.grant_id, "incident over")
    await web.node.killswitch.recheck_all()
    async with browser.get(web.base("echo") + "x") as resp:
        assert "session terminated: grant revoked by ada: incident over" in await resp.text()


async def test_a_lock_ends_the_session_and_blocks_opening_again(web: WebTargets) -> None:
    browser = await opened(web)
    await web.policy.lock("ada", "user", "alice", "suspicious activity")
    await web.node.killswitch.recheck_all()
    async with browser.get(web.base("echo") + "x") as resp:
        assert "user alice is locked: suspicious activity" in await resp.text()

    async def signed_out() -> bool:  # a lock also ends the person's gateway sign-in
        async with browser.get(f"{web.gateway}/open/echo", allow_redirects=False) as resp:
            return resp.status == 303 and "/login" in resp.headers["Location"]

    await eventually(signed_out, what="the gateway sign-in ended by the lock")
    again = await web.browser("alice")  # signed in anew: still no way in while locked
    async with again.get(f"{web.gateway}/open/echo") as resp:
        assert resp.status == 403
        assert "user alice is locked" in await resp.text()


async def test_a_lock_is_noticed_by_the_next_request_without_any_event(web: WebTargets) -> None:
    browser = await opened(web)
    await web.policy.lock("ada", "target", "echo", "maintenance")
    await web.timer.advance(timedelta(seconds=11))  # past the session's re-check interval
    async with browser.get(web.base("echo") + "x") as resp:
        assert resp.status == 403
        assert "target echo is locked: maintenance" in await resp.text()
    assert web.echo.seen == [] or all(s["raw_path"] != "/x" for s in web.echo.seen)


async def test_an_idle_session_ends_and_the_next_request_quietly_opens_a_new_one(
    web: WebTargets,
) -> None:
    browser = await opened(web)
    (first,) = web.sessions("echo")
    await web.timer.advance(IDLE_TIMEOUT + timedelta(seconds=1))
    await eventually(lambda: not web.sessions("echo"), what="the idle session to end")

    async def ended() -> str | None:  # written just after the session leaves the registry
        return (await web.node.services.sessions.get(SYSTEM_ACTOR, first.id)).end_reason

    await eventually(ended, what="the end recorded")
    assert await ended() == "idle timeout"
    async with browser.get(web.base("echo") + "back") as resp:
        assert resp.status == 200
    (second,) = web.sessions("echo")
    assert second.id != first.id


async def test_an_open_websocket_keeps_a_session_from_going_idle(web: WebTargets) -> None:
    browser = await opened(web)
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await web.timer.advance(IDLE_TIMEOUT + timedelta(seconds=1))
        await ws.send_str("still here")
        assert (await ws.receive()).data == "echo:still here"
    assert len(web.sessions("echo")) == 1


async def test_an_extended_grant_keeps_the_session_past_its_old_end(web: WebTargets) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    assert session.grant_id is not None
    await web.policy.extend("alice", session.grant_id, timedelta(hours=1), "longer")
    await web.node.killswitch.recheck_all()
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await web.timer.advance(timedelta(hours=1, minutes=5))
        await ws.send_str("still here")
        assert (await ws.receive()).data == "echo:still here"
        async with browser.get(web.base("echo") + "x") as resp:
            assert resp.status == 200
    assert web.sessions("echo") == [session]
