"""Lists are filtered by viewer in the query and paged with ``limit`` and a cursor."""

from __future__ import annotations

from typing import Any, get_origin

from gateway.sessions.records import NewSession
from gateway.web.routes import API
from policy.service import SYSTEM_ACTOR
from recorder.recorder import Recorder
from tests.gateway.web.conftest import Web


async def _record(web: Web, user: str, n: int) -> list[str]:
    recorder = Recorder(web.node.config.recordings_path, web.node.services.maker)
    ids = []
    for i in range(n):
        sid = f"se-{user}-{i:03d}"
        await web.node.services.sessions.started(
            NewSession(sid, "ssh", user, "db01", "root", None, "127.0.0.1")
        )
        rec = await recorder.start(sid, meta={"user": user, "target": "db01", "kind": "ssh"})
        rec.output(b"hello\r\n")
        await rec.close("done")
        ids.append(sid)
    return ids


async def _all_pages(web: Web, path: str, role: str) -> tuple[list[Any], int]:
    items: list[Any] = []
    pages = 0
    url: str | None = path
    while url is not None:
        status, body, headers = await web.call("GET", url, role)
        assert status == 200, body
        assert set(body) == {"items", "next"}
        items += body["items"]
        pages += 1
        link = headers.get("Link")
        assert (link is None) == (body["next"] is None)
        url = link[link.index("<") + 1 : link.index(">")] if link else None
        if url is not None:
            assert f"cursor={body['next']}" in url
    return items, pages


async def test_a_requesters_older_recordings_are_listed_past_others_newer_ones(web: Web) -> None:
    mine = await _record(web, "alice", 3)
    await _record(web, "mallory", 6)  # newer, and more of them than one page
    items, pages = await _all_pages(web, f"{API}/recordings?limit=2", "requester")
    assert sorted(i["session"] for i in items) == sorted(mine)
    assert pages == 2
    everything, _ = await _all_pages(web, f"{API}/recordings?limit=4", "auditor")
    assert len(everything) == 9
    assert len({i["session"] for i in everything}) == 9  # no row twice across pages


async def test_sessions_are_paged_newest_first_without_repeats(web: Web) -> None:
    await _record(web, "alice", 5)
    items, pages = await _all_pages(web, f"{API}/sessions?limit=2", "requester")
    assert [i["id"] for i in items] == [f"se-alice-{i:03d}" for i in range(4, -1, -1)]
    assert pages == 3
    others, _ = await _all_pages(web, f"{API}/sessions?limit=2", "other")
    assert others == []


async def test_bad_paging_parameters_are_clear_problems(web: Web) -> None:
    for query in ("limit=0", "limit=501", "limit=ten", "cursor=not%20ours"):
        for path in ("/recordings", "/sessions", "/users"):
            status, body, _ = await web.call("GET", f"{API}{path}?{query}", "auditor")
            assert status == 422, (path, query, body)
            assert body["type"] == "urn:lockgate:problem:invalid-input"


async def test_a_cursor_this_server_did_not_give_out_is_no_such_page(web: Web) -> None:
    for path in ("/recordings", "/sessions", "/users", "/audit"):
        status, body, _ = await web.call("GET", f"{API}{path}?cursor=bm90LW91cnM", "auditor")
        assert status == 404, (path, body)
        assert body["type"] == "urn:lockgate:problem:not-found" and "cursor" in body["detail"]


async def test_every_list_route_pages_with_limit_and_cursor(web: Web) -> None:
    from gateway.web.routes import TABLE

    for name in ("carol", "dave", "erin"):
        await web.policy.add_user(SYSTEM_ACTOR, name, roles=["dev"])
    for name in ("carol", "dave"):
        await web.policy.lock(SYSTEM_ACTOR, "user", name, "test")
    # No route answers a bare array: every list is a page.
    assert [r.path for r in TABLE.routes if get_origin(r.returns) in (list, tuple)] == []
    listed = [
        r.path
        for r in TABLE.routes
        if r.method == "GET" and r.paged and "{" not in r.path and r.path != "/recordings/search"
    ]
    assert {"/users", "/targets", "/requests", "/grants", "/locks", "/audit"} <= set(listed)
    for path in listed:
        whole, _ = await _all_pages(web, f"{API}{path}?limit=500", "admin")
        paged, pages = await _all_pages(web, f"{API}{path}?limit=1", "admin")
        assert paged == whole, path
        assert pages == max(1, len(whole)), path
