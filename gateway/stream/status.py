"""Where each consumer of the audit log stands: every configured audit sink and, with
notifications configured, the dispatcher; how far behind the log's last event, and which
node streams it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from gateway.db.tables import stream_cursors
from gateway.services import Services
from gateway.stream.record import head_seq
from gateway.stream.settings import JsonlSink
from policy.store import utc_or_none

NOTIFY_CURSOR = "notify"  # gateway.notify.dispatch's cursor


@dataclass(frozen=True)
class StreamStatus:
    name: str
    kind: str  # syslog | jsonl | notifications
    destination: str
    delivered: int | None  # the last sequence number delivered; None: not started yet
    head: int  # the audit log's last sequence number
    behind: int  # events not yet delivered
    node: str | None  # the node streaming it now
    updated_at: datetime | None


async def stream_status(services: Services) -> list[StreamStatus]:
    config = services.config
    wanted: list[tuple[str, str, str, str]] = []
    for sink in config.audit_sinks:
        if isinstance(sink, JsonlSink):
            wanted.append((f"audit:{sink.name}", sink.name, "jsonl", str(sink.path)))
        else:
            wanted.append((f"audit:{sink.name}", sink.name, "syslog", f"{sink.host}:{sink.port}"))
    if config.notifications:
        names = ", ".join(c.name for c in config.notifications)
        wanted.append((NOTIFY_CURSOR, "notifications", "notifications", names))
    head = await head_seq(services.maker)
    async with services.maker() as db:
        rows = {
            r.name: r
            for r in (
                await db.execute(
                    sa.select(stream_cursors).where(
                        stream_cursors.c.name.in_([w[0] for w in wanted])
                    )
                )
            ).all()
        }
    found = []
    for cursor, name, kind, destination in wanted:
        row = rows.get(cursor)
        delivered = int(row.seq) if row is not None else None
        found.append(
            StreamStatus(
                name=name,
                kind=kind,
                destination=destination,
                delivered=delivered,
                head=head,
                behind=head - (delivered or 0),
                node=row.owner if row is not None else None,
                updated_at=utc_or_none(row.updated_at) if row is not None else None,
            )
        )
    return found
