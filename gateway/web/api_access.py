"""API routes of the access lifecycle: targets and rules to read, requests, approvals,
grants and locks. Ownership and approver rights are decided by the policy service."""

from __future__ import annotations

from typing import Any

from gateway.web import paging
from gateway.web.routes import TABLE, USER, Call, F
from policy.durations import parse_duration
from policy.errors import InvalidInput, NotFound
from policy.models import Target

route = TABLE.add


def _duration(text: str | None) -> Any:
    return parse_duration(text) if text else None


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
    query=paging.QUERY,
)
async def list_targets(call: Call) -> Any:
    seen: dict[str, Target] = {}
    for target in await _visible_targets(call):
        seen.setdefault(target.name, target)
    return list(seen.values())


@route("GET", "/targets/{name}", "One target", tag="access")
async def get_target(call: Call) -> Any:
    name = call.arg("name")
    for target in await _visible_targets(call):
        if target.name == name:
            return target
    raise NotFound(f"no target {name}")


@route("GET", "/rules", "The access rules in force", access=USER, tag="access", query=paging.QUERY)
async def list_rules(call: Call) -> Any:
    return list(call.deps.services.policy.rules)


@route(
    "POST",
    "/requests",
    "Ask for access to a target",
    body={
        "target": F("string", required=True, max_length=80),
        "account": F("string", max_length=64),
        "duration": F("string", max_length=20),
        "reason": F("string", max_length=500),
        "ticket": F("string", max_length=80),
    },
    status=201,
    tag="access",
)
async def create_request(call: Call) -> Any:
    b = call.body
    return await call.deps.services.policy.create_request(
        call.actor,
        b["target"],
        account=b.get("account") or None,
        duration=_duration(b.get("duration")),
        reason=b.get("reason") or "",
        ticket=b.get("ticket") or "",
    )


@route(
    "GET",
    "/requests",
    "Requests the caller may see (own; approvers: those they may decide)",
    query={**paging.QUERY, "pending": "only pending requests", "mine": "only the caller's own"},
    tag="access",
)
async def list_requests(call: Call) -> Any:
    return await call.deps.services.policy.list_requests(
        call.actor, pending_only=call.flag("pending"), mine_only=call.flag("mine")
    )


@route("GET", "/requests/{id}", "One request", tag="access")
async def get_request(call: Call) -> Any:
    return await call.deps.services.policy.get_request(call.actor, call.arg("id"))


COMMENT = {"comment": F("string", max_length=500)}


@route("POST", "/requests/{id}/approve", "Approve (never your own)", body=COMMENT, tag="access")
async def approve_request(call: Call) -> Any:
    comment = call.body.get("comment") or ""
    return await call.deps.services.policy.approve(call.actor, call.arg("id"), comment)


@route(
    "POST",
    "/requests/{id}/deny",
    "Deny, with a comment",
    body={"comment": F("string", required=True, max_length=500)},
    tag="access",
)
async def deny_request(call: Call) -> Any:
    return await call.deps.services.policy.deny(call.actor, call.arg("id"), call.body["comment"])


@route("POST", "/requests/{id}/cancel", "Cancel your pending request", body={}, tag="access")
async def cancel_request(call: Call) -> Any:
    return await call.deps.services.policy.cancel(call.actor, call.arg("id"))


@route(
    "GET",
    "/grants",
    "Grants the caller may see",
    query={**paging.QUERY, "active": "only active grants", "mine": "only the caller's own"},
    tag="access",
)
async def list_grants(call: Call) -> Any:
    return await call.deps.services.policy.list_grants(
        call.actor, active_only=call.flag("active"), mine_only=call.flag("mine")
    )


@route("GET", "/grants/{id}", "One grant", tag="access")
async def get_grant(call: Call) -> Any:
    return await call.deps.services.policy.get_grant(call.actor, call.arg("id"))


REASON = {"reason": F("string", required=True, max_length=500)}


@route(
    "POST", "/grants/{id}/revoke", "Revoke a grant (ends its sessions)", body=REASON, tag="access"
)
async def revoke_grant(call: Call) -> Any:
    return await call.deps.services.policy.revoke(call.actor, call.arg("id"), call.body["reason"])


@route(
    "POST",
    "/grants/{id}/extend",
    "Ask to extend your grant (a new request)",
    body={"duration": F("string", required=True, max_length=20), **REASON},
    status=201,
    tag="access",
)
async def extend_grant(call: Call) -> Any:
    return await call.deps.services.policy.extend(
        call.actor, call.arg("id"), parse_duration(call.body["duration"]), call.body["reason"]
    )


@route(
    "GET",
    "/locks",
    "Active locks you may see (yours; an approver's pending decisions'; all for auditors)",
    tag="access",
    query=paging.QUERY,
)
async def list_locks(call: Call) -> Any:
    return await call.deps.services.policy.visible_locks(call.actor)


@route(
    "POST",
    "/locks",
    "Lock a user or a target (ends their sessions)",
    body={
        "kind": F("string", required=True, max_length=10),
        "name": F("string", required=True, max_length=80),
        **REASON,
        "duration": F("string", max_length=20),
    },
    status=201,
    tag="access",
)
async def create_lock(call: Call) -> Any:
    b = call.body
    if b["kind"] not in ("user", "target"):
        raise InvalidInput("kind must be user or target")
    return await call.deps.services.policy.lock(
        call.actor, b["kind"], b["name"], b["reason"], _duration(b.get("duration"))
    )


@route("DELETE", "/locks/{kind}/{name}", "Lift a lock", tag="access")
async def delete_lock(call: Call) -> Any:
    kind = call.arg("kind")
    if kind not in ("user", "target"):
        raise NotFound(f"no lock kind {kind}")
    return await call.deps.services.policy.unlock(call.actor, kind, call.arg("name"))  # type: ignore[arg-type]
