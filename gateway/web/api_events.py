"""API routes for events out: the notification outbox (dead letters and their retry)."""

from __future__ import annotations

from typing import Any

from gateway.notify.outbox import Outbox
from gateway.stream.status import StreamStatus, stream_status
from gateway.web import schemas as s
from gateway.web import shapes
from gateway.web.routes import ADMIN, AUDITOR, TABLE, Call
from policy.errors import NotFound

route = TABLE.add
STATES = ("pending", "sent", "dead")


@route(
    "GET",
    "/audit/streams",
    "Where each audit sink (and the notification dispatcher) stands in the audit log",
    access=AUDITOR,
    tag="audit",
    query=s.Paged,
    returns=StreamStatus,
    paged=True,
)
async def audit_streams(call: Call) -> Any:
    return await stream_status(call.deps.services)


@route(
    "GET",
    "/notifications",
    "Notifications in the outbox: pending, sent, or dead letters (state=dead)",
    access=AUDITOR,
    tag="notifications",
    query=s.NotificationsQuery,
    returns=shapes.Notification,
    paged=True,
)
async def list_notifications(call: Call) -> Any:
    state = call.query("state") or None
    rows = await Outbox(call.deps.services.maker).list(
        state=state, channel=call.query("channel") or None
    )
    return [notification_view(r) for r in rows]


@route(
    "POST",
    "/notifications/{id}/retry",
    "Queue a dead letter again, with a fresh set of attempts",
    access=ADMIN,
    body=s.Empty,
    tag="notifications",
    returns=shapes.Notification,
)
async def retry_notification(call: Call) -> Any:
    raw = call.arg("id")
    outbox = Outbox(call.deps.services.maker)
    if not raw.isdigit() or not await outbox.retry([int(raw)], call.deps.services.policy.now()):
        raise NotFound(f"no dead letter {raw}")
    return notification_view(await outbox.get(int(raw)))


def notification_view(row: Any) -> dict[str, Any]:
    """What the API and CLI show of an outbox row (the notice's own JSON included)."""
    return {
        "id": row.id,
        "channel": row.channel,
        "event": row.event,
        "key": row.key,
        "thread": row.thread,
        "state": row.state,
        "attempts": row.attempts,
        "next_at": row.next_at,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
        "notice": row.payload.get("notice"),
    }
