"""The periodic check against a real oidc-provider, on the node's fake clock: a user the
provider disables loses everything (grants, pending requests, API tokens, browser sessions),
a user dropped from a group loses what that group's role carried, and a provider that does
not answer takes nothing away."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.web.routes import API
from policy.models import RequestState
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.oidc.conftest import Corp, Starter
from tests.oidc.idp import account
from tests.target import TARGET_USER

pytestmark = pytest.mark.timeout(120)


async def _with_access(corp: Corp) -> tuple[str, str]:
    """alice signed in through the IdP, with an active grant on db01 and a pending request on
    db02: (grant, request)."""
    policy = corp.node.services.policy
    for name in ("db01", "db02"):
        await policy.add_target(
            SYSTEM_ACTOR, name, host="127.0.0.1", port=22, host_key=None, accounts=[TARGET_USER]
        )
    assert (await corp.sign_in(corp.agent(), "alice"))[0] == 200
    assert (await corp.sign_in(corp.agent(), "bob"))[0] == 200
    granted = await policy.create_request(
        "alice", "db01", duration=timedelta(hours=1), reason="INC-1"
    )
    await policy.approve("bob", granted.id, "ok")
    waiting = await policy.create_request(
        "alice", "db02", duration=timedelta(hours=1), reason="INC-2"
    )
    grant = (await policy.get_request(SYSTEM_ACTOR, granted.id)).grant_id
    assert grant is not None
    return grant, waiting.id


async def test_a_user_the_idp_disables_loses_grants_requests_tokens_and_browser(
    start_corp: Starter,
) -> None:
    corp = await start_corp()
    policy = corp.node.services.policy
    grant_id, request_id = await _with_access(corp)
    browser = corp.agent()
    assert (await corp.sign_in(browser, "alice"))[0] == 200
    token, _ = await policy.create_token(SYSTEM_ACTOR, "alice")

    async def me(headers: dict[str, str]) -> int:
        async with browser.http.get(f"{corp.base}{API}/grants", headers=headers) as response:
            return response.status

    assert await me({"Authorization": f"Bearer {token}"}) == 200
    assert (await browser.get(f"{corp.base}/"))[0] == 200

    await corp.idp.set_account("alice", {**account("alice", ["sre-db"]), "disabled": True})
    await corp.timer.advance(corp.provider.check_interval)

    async def deprovisioned() -> bool:
        return (await policy.get_user("alice")).disabled

    await eventually(deprovisioned, what="alice disabled by the check")

    async def withdrawn() -> bool:
        request = await policy.get_request(SYSTEM_ACTOR, request_id)
        return request.state is RequestState.CANCELLED

    await eventually(withdrawn, what="the pending request cancelled")
    grant = await policy.get_grant(SYSTEM_ACTOR, grant_id)
    assert grant.revoked_at is not None and grant.revoked_by == SYSTEM_ACTOR
    reason = "identity provider corp: refused the refresh (invalid_grant)"
    assert grant.revoke_reason == reason
    (event,) = await corp.audit("user.deprovision")
    assert event.subject == "alice" and event.details["reason"] == reason
    (cancel,) = [e for e in await corp.audit("request.cancel") if e.subject == request_id]
    assert cancel.details["reason"] == reason
    assert await me({"Authorization": f"Bearer {token}"}) == 401
    status, _, location = await browser.get(f"{corp.base}/")
    assert status == 303 and location is not None and "/login" in location
    assert await corp.node.services.vault.refresh_token("alice", "corp") is None

    # back at the IdP and signing in again, alice is enabled (with no access of course)
    await corp.idp.set_account("alice", account("alice", ["sre-db"]))
    assert (await corp.sign_in(corp.agent(), "alice"))[0] == 200
    assert not (await policy.get_user("alice")).disabled
    assert [e.subject for e in await corp.audit("user.reprovision")] == ["alice"]


async def test_a_group_dropped_at_the_idp_takes_its_roles_access_at_the_next_check(
    start_corp: Starter,
) -> None:
    corp = await start_corp()
    policy = corp.node.services.policy
    grant_id, request_id = await _with_access(corp)
    await corp.idp.set_account("alice", account("alice", ["staff"]))
    await corp.timer.advance(corp.provider.check_interval)

    async def revoked() -> bool:
        return (await policy.get_grant(SYSTEM_ACTOR, grant_id)).revoked_at is not None

    await eventually(revoked, what="the grant revoked")
    alice = await policy.get_user("alice")
    assert alice.roles == frozenset() and not alice.disabled  # still a person, no access
    request = await policy.get_request(SYSTEM_ACTOR, request_id)
    assert request.state is RequestState.CANCELLED
    (change,) = [e for e in await corp.audit("user.roles") if e.subject == "alice"]
    assert change.details == {"added": [], "removed": ["dev"], "via": "corp"}


async def test_an_approver_without_grants_is_checked_too_less_often(start_corp: Starter) -> None:
    """bob holds no grant, but approves: he is checked every ten intervals."""
    corp = await start_corp()
    policy = corp.node.services.policy
    assert (await corp.sign_in(corp.agent(), "bob"))[0] == 200
    assert (await policy.get_user("bob")).roles == {"approver"}
    token, _ = await policy.create_token(SYSTEM_ACTOR, "bob")
    await corp.idp.set_account("bob", {**account("bob", ["sec-approvers"]), "disabled": True})
    await corp.timer.advance(corp.provider.check_interval * 10)

    async def deprovisioned() -> bool:
        return (await policy.get_user("bob")).disabled

    await eventually(deprovisioned, what="bob disabled by the check")
    assert await policy.authenticate_token(token) is None


async def test_an_unreachable_provider_takes_nothing_away(start_corp: Starter) -> None:
    corp = await start_corp()
    policy = corp.node.services.policy
    grant_id, _ = await _with_access(corp)
    await corp.idp.stop()
    await corp.timer.advance(corp.provider.check_interval)

    async def audited() -> list[object]:
        return await corp.audit("oidc.check.unreachable")

    await eventually(audited, what="the unreachable provider audited")
    assert (await policy.get_grant(SYSTEM_ACTOR, grant_id)).revoked_at is None
    assert not (await policy.get_user("alice")).disabled


async def test_processes_waking_together_ask_the_provider_once_per_user(
    start_corp: Starter,
) -> None:
    """Every worker process and node runs the check; one refresh per user and interval
    reaches the provider (two of a rotating refresh token look like a stolen one)."""
    import asyncio

    corp = await start_corp()
    await _with_access(corp)
    assert corp.node.deps is not None and corp.node.deps.federation is not None
    federation = corp.node.deps.federation
    identities = federation.identities
    claim, wins = identities.claim, []

    async def counted(*args: object) -> bool:
        won = await claim(*args)  # type: ignore[arg-type]
        wins.append(won)
        return won

    identities.claim = counted  # type: ignore[method-assign]
    before = len(corp.proxy.token_answers)
    await corp.timer.advance(corp.provider.check_interval)  # the node's own loop wakes too
    await asyncio.gather(*(federation.checker.check_provider(corp.provider) for _ in range(3)))

    async def refreshed() -> bool:
        return len(corp.proxy.token_answers) == before + 1

    await eventually(refreshed, what="the refresh")
    assert wins.count(True) == 1 and len(wins) >= 3  # one claim won: one refresh
    (identity,) = await identities.of_user("alice")
    assert identity.checked_at == corp.timer.now()
