"""API route for the cluster's nodes: each node (worker) with its live sessions and heartbeat."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypedDict

from gateway.web import schemas as s
from gateway.web.routes import AUDITOR, TABLE, Call

route = TABLE.add


class NodeInfo(TypedDict):
    """One node as ``lockgate nodes`` lists it (``gateway.cluster.liveness``)."""

    name: str
    parent: str
    host: str
    pid: int
    state: Literal["live", "silent", "stopped", "lost"]
    sessions: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    lost_at: datetime | None
    lost_by: str | None
    lost_reason: str | None


@route(
    "GET",
    "/nodes",
    "Every node (each worker of a serve process is one): state (live, silent, stopped, lost), "
    "live sessions, last heartbeat, and who declared it lost",
    access=AUDITOR,
    tag="nodes",
    query=s.Paged,
    returns=NodeInfo,
    paged=True,
)
async def list_nodes(call: Call) -> Any:
    return await call.deps.services.nodes.listing()
