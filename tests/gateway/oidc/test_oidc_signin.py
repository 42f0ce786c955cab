"""Signing in through a real oidc-provider: claims mapped to roles at every sign-in, and every
forged or replayed answer refused (nothing mocked on the wire: the bad tokens are real ones
the provider issued, moved to where they do not belong by a real proxy or user agent)."""

from __future__ import annotations

import logging
from base64 import b64encode
from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from policy.service import SYSTEM_ACTOR
from tests.gateway.oidc.conftest import CLIENT_SECRET, Corp, Starter
from tests.oidc.idp import account, client, start_provider

pytestmark = pytest.mark.timeout(120)


def _replace_query(url: str, **values: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(values)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _refusal(corp: Corp, reason: str) -> None:
    failures = await corp.audit("auth.failure")
    assert [e.details["reason"] for e in failures] == [reason]
    assert failures[0].details["via"] == "oidc"


async def test_good_sign_in_maps_groups_to_roles_and_a_removed_group_loses_its_role(
    start_corp: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    corp = await start_corp()
    policy = corp.node.services.policy
    await policy.add_user(SYSTEM_ACTOR, "helper")  # roles given by hand are kept below
    status, body = await corp.sign_in(corp.agent(), "alice")
    assert status == 200 and "Signed in" in body
    alice = await policy.get_user("alice")
    assert alice.roles == {"dev"} and not alice.has_password
    # a role given by hand survives; a managed one follows the groups, with its access
    await policy.sync_roles("alice", {"dev", "oncall"}, via="test", create=False)
    await policy.add_target(SYSTEM_ACTOR, "db01", host="127.0.0.1", accounts=["root"])
    request = await policy.create_request("alice", "db01", duration=timedelta(hours=1), reason="x")
    await corp.idp.set_account("alice", account("alice", ["admins-eu"]))
    status, _ = await corp.sign_in(corp.agent(), "alice")
    assert status == 200
    assert (await policy.get_user("alice")).roles == {"admin", "oncall"}
    cancelled = await policy.get_request(SYSTEM_ACTOR, request.id)
    assert cancelled.state == "cancelled"
    (change,) = [e for e in await corp.audit("user.roles") if e.details["via"] == "corp"]
    assert change.details["removed"] == ["dev"] and change.details["added"] == ["admin"]
    success = await corp.audit("auth.success")
    assert [e.details["provider"] for e in success] == ["corp", "corp"]
    text = repr([e.details for e in await corp.node.services.audit.events()])
    assert CLIENT_SECRET not in text and "eyJ" not in text  # no secret, no token in the log
    tokens = [v for a in corp.proxy.token_answers for k, v in a.items() if k.endswith("token")]
    assert len(tokens) >= 6  # id, access and refresh token of each sign-in
    for secret in (CLIENT_SECRET, *tokens):
        assert secret not in caplog.text and secret not in text
    async with corp.node.services.maker() as db:  # the refresh token is sealed at rest
        rows = (await db.execute(sa.text("SELECT * FROM vault_credentials"))).all()
    stored = repr(rows)
    assert all(t.encode() not in stored.encode() and t not in stored for t in tokens)
    refresh = await corp.node.services.vault.refresh_token("alice", "corp")
    assert (
        refresh is not None
        and refresh.reveal_text() == corp.proxy.token_answers[-1]["refresh_token"]
    )


async def test_the_sign_in_page_has_one_button_per_provider(start_corp: Starter) -> None:
    from gateway.oidc.settings import parse_provider

    lab = parse_provider(
        {"name": "lab", "issuer": "https://idp.invalid", "client_id": "x", "label": "Lab SSO"}
    )
    corp = await start_corp(others=(lab,))
    status, body, _ = await corp.agent().get(f"{corp.base}/login?next=/approvals")
    assert status == 200
    assert body.count('class="provider"') == 2
    assert 'href="/auth/oidc/corp/start?next=%2Fapprovals">Sign in with corp<' in body
    assert 'href="/auth/oidc/lab/start?next=%2Fapprovals">Lab SSO<' in body
    status, _, _ = await corp.agent().get(f"{corp.base}/auth/oidc/nope/start")
    assert status == 404


async def test_unverified_email_is_refused(start_corp: Starter) -> None:
    corp = await start_corp()
    status, body = await corp.sign_in(corp.agent(), "eve")
    assert status == 403 and "not verified" in body
    await _refusal(corp, "email_unverified")
    assert "eve" not in {u.name for u in await corp.node.services.policy.list_users()}


async def test_callback_state_is_bound_to_the_browser_that_started_it(start_corp: Starter) -> None:
    """Login CSRF: an attacker's code and state, planted in the victim's browser, sign
    nobody in; nor does a callback without a state."""
    corp = await start_corp()
    attacker, victim = corp.agent(), corp.agent()
    authorize = await attacker.redirected(f"{corp.base}/auth/oidc/corp/start")
    planted = await attacker.sign_in_at_provider(authorize, "alice", corp.callback)
    await victim.redirected(f"{corp.base}/auth/oidc/corp/start")  # the victim's own flow
    status, body, _ = await victim.get(planted)
    assert status == 403 and "another browser" in body
    status, _, _ = await victim.get(_replace_query(planted, state=""))
    assert status == 403
    assert [e.details["reason"] for e in await corp.audit("auth.failure")] == ["state", "state"]


async def test_a_replayed_code_is_refused(start_corp: Starter) -> None:
    corp = await start_corp()
    agent = corp.agent()
    authorize = await agent.redirected(f"{corp.base}/auth/oidc/corp/start")
    callback = await agent.sign_in_at_provider(authorize, "alice", corp.callback)
    assert (await agent.get(callback))[0] == 200
    status, _, _ = await agent.get(callback)  # the same answer again: its state is spent
    assert status == 403
    # the same code under a fresh state of this browser: the provider refuses it
    fresh = await agent.redirected(f"{corp.base}/auth/oidc/corp/start")
    state = parse_qs(urlsplit(fresh).query)["state"][0]
    status, _, _ = await agent.get(_replace_query(callback, state=state))
    assert status == 403
    assert [e.details["reason"] for e in await corp.audit("auth.failure")] == ["state", "code"]


async def test_a_nonce_other_than_the_one_sent_is_refused(start_corp: Starter) -> None:
    """A user agent that swaps the nonce on its way to the provider gets a real token with
    that nonce back, which the gateway refuses."""
    corp = await start_corp()
    agent = corp.agent()
    authorize = await agent.redirected(f"{corp.base}/auth/oidc/corp/start")
    callback = await agent.sign_in_at_provider(
        _replace_query(authorize, nonce="chosen-by-the-attacker"), "alice", corp.callback
    )
    status, body, _ = await agent.get(callback)
    assert status == 403 and "nonce" in body
    await _refusal(corp, "nonce")


async def _id_token_for(
    corp: Corp, client_id: str, nonce: str, *, port_of: str | None = None
) -> str:
    """A real ID token the provider at ``port_of`` (default: corp's) issues to ``client_id``
    for alice, with ``nonce``; the test is the client here."""
    import aiohttp

    from gateway.oidc.client import pkce_pair

    base = port_of or corp.idp.url
    redirect = "http://127.0.0.1:9/cb"
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": "openid",
        "state": "s",
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    agent = corp.agent()
    done = await agent.sign_in_at_provider(f"{base}/auth?{urlencode(query)}", "alice", redirect)
    code = parse_qs(urlsplit(done).query)["code"][0]
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
            },
            headers={
                "Authorization": "Basic " + b64encode(f"{client_id}:other-secret".encode()).decode()
            },
        ) as response,
    ):
        answer = await response.json()
        assert response.status == 200, answer
    return str(answer["id_token"])


async def _swapped_sign_in(corp: Corp, token_for: object) -> tuple[int, str]:
    agent = corp.agent()
    authorize = await agent.redirected(f"{corp.base}/auth/oidc/corp/start")
    nonce = parse_qs(urlsplit(authorize).query)["nonce"][0]
    forged = await token_for(nonce)  # type: ignore[operator]
    corp.proxy.tamper_token = lambda answer: {**answer, "id_token": forged}
    callback = await agent.sign_in_at_provider(authorize, "alice", corp.callback)
    status, body, _ = await agent.get(callback)
    return status, body


async def test_an_id_token_for_another_client_is_refused(start_corp: Starter) -> None:
    corp = await start_corp()
    await corp.idp.stop()
    corp.idp = await start_provider(
        corp.workdir,
        clients=[
            client("lockgate", CLIENT_SECRET, [corp.callback]),
            client("other", "other-secret", ["http://127.0.0.1:9/cb"]),
        ],
        accounts={"alice": account("alice", ["sre-db"])},
        jwk=corp.jwk,
        issuer=corp.proxy.url,
    )
    corp.proxy.backend = corp.idp.url

    async def other_client(nonce: str) -> str:
        return await _id_token_for(corp, "other", nonce)

    status, body = await _swapped_sign_in(corp, other_client)
    assert status == 403 and "another client" in body
    await _refusal(corp, "aud")


async def test_an_id_token_signed_by_another_key_is_refused(start_corp: Starter) -> None:
    """A second provider with the same issuer, client and key id but its own key."""
    from tests.oidc.idp import rsa_jwk

    corp = await start_corp()
    rogue = await start_provider(
        corp.workdir,
        clients=[client("lockgate", "other-secret", ["http://127.0.0.1:9/cb"])],
        accounts={"alice": account("alice", ["sre-db"])},
        jwk=rsa_jwk("k1"),
        issuer=corp.proxy.url,
    )
    try:

        async def rogue_token(nonce: str) -> str:
            return await _id_token_for(corp, "lockgate", nonce, port_of=rogue.url)

        status, body = await _swapped_sign_in(corp, rogue_token)
    finally:
        await rogue.stop()
    assert status == 403 and "signature" in body
    await _refusal(corp, "signature")


async def test_an_expired_id_token_is_refused(start_corp: Starter) -> None:
    """The provider issues ID tokens valid 30 s; the gateway's clock has moved on past
    that and the 60 s skew by the time the callback arrives."""
    corp = await start_corp()
    await corp.idp.stop()
    corp.idp = await start_provider(
        corp.workdir,
        clients=[client("lockgate", CLIENT_SECRET, [corp.callback])],
        accounts={"alice": account("alice", ["sre-db"])},
        jwk=corp.jwk,
        issuer=corp.proxy.url,
        id_token_ttl=30,
    )
    corp.proxy.backend = corp.idp.url
    agent = corp.agent()
    authorize = await agent.redirected(f"{corp.base}/auth/oidc/corp/start")
    callback = await agent.sign_in_at_provider(authorize, "alice", corp.callback)
    # (the gateway's clock stood still since the node started; the token was issued a
    # little later on the real one)
    await corp.timer.advance(timedelta(minutes=5))
    status, body, _ = await agent.get(callback)
    assert status == 403 and "expired" in body
    await _refusal(corp, "expired")


async def test_without_auto_create_or_link_existing_nobody_new_gets_in(
    start_corp: Starter,
) -> None:
    corp = await start_corp(auto_create=False)
    status, body = await corp.sign_in(corp.agent(), "alice")
    assert status == 403 and "no Lockgate user alice" in body
    await corp.node.services.policy.add_user(SYSTEM_ACTOR, "alice", roles=["dev"])
    status, body = await corp.sign_in(corp.agent(), "alice")
    assert status == 403 and "not linked to corp" in body
    reasons = [e.details["reason"] for e in await corp.audit("auth.failure")]
    assert reasons == ["no_user", "not_linked"]
    assert (await corp.node.services.policy.get_user("alice")).roles == {"dev"}
