"""Refused web-target requests leave audit events with their true reason, as SSH's do: a
hand-off without a grant or on a locked target, a method or path outside the grant's rule,
a state change from another site; a person hammering a refused path writes a burst, not a
flood."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from gateway.refusals import BURST
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.http.conftest import GUARDED_RULE, WEB_RULE, Starter, WebTargets

LIMITED = replace(WEB_RULE, http_methods=("GET",), http_paths=("/ok/*",))


async def _refusals(web: WebTargets, action: str) -> list[Any]:
    return [e for e in await web.node.services.audit.events() if e.action == action]


async def test_web_refusals_are_audited_with_their_reason_and_rate_limited(
    start_web: Starter,
) -> None:
    web = await start_web("host", rules=(LIMITED, GUARDED_RULE))
    alice = await web.browser("alice")
    # The hand-off without a grant.
    async with alice.get(f"{web.gateway}/open/vault-ui") as resp:
        assert resp.status == 403
    (no_grant,) = await _refusals(web, "session.refused")
    assert (no_grant.actor, no_grant.subject) == ("alice", "@vault-ui")
    assert no_grant.details["code"] == "no_grant" and no_grant.details["via"] == "http"
    assert no_grant.details["client"] == "127.0.0.1" and no_grant.details["reason"]
    # Requests outside the grant's rule, and one from another site.
    await web.grant("alice", "echo")
    assert (await web.open(alice, "echo", "/ok/1")).status == 200
    (session,) = web.sessions("echo")
    async with alice.get(web.base("echo") + "admin/users") as resp:
        assert resp.status == 403
    own = {"Origin": web.origin("echo")}
    async with alice.delete(web.base("echo") + "ok/1", headers=own) as resp:
        assert resp.status == 403
    async with alice.post(
        web.base("echo") + "ok/1", data=b"x", headers={"Origin": web.origin("shop")}
    ) as resp:
        assert resp.status == 403
    outside, method, cross = await _refusals(web, "request.refused")
    assert outside.subject == session.id and outside.details["target"] == "echo"
    assert "GET /admin/users is not allowed by the grant's rule web" in outside.details["reason"]
    assert "DELETE /ok/1 is not allowed" in method.details["reason"]
    assert "another site" in cross.details["reason"] and cross.subject == "echo"
    assert cross.details["origin"] == web.origin("shop")
    # A locked target: the hand-off is refused with the lock's reason.
    await web.grant("mallory", "echo")
    await web.policy.lock(SYSTEM_ACTOR, "target", "echo", "incident 42")
    # The lock cuts the live session (its sign-ins end with it) before anyone signs in anew.
    await eventually(lambda: session.ended is not None, what="the lock's kill")
    mallory = await web.browser("mallory")
    assert (await web.open(mallory, "echo")).status == 403
    locked = [e for e in await _refusals(web, "session.refused") if e.actor == "mallory"]
    assert len(locked) == 1 and locked[0].details["code"] == "target_locked"
    assert "incident 42" in locked[0].details["reason"] or "locked" in locked[0].details["reason"]
    # A flood of refused requests: a burst is written, the rest counted.
    await web.policy.unlock(SYSTEM_ACTOR, "target", "echo")
    # A moment later (the fake clock stands still otherwise): a sign-in made after an end
    # is not ended by it, one made at the same instant would be.
    await web.timer.advance(timedelta(seconds=1))
    bob = await web.browser("alice")
    assert (await web.open(bob, "echo", "/ok/2")).status == 200
    for _ in range(2 * BURST):
        async with bob.get(web.base("echo") + "admin") as resp:
            assert resp.status == 403
    refused = await _refusals(web, "request.refused")
    assert len(refused) == BURST, [(e.subject, e.details.get("reason")) for e in refused]
    assert (await web.node.services.audit.verify()).ok
