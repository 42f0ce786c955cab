"""API routes for provisioned targets: a target's provisioning settings and what exists on
which target, and why."""

from __future__ import annotations

from typing import Any, TypedDict

from gateway.web import schemas as s
from gateway.web.limits import uid_range
from gateway.web.routes import ADMIN, AUDITOR, TABLE, Call
from policy.errors import Conflict
from policy.models import Target

route = TABLE.add


class Provisioned(TypedDict):
    """An ephemeral account or an elevation on a target, and where it stands."""

    id: str
    target: str
    kind: str
    account: str
    uid: int | None
    grant: str
    user: str
    groups: list[str]
    sudo: list[str]
    added_groups: list[str]
    state: str
    reason: str | None
    attempts: int
    next_attempt_at: str | None
    last_error: str | None
    created_at: str | None
    activated_at: str | None
    updated_at: str | None


async def _target(call: Call) -> Target:
    return await call.deps.services.policy.get_target(call.arg("name"))


@route(
    "POST",
    "/targets/{name}/provision",
    "Set an SSH target's provisioning mode (none, ephemeral, elevate), UID range, home archive",
    access=ADMIN,
    body=s.SetProvision,
    tag="targets",
    returns=Target,
    current=_target,
)
async def set_provision(call: Call) -> Any:
    b = call.body
    target = await _target(call)
    if target.kind != "ssh" and b.get("provision") not in (None, "none"):
        raise Conflict(f"{target.name} is a web target: only SSH targets can be provisioned")
    return await call.deps.services.policy.set_target_provision(
        call.actor,
        call.arg("name"),
        provision=b.get("provision"),
        uid_range=uid_range(b.get("uid_range")),
        home_archive=b.get("home_archive"),
    )


@route(
    "GET",
    "/provisioned",
    "Ephemeral accounts and elevations on targets: state, grant, groups, sudo, errors",
    access=AUDITOR,
    tag="targets",
    query=s.ProvisionedQuery,
    returns=Provisioned,
    paged=True,
)
async def list_provisioned(call: Call) -> Any:
    target = call.query("target") or None
    items = await call.deps.services.provisioner.list(target, live_only=call.flag("live"))
    return [i.public() for i in items]
