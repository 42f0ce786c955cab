"""The SSH device login with real OpenSSH and a real oidc-provider: only the same person,
freshly signed in at the provider, can approve it; under ``mfa_per_session`` it counts only
when the provider reports a second factor the rule's ``idp_mfa`` accepts."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

import pytest

from policy.models import Rule
from tests.gateway.oidc.conftest import CLIENT_SECRET, Corp, Starter
from tests.gateway.oidc.test_oidc_in_chromium import device_ssh
from tests.oidc.idp import Agent, account
from tests.target import TARGET_USER, Sshd, register_target

pytestmark = pytest.mark.timeout(180)

MFA_RULE = Rule(
    name="mfa",
    roles=frozenset({"dev"}),
    approvals=0,
    require_reason=False,
    mfa_per_session=True,
    idp_mfa=frozenset({"otp", "hwk"}),
)


async def _link(ssh: asyncio.subprocess.Process) -> str:
    assert ssh.stderr is not None
    shown = b""
    while b"/ssh/" not in shown:
        shown += await asyncio.wait_for(ssh.stderr.readline(), 30)
    found = re.search(rb"http://\S+/ssh/([A-Z]{4}-[A-Z]{4})", shown)
    assert found is not None, shown
    return found.group(0).decode()


async def _decide(corp: Corp, agent: Agent, link: str, decision: str = "approve") -> int:
    _, body, _ = await agent.get(link)
    csrf = re.search(r'name="csrf" value="([^"]+)"', body)
    token = csrf.group(1) if csrf else await corp.csrf(agent)
    async with agent.http.post(
        link, data={"csrf": token, "decision": decision}, headers={"Origin": corp.base}
    ) as response:
        return response.status


async def _connect(
    corp: Corp, command: str, login: str = f"alice+{TARGET_USER}@db01"
) -> asyncio.subprocess.Process:
    argv = device_ssh(corp.node.ssh_port, login, command)
    argv[1:1] = ["-o", "NumberOfPasswordPrompts=1"]
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_only_alice_freshly_signed_in_can_approve_her_ssh_login(
    start_corp: Starter, sshd: Sshd
) -> None:
    corp = await start_corp()
    await register_target(corp.node.services, sshd)
    alice, bob = corp.agent(), corp.agent()
    assert (await corp.sign_in(alice, "alice"))[0] == 200
    await corp.timer.advance(timedelta(minutes=11))  # alice's sign-in is now stale
    assert (await corp.sign_in(bob, "bob"))[0] == 200
    ssh = await _connect(corp, "true")
    try:
        link = await _link(ssh)
        assert await _decide(corp, bob, link) == 403  # not bob's to approve
        status, body, _ = await alice.get(link)
        assert status == 200 and 'id="approve"' not in body and "Sign in with corp" in body
        assert await _decide(corp, alice, link) == 403
        # signing in again (the provider remembers her) makes it fresh: she denies it
        assert (await corp.sign_in(alice, "alice"))[0] == 200
        assert await _decide(corp, alice, link, "deny") == 200
        assert await asyncio.wait_for(ssh.wait(), 30) == 255
    finally:
        if ssh.returncode is None:
            ssh.kill()
            await ssh.wait()
    (denied,) = await corp.audit("auth.device.deny")
    assert denied.actor == "alice"
    assert not corp.node.registry.sessions


async def test_under_mfa_per_session_only_a_second_factor_at_the_idp_counts(
    start_corp: Starter, sshd: Sshd
) -> None:
    corp = await start_corp(rules=(MFA_RULE,))
    services = corp.node.services
    await register_target(services, sshd)
    await corp.idp.set_account("alice", {**account("alice", ["sre-db"]), "amr": ["pwd"]})
    first = corp.agent()
    assert (await corp.sign_in(first, "alice"))[0] == 200
    await services.policy.create_request("alice", "db01", account=TARGET_USER)

    ssh = await _connect(corp, "echo in")
    link = await _link(ssh)
    assert await _decide(corp, first, link) == 200
    assert await asyncio.wait_for(ssh.wait(), 30) == 255  # a password alone at the IdP

    await corp.idp.set_account("alice", {**account("alice", ["sre-db"]), "amr": ["pwd", "otp"]})
    second = corp.agent()  # a new browser: a new sign-in at the provider, with the code
    assert (await corp.sign_in(second, "alice"))[0] == 200
    ssh = await _connect(corp, "echo in")
    link = await _link(ssh)
    assert await _decide(corp, second, link) == 200
    assert ssh.stdout is not None
    assert await asyncio.wait_for(ssh.stdout.read(), 30) == b"in\n"
    assert await asyncio.wait_for(ssh.wait(), 30) == 0
    failures = [e.details["method"] for e in await corp.audit("auth.failure")]
    assert "device-mfa" in failures


async def test_a_linked_user_with_a_password_may_answer_the_link_with_it(
    start_corp: Starter,
) -> None:
    """A break-glass admin linked to the provider keeps a password: the link comes with a
    password prompt, and the password signs in without the browser."""
    import asyncssh

    from policy.service import SYSTEM_ACTOR

    corp = await start_corp(link_existing=True)
    password = "break glass 4821"
    await corp.node.services.policy.add_user(SYSTEM_ACTOR, "bob", password=password)
    assert (await corp.sign_in(corp.agent(), "bob"))[0] == 200
    seen: list[tuple[str, list[tuple[str, bool]]]] = []

    class Client(asyncssh.SSHClient):
        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
        ) -> list[str]:
            seen.append((instructions, prompts))
            return [password] if prompts else []

    conn, _ = await asyncssh.create_connection(
        Client,
        "127.0.0.1",
        corp.node.ssh_port,
        username="bob",
        known_hosts=None,
        client_keys=None,
        preferred_auth="keyboard-interactive",
    )
    conn.close()
    ((instructions, prompts),) = seen
    assert "/ssh/" in instructions and prompts[0][0].startswith("Password (empty")


async def test_the_link_may_be_approved_on_another_node(
    start_corp: Starter, sshd: Sshd, db_url: str, tmp_path: Path
) -> None:
    """The SSH connection is held by one node, the browser reaches another (a load
    balancer's choice): the approval reaches the waiting login through the database."""
    from tests.nodes import start_test_node
    from tests.oidc.idp import client, start_provider

    auto = Rule(name="auto", roles=frozenset({"dev"}), approvals=0, require_reason=False)
    corp = await start_corp(rules=(auto,))
    (tmp_path / "second").mkdir()
    other = await start_test_node(
        db_url,
        tmp_path / "second",
        name="oidc-b",
        rules=(auto,),
        timer=corp.timer,
        oidc=(corp.provider,),
        master_key=corp.node.config.master_key,
    )
    try:
        second = f"http://127.0.0.1:{other.http_port}"
        await corp.idp.stop()
        corp.idp = await start_provider(
            corp.workdir,
            clients=[
                client(
                    "lockgate", CLIENT_SECRET, [corp.callback, f"{second}/auth/oidc/corp/callback"]
                )
            ],
            accounts={"alice": account("alice", ["sre-db"])},
            jwk=corp.jwk,
            issuer=corp.proxy.url,
        )
        corp.proxy.backend = corp.idp.url
        await register_target(corp.node.services, sshd)
        browser = corp.agent()
        authorize = await browser.redirected(f"{second}/auth/oidc/corp/start")
        callback = await browser.sign_in_at_provider(
            authorize, "alice", f"{second}/auth/oidc/corp/callback"
        )
        assert (await browser.get(callback))[0] == 200
        await corp.node.services.policy.create_request("alice", "db01", account=TARGET_USER)
        ssh = await _connect(corp, "echo across")
        link = (await _link(ssh)).replace(corp.base, second)
        _, body, _ = await browser.get(link)
        token = re.search(r'name="csrf" value="([^"]+)"', body)
        assert token is not None, body[:500]
        async with browser.http.post(
            link, data={"csrf": token.group(1), "decision": "approve"}, headers={"Origin": second}
        ) as response:
            assert response.status == 200
        assert ssh.stdout is not None
        assert await asyncio.wait_for(ssh.stdout.read(), 30) == b"across\n"
        assert await asyncio.wait_for(ssh.wait(), 30) == 0
    finally:
        await other.stop()


async def test_ssh_alice_at_gw_login_signs_in_through_the_link(start_corp: Starter) -> None:
    corp = await start_corp()
    alice = corp.agent()
    assert (await corp.sign_in(alice, "alice"))[0] == 200
    ssh = await _connect(corp, "login", login="alice")
    assert await _decide(corp, alice, await _link(ssh)) == 200
    assert ssh.stdout is not None
    out = (await asyncio.wait_for(ssh.stdout.read(), 30)).decode()
    assert await asyncio.wait_for(ssh.wait(), 30) == 0
    assert out.startswith("Signed in as alice (roles: dev).")
