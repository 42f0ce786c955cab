"""API routes for provisioned targets: a target's provisioning settings and what exists on
which target, and why."""

from __future__ import annotations

from typing import Any

from gateway.web import paging
from gateway.web.routes import ADMIN, AUDITOR, TABLE, Call, F

route = TABLE.add


@route(
    "POST",
    "/targets/{name}/provision",
    "Set an SSH target's provisioning mode (none, ephemeral, elevate), UID range, home archive",
    access=ADMIN,
    body={
        "provision": F("string", max_length=16),
        "uid_range": F("string", max_length=32),
        "home_archive": F("string", max_length=255),
    },
    tag="targets",
)
async def set_provision(call: Call) -> Any:
    b = call.body
    return await call.deps.services.policy.set_target_provision(
        call.actor,
        call.arg("name"),
        provision=b.get("provision"),
        uid_range=b.get("uid_range"),
        home_archive=b.get("home_archive"),
    )


@route(
    "GET",
    "/provisioned",
    "Ephemeral accounts and elevations on targets: state, grant, groups, sudo, errors",
    access=AUDITOR,
    tag="targets",
    query={**paging.QUERY, "target": "only this target", "live": "only those not yet removed"},
)
async def list_provisioned(call: Call) -> Any:
    target = call.query("target") or None
    items = await call.deps.services.provisioner.list(target, live_only=call.flag("live"))
    return [i.public() for i in items]
