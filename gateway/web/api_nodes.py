"""API route for the cluster's nodes: each node (worker) with its live sessions and heartbeat."""

from __future__ import annotations

from typing import Any

from gateway.web import paging
from gateway.web.routes import AUDITOR, TABLE, Call

route = TABLE.add


@route(
    "GET",
    "/nodes",
    "Every node (each worker of a serve process is one): state (live, silent, stopped, lost), "
    "live sessions, last heartbeat, and who declared it lost",
    access=AUDITOR,
    tag="nodes",
    query=paging.QUERY,
)
async def list_nodes(call: Call) -> Any:
    return await call.deps.services.nodes.listing()
