"""``lockgate demo``'s web target through the proxy, as a newcomer meets it: signed in on the
gateway, the console opens with a token they never saw and names them from a verified
assertion; an admin's terminate closes its WebSocket at once."""

from __future__ import annotations

import json

from aiohttp import WSMsgType

from gateway.demo import DEMO_USER
from gateway.demo_web import DEMO_WEB_TARGET, start_demo_web, trust_gateway
from gateway.demo_web_setup import DEMO_WEB_RULE, new_token, provision_web
from policy.service import SYSTEM_ACTOR
from tests.gateway.http.conftest import Starter


async def test_the_demo_console_opens_through_the_gateway_and_is_cut_by_terminate(
    start_web: Starter,
) -> None:
    web = await start_web("path", rules=(DEMO_WEB_RULE,))
    token = new_token()
    runner, url = await start_demo_web(token)
    try:
        services = web.node.services
        await services.policy.add_user(SYSTEM_ACTOR, DEMO_USER, roles=["demo"])
        assert await provision_web(services, url, token)
        trust_gateway(runner, issuer=web.gateway)
        browser = await web.browser(DEMO_USER)
        async with browser.get(web.base(DEMO_WEB_TARGET)) as page:
            html = await page.text()
        assert page.status == 200 and str(page.url) == web.base(DEMO_WEB_TARGET)
        assert "verified against the gateway" in html
        assert f'<strong id="subject">{DEMO_USER}</strong>' in html
        assert token not in html
        async with browser.ws_connect(web.base(DEMO_WEB_TARGET) + "ws", origin=web.gateway) as ws:
            tick = await ws.receive()
            assert json.loads(tick.data)["type"] == "tick"
            (session,) = web.sessions(DEMO_WEB_TARGET)
            await services.sessions.terminate("ada", session.id, "demo over")
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                pass  # ticks already on their way
            assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1008)
            assert "terminated by ada: demo over" in (msg.extra or "")
        async with browser.get(web.base(DEMO_WEB_TARGET)) as resp:
            assert "session terminated: terminated by ada: demo over" in await resp.text()
    finally:
        await runner.cleanup()
