"""The policy service on real databases: flows, fake-clock expiry, and concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from policy.errors import (
    AccessDenied,
    ConcurrentUpdate,
    Conflict,
    InvalidInput,
    InvalidTransition,
    NotFound,
    Refused,
)
from policy.models import RequestState, Rule
from policy.service import SYSTEM_ACTOR, PolicyService
from policy.tables import metadata as policy_tables
from tests.libdb import AuditLog, SessionMaker, create_tables


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


RULES = [
    Rule(
        name="dev-prod",
        roles=frozenset({"dev"}),
        approvals=2,
        approver_roles=frozenset({"approver"}),
        channels=frozenset({"shell", "exec"}),
    ),
    Rule(
        name="ops-auto",
        roles=frozenset({"ops"}),
        approvals=0,
        require_reason=False,
        targets=("web*",),
    ),
]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def svc(engine: AsyncEngine, maker: SessionMaker, clock: Clock) -> PolicyService:
    await create_tables(engine, policy_tables)
    audit = await AuditLog.create(engine, maker)
    svc = PolicyService(maker, RULES, audit, clock=clock)
    await svc.add_user(SYSTEM_ACTOR, "alice", roles=["dev"])
    await svc.add_user(SYSTEM_ACTOR, "olga", roles=["ops"])
    for name in ("bob", "carol", "dave"):
        await svc.add_user(SYSTEM_ACTOR, name, roles=["approver"])
    await svc.add_target(SYSTEM_ACTOR, "db01", host="10.0.0.1", accounts=["root", "postgres"])
    await svc.add_target(SYSTEM_ACTOR, "web01", host="10.0.0.2", accounts=["deploy"])
    return svc


async def _granted(svc: PolicyService) -> str:
    req = await svc.create_request("alice", "db01", account="root", reason="INC-1")
    await svc.approve("bob", req.id)
    done = await svc.approve("carol", req.id)
    assert done.state is RequestState.APPROVED and done.grant_id
    return done.grant_id


async def test_grant_flow_and_session_checks(svc: PolicyService, clock: Clock) -> None:
    auth = await svc.authorize_session("alice", "db01", "root", "shell")
    assert not auth.decision.allowed and auth.decision.reason == "no_grant"
    grant_id = await _granted(svc)
    auth = await svc.authorize_session("alice", "db01", None, "exec")
    assert auth.decision.allowed and auth.grant and auth.grant.id == grant_id
    assert auth.account == "root"
    assert (
        await svc.authorize_session("alice", "db01", "root", "sftp")
    ).decision.reason == "channel_not_allowed"
    await svc.lock(SYSTEM_ACTOR, "user", "alice", "suspicious", timedelta(minutes=10))
    assert (
        await svc.authorize_session("alice", "db01", "root", "shell")
    ).decision.reason == "user_locked"
    clock.advance(minutes=11)
    assert (await svc.authorize_session("alice", "db01", "root", "shell")).decision.allowed
    await svc.lock(SYSTEM_ACTOR, "target", "db01", "maintenance")
    assert (
        await svc.authorize_session("alice", "db01", "root", "shell")
    ).decision.reason == "target_locked"
    await svc.unlock(SYSTEM_ACTOR, "target", "db01")
    clock.advance(minutes=50)  # the grant's hour is over
    assert (
        await svc.authorize_session("alice", "db01", "root", "shell")
    ).decision.reason == "no_grant"


async def test_auto_approval_and_refusals(svc: PolicyService) -> None:
    req = await svc.create_request("olga", "web01")
    assert req.state is RequestState.APPROVED and req.grant_id
    with pytest.raises(AccessDenied, match="no rule"):
        await svc.create_request("olga", "db01", account="root")
    with pytest.raises(Refused, match="reason"):
        await svc.create_request("alice", "db01", account="root")
    with pytest.raises(Refused, match="at most 4h"):
        await svc.create_request("alice", "db01", reason="x", duration=timedelta(hours=5))
    with pytest.raises(Refused, match="no account"):
        await svc.create_request("alice", "db01", account="admin", reason="x")
    with pytest.raises(NotFound):
        await svc.create_request("alice", "nosuch", reason="x")
    await svc.create_request("alice", "db01", reason="x")
    with pytest.raises(Conflict, match="pending"):
        await svc.create_request("alice", "db01", reason="again")


async def test_visibility(svc: PolicyService) -> None:
    req = await svc.create_request("alice", "db01", reason="x")
    assert [r.id for r in await svc.list_requests("bob")] == [req.id]  # an approver
    assert await svc.list_requests("olga") == []  # another requester
    with pytest.raises(NotFound):
        await svc.get_request("olga", req.id)
    with pytest.raises(NotFound):
        await svc.approve("olga", req.id)  # not an approver: the request does not exist
    with pytest.raises(NotFound):
        await svc.cancel("bob", req.id)
    assert (await svc.cancel("alice", req.id)).state is RequestState.CANCELLED


async def test_pending_request_expiry(svc: PolicyService, clock: Clock) -> None:
    req = await svc.create_request("alice", "db01", reason="x")
    clock.advance(hours=25)
    assert (await svc.get_request("alice", req.id)).state is RequestState.EXPIRED
    with pytest.raises(InvalidTransition):
        await svc.approve("bob", req.id)
    assert await svc.expire_requests() == 1


async def test_extension_moves_expiry(svc: PolicyService, clock: Clock) -> None:
    grant_id = await _granted(svc)
    before = (await svc.get_grant("alice", grant_id)).expires_at
    ext = await svc.extend("alice", grant_id, timedelta(minutes=30), "need more time")
    assert ext.extends_grant == grant_id and ext.state is RequestState.PENDING
    with pytest.raises(NotFound):
        await svc.extend("bob", grant_id, timedelta(minutes=30), "x")
    await svc.approve("bob", ext.id)
    await svc.approve("dave", ext.id)
    after = (await svc.get_grant("alice", grant_id)).expires_at
    assert after - before == timedelta(minutes=30)


async def test_revoke(svc: PolicyService) -> None:
    grant_id = await _granted(svc)
    with pytest.raises(NotFound):
        await svc.revoke("bob", grant_id, "x")
    revoked = await svc.revoke("alice", grant_id, "done early")
    assert revoked.revoked_by == "alice" and revoked.revoke_reason == "done early"
    with pytest.raises(InvalidTransition):
        await svc.revoke(SYSTEM_ACTOR, grant_id, "again")


async def test_concurrent_decisions_make_one_transition(svc: PolicyService) -> None:
    """Ten approvers and deniers race on one request that needs two approvals: it ends in
    exactly one terminal state, and the audit chain records exactly the transitions made."""
    for i in range(6):
        await svc.add_user(SYSTEM_ACTOR, f"ap{i}", roles=["approver"])
    req = await svc.create_request("alice", "db01", reason="race")
    calls = [svc.approve(f"ap{i}", req.id, "ok") for i in range(6)]
    calls += [svc.deny(name, req.id, "no") for name in ("bob", "carol", "dave")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    final = await svc.get_request("alice", req.id)
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, InvalidTransition) for e in errors), errors
    assert final.state in (RequestState.APPROVED, RequestState.DENIED)
    if final.state is RequestState.APPROVED:
        assert len(ok) == 2 and all(r.state is not RequestState.DENIED for r in ok)
        grants = await svc.list_grants(SYSTEM_ACTOR)
        assert len(grants) == 1
    else:
        assert sum(r.state is RequestState.DENIED for r in ok) == 1
    assert len(final.approvals) == len(ok)
    audit = svc.audit
    assert isinstance(audit, AuditLog)
    decisions = [e for e in await audit.events() if e.action in ("request.approve", "request.deny")]
    assert len(decisions) == len(ok)
    assert (await audit.verify()).ok


async def test_concurrent_revocations_make_one(svc: PolicyService) -> None:
    grant_id = await _granted(svc)
    results = await asyncio.gather(
        *(svc.revoke(SYSTEM_ACTOR, grant_id, f"r{i}") for i in range(8)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, InvalidTransition) for r in results if isinstance(r, BaseException))


async def test_users_keys_passwords(svc: PolicyService) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key().decode().strip() + " alice@laptop"
    user = await svc.add_user(
        SYSTEM_ACTOR, "erin", roles=["dev"], public_keys=[line], password="a long enough password"
    )
    assert user.has_password and len(user.public_keys) == 1
    assert "password" not in repr(user).replace("has_password", "")
    assert await svc.user_for_key("erin", line)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    assert await svc.user_for_key("erin", other) is None
    assert await svc.verify_password("erin", "a long enough password")
    assert await svc.verify_password("erin", "wrong password!!") is None
    assert await svc.verify_password("nobody", "a long enough password") is None
    await svc.disable_user(SYSTEM_ACTOR, "erin")
    assert await svc.verify_password("erin", "a long enough password") is None
    assert await svc.user_for_key("erin", line) is None
    with pytest.raises(InvalidInput):
        await svc.add_user(SYSTEM_ACTOR, "x+y")
    with pytest.raises(InvalidInput):
        await svc.add_user(SYSTEM_ACTOR, "frank", password="short")
    with pytest.raises(InvalidInput):
        await svc.add_user(SYSTEM_ACTOR, "frank", public_keys=["ssh-ed25519 AAAAnotakey"])
    with pytest.raises(AccessDenied):
        await svc.add_user("alice", "frank")
    with pytest.raises(Conflict):
        await svc.add_user(SYSTEM_ACTOR, "alice")


async def test_tokens(svc: PolicyService, clock: Clock) -> None:
    token, info = await svc.create_token(SYSTEM_ACTOR, "alice", timedelta(hours=1))
    assert token not in repr(info)
    assert (await svc.authenticate_token(token)) is not None
    assert await svc.authenticate_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert await svc.authenticate_token("garbage") is None
    with pytest.raises(AccessDenied):
        await svc.create_token("alice", "bob")
    clock.advance(hours=2)
    assert await svc.authenticate_token(token) is None
    token2, _ = await svc.create_token("alice", "alice")
    await svc.disable_user(SYSTEM_ACTOR, "alice")
    assert await svc.authenticate_token(token2) is None


async def test_audit_failure_aborts_action(
    svc: PolicyService, maker: SessionMaker, clock: Clock
) -> None:
    from tests.libdb import FailingAudit

    broken = PolicyService(maker, RULES, FailingAudit(), clock=clock)
    with pytest.raises(RuntimeError):
        await broken.create_request("alice", "db01", reason="x")
    assert await svc.list_requests(SYSTEM_ACTOR) == []
    with pytest.raises(RuntimeError):
        await broken.add_user(SYSTEM_ACTOR, "zed")
    with pytest.raises(NotFound):
        await svc.get_user("zed")


async def test_password_hashing_needs_authorization_first(
    svc: PolicyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import policy.service.users as service_module

    calls: list[str] = []
    monkeypatch.setattr(service_module, "hash_password", lambda p: calls.append(p) or "x")
    with pytest.raises(AccessDenied):
        await svc.add_user("alice", "zed", password="a long enough password")
    with pytest.raises(AccessDenied):
        await svc.set_password("alice", "bob", "a long enough password")
    assert calls == []


async def test_a_duplicate_request_on_a_target_named_concurrently_is_a_plain_conflict(
    svc: PolicyService,
) -> None:
    """The retry keys on ConcurrentUpdate, not on a word in the message."""
    await svc.add_target(SYSTEM_ACTOR, "concurrently", host="10.0.0.9", accounts=["root"])
    await svc.create_request("alice", "concurrently", account="root", reason="INC-1")
    with pytest.raises(Conflict) as caught:
        await svc.create_request("alice", "concurrently", account="root", reason="INC-1")
    assert not isinstance(caught.value, ConcurrentUpdate)
    assert "already have pending request" in str(caught.value)
