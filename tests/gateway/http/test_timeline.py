"""A web session's requests in the replay viewer and the API: in order, filtered by method,
status and path, paged, and only for those who may read the recording."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.web.routes import API
from tests.gateway.http.conftest import WebTargets


async def _session_with_requests(web: WebTargets) -> str:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    (session,) = web.sessions("echo")
    for method, path in (("GET", "a"), ("POST", "api/items"), ("GET", "api/items/7?token=s3")):
        async with browser.request(method, web.base("echo") + path, data=b"") as resp:
            assert resp.status == 200
    async with browser.get(web.base("echo") + "redirect") as resp:
        await resp.read()
    await web.node.registry.terminate(session.id, "terminated by ada: done")
    return session.id


async def _api(web: WebTargets, user: str, path: str) -> tuple[int, Any, str]:
    token, _ = await web.policy.create_token("lockgate", user)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{web.port}{API}{path}", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        body = await resp.json() if "json" in resp.content_type else await resp.text()
        return resp.status, body, resp.headers.get("Link", "")


async def test_the_api_lists_a_web_sessions_requests_filtered_and_paged(web: WebTargets) -> None:
    sid = await _session_with_requests(web)
    status, page, _ = await _api(web, "ada", f"/recordings/{sid}/requests")
    assert status == 200, page
    everything = page["items"]
    methods_paths = [(e["method"], e["path"]) for e in everything if e["kind"] == "request"]
    assert ("POST", "/api/items") in methods_paths and ("GET", "/a") in methods_paths
    assert all("s3" not in e["target"] for e in everything)  # the token's value is masked
    _, posts, _ = await _api(web, "ada", f"/recordings/{sid}/requests?method=POST")
    assert [e["path"] for e in posts["items"]] == ["/api/items"]
    _, api, _ = await _api(web, "ada", f"/recordings/{sid}/requests?path=/api/*")
    assert [e["path"] for e in api["items"]] == ["/api/items", "/api/items/7"]
    _, first, link = await _api(web, "ada", f"/recordings/{sid}/requests?limit=1")
    assert len(first["items"]) == 1 and 'rel="next"' in link and first["next"] in link
    status, body, _ = await _api(web, "ada", f"/recordings/{sid}/requests?status=nope")
    assert status == 422, body
    status, _, _ = await _api(web, "mallory", f"/recordings/{sid}/requests")
    assert status == 404  # another requester's recording does not exist for them


async def test_the_replay_viewer_shows_a_web_session_as_a_request_table(web: WebTargets) -> None:
    sid = await _session_with_requests(web)
    ada = await web.browser("ada")
    async with ada.get(f"{web.gateway}/recordings/{sid}?method=POST") as resp:
        page = await resp.text()
        assert resp.status == 200, page
    assert "<code>/api/items</code>" in page
    assert "/a</code>" not in page  # filtered out
    assert 'id="request-filters"' in page
