"""API routes of the access lifecycle: targets and rules to read, requests, approvals,
grants and locks. Ownership and approver rights are decided by the policy service."""

from __future__ import annotations

from typing import Any

from gateway.web import schemas as s
from gateway.web.limits import duration, optional_duration
from gateway.web.routes import TABLE, USER, Call
from policy.errors import NotFound
from policy.models import AccessRequest, Grant, Lock, Rule, Target

route = TABLE.add


async def _visible_targets(call: Call) -> list[Target]:
    """Auditors see every target; others the ones they may request."""
    policy = call.deps.services.policy
    assert call.who is not None
    if call.who.user.is_auditor:
        return await policy.list_targets()
    return [r.target for r in await policy.requestable(call.actor)]


@route(
    "GET",
    "/targets",
    "Targets the caller may see (requesters: may request)",
    tag="access",
    query=s.Paged,
    returns=Target,
    paged=True,
)
async def list_targets(call: Call) -> Any:
    seen: dict[str, Target] = {}
    for target in await _visible_targets(call):
        seen.setdefault(target.name, target)
    return list(seen.values())


@route("GET", "/targets/{name}", "One target", tag="access", returns=Target, etag=True)
async def get_target(call: Call) -> Any:
    name = call.arg("name")
    for target in await _visible_targets(call):
        if target.name == name:
            return target
    raise NotFound(f"no target {name}")


@route(
    "GET",
    "/rules",
    "The access rules in force",
    access=USER,
    tag="access",
    query=s.Paged,
    returns=Rule,
    paged=True,
)
async def list_rules(call: Call) -> Any:
    return list(call.deps.services.policy.rules)


@route(
    "POST",
    "/requests",
    "Ask for access to a target",
    body=s.NewRequest,
    status=201,
    tag="access",
    returns=AccessRequest,
    location=lambda r: f"/requests/{r.id}",
)
async def create_request(call: Call) -> Any:
    b = call.body
    return await call.deps.services.policy.create_request(
        call.actor,
        b["target"],
        account=b.get("account") or None,
        duration=optional_duration(b.get("duration")),
        reason=b.get("reason") or "",
        ticket=b.get("ticket") or "",
    )


@route(
    "GET",
    "/requests",
    "Requests the caller may see (own; approvers: those they may decide)",
    query=s.RequestsQuery,
    tag="access",
    returns=AccessRequest,
    paged=True,
)
async def list_requests(call: Call) -> Any:
    return await call.deps.services.policy.list_requests(
        call.actor, pending_only=call.flag("pending"), mine_only=call.flag("mine")
    )


@route("GET", "/requests/{id}", "One request", tag="access", returns=AccessRequest, etag=True)
async def get_request(call: Call) -> Any:
    return await call.deps.services.policy.get_request(call.actor, call.arg("id"))


@route(
    "POST",
    "/requests/{id}/approve",
    "Approve (never your own)",
    body=s.Approve,
    tag="access",
    returns=AccessRequest,
    current=get_request,
)
async def approve_request(call: Call) -> Any:
    comment = call.body.get("comment") or ""
    return await call.deps.services.policy.approve(call.actor, call.arg("id"), comment)


@route(
    "POST",
    "/requests/{id}/deny",
    "Deny, with a comment",
    body=s.Deny,
    tag="access",
    returns=AccessRequest,
    current=get_request,
)
async def deny_request(call: Call) -> Any:
    return await call.deps.services.policy.deny(call.actor, call.arg("id"), call.body["comment"])


@route(
    "POST",
    "/requests/{id}/cancel",
    "Cancel your pending request",
    body=s.Empty,
    tag="access",
    returns=AccessRequest,
    current=get_request,
)
async def cancel_request(call: Call) -> Any:
    return await call.deps.services.policy.cancel(call.actor, call.arg("id"))


@route(
    "GET",
    "/grants",
    "Grants the caller may see",
    query=s.GrantsQuery,
    tag="access",
    returns=Grant,
    paged=True,
)
async def list_grants(call: Call) -> Any:
    return await call.deps.services.policy.list_grants(
        call.actor, active_only=call.flag("active"), mine_only=call.flag("mine")
    )


@route("GET", "/grants/{id}", "One grant", tag="access", returns=Grant, etag=True)
async def get_grant(call: Call) -> Any:
    return await call.deps.services.policy.get_grant(call.actor, call.arg("id"))


@route(
    "POST",
    "/grants/{id}/revoke",
    "Revoke a grant (ends its sessions)",
    body=s.WithReason,
    tag="access",
    returns=Grant,
    current=get_grant,
)
async def revoke_grant(call: Call) -> Any:
    return await call.deps.services.policy.revoke(call.actor, call.arg("id"), call.body["reason"])


@route(
    "POST",
    "/grants/{id}/extend",
    "Ask to extend your grant (a new request)",
    body=s.Extend,
    status=201,
    tag="access",
    returns=AccessRequest,
    location=lambda r: f"/requests/{r.id}",
    current=get_grant,
)
async def extend_grant(call: Call) -> Any:
    return await call.deps.services.policy.extend(
        call.actor, call.arg("id"), duration(call.body["duration"]), call.body["reason"]
    )


@route(
    "GET",
    "/locks",
    "Active locks you may see (yours; an approver's pending decisions'; all for auditors)",
    tag="access",
    query=s.Paged,
    returns=Lock,
    paged=True,
)
async def list_locks(call: Call) -> Any:
    return await call.deps.services.policy.visible_locks(call.actor)


@route(
    "POST",
    "/locks",
    "Lock a user or a target (ends their sessions)",
    body=s.NewLock,
    status=201,
    tag="access",
    returns=Lock,
    location=lambda lock: f"/locks/{lock.kind}/{lock.name}",
)
async def create_lock(call: Call) -> Any:
    b = call.body
    return await call.deps.services.policy.lock(
        call.actor, b["kind"], b["name"], b["reason"], optional_duration(b.get("duration"))
    )


async def _visible_lock(call: Call) -> Lock:
    kind, name = call.arg("kind"), call.arg("name")
    for lock in await call.deps.services.policy.visible_locks(call.actor):
        if lock.kind == kind and lock.name == name:
            return lock
    raise NotFound(f"{kind} {name} is not locked")


@route("GET", "/locks/{kind}/{name}", "One active lock you may see", tag="access", returns=Lock)
async def get_lock(call: Call) -> Any:
    return await _visible_lock(call)


@route("DELETE", "/locks/{kind}/{name}", "Lift a lock", tag="access", returns=Lock)
async def delete_lock(call: Call) -> Any:
    kind = call.arg("kind")
    if kind not in ("user", "target"):
        raise NotFound(f"no lock kind {kind}")
    return await call.deps.services.policy.unlock(call.actor, kind, call.arg("name"))  # type: ignore[arg-type]
