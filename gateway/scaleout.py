"""A node as one member of a scaled-out gateway: its heartbeat, and the sockets it shares.

``join_cluster`` registers the node's heartbeat row (``gateway.cluster.liveness``) and wires
what liveness needs: sessions of a node found dead get their recordings sealed as
interrupted, and a node that learns it was declared lost ends the sessions it still holds.
``Listeners`` are the listening sockets a worker of a ``lockgate serve`` was given.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from gateway.cluster.liveness import Liveness
from gateway.services import Services
from gateway.sessions.records import NODE_LOST
from gateway.sessions.registry import SessionRegistry
from recorder.salvage import seal_interrupted
from recorder.store import RecordingStore


@dataclass(frozen=True)
class Listeners:
    ssh: socket.socket
    http: socket.socket


async def join_cluster(
    services: Services, registry: SessionRegistry, recordings: RecordingStore
) -> Liveness:
    liveness = services.nodes
    liveness.host = socket.gethostname()
    liveness.pid = os.getpid()
    root = services.config.recordings_path

    async def sessions_lost(session_ids: list[str], reason: str) -> None:
        await seal_interrupted(
            root, services.maker, session_ids, reason, on_sealed=recordings.index_later
        )

    async def declared_lost() -> None:
        await registry.terminate_all(NODE_LOST)

    liveness.on_lost = sessions_lost
    liveness.on_declared_lost = declared_lost
    await liveness.started()
    return liveness
