"""What a notification says: a ``Notice`` built from one committed audit event (or from the
expiry scan), with the facts of its request, grant or session as they were then.

``key`` is the notice's idempotency key, the same however often it is built (a replayed
audit event gives the same key, so a notification is enqueued once per channel); ``thread``
names the story it belongs to (the request, or the grant for an extension), so later
notices about the same request follow up on the first."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.metrics import kill_reason
from policy.durations import format_duration
from policy.models import AccessRequest, Grant, Rule

VERSION = 1
# A session end for one of these reasons was a kill, not the person leaving.
_KILLS = {"expired", "revoked", "locked", "anomaly", "signal", "admin", "recording"}


@dataclass(frozen=True)
class Notice:
    event: str  # one of settings.EVENTS
    key: str
    thread: str
    rule: str
    at: datetime
    actor: str
    data: Mapping[str, Any] = field(default_factory=dict)
    requester: str = ""  # whose request or grant it is (mail routing)

    def body(self, link: str) -> dict[str, Any]:
        """The versioned JSON every channel starts from (the webhook sends it as it is)."""
        return {
            "version": VERSION,
            "id": self.key,
            "event": self.event,
            "at": _iso(self.at),
            "actor": self.actor,
            "rule": self.rule,
            "thread": self.thread,
            "link": link,
            **self.data,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def request_facts(request: AccessRequest, rule: Rule | None, grant: Grant | None) -> dict[str, Any]:
    approvals = [a for a in request.approvals if a.decision == "approve"]
    return {
        "request": {
            "id": request.id,
            "user": request.user,
            "target": request.target,
            "account": request.account,
            "reason": request.reason,
            "ticket": request.ticket,
            "ticket_summary": request.ticket_summary,
            "duration": format_duration(request.duration),
            "state": request.state.value,
            "created_at": _iso(request.created_at),
            "extends_grant": request.extends_grant,
            "break_glass": request.break_glass,
            "approvals": len(approvals),
            "approvals_required": rule.approvals if rule is not None else None,
            "approved_by": [a.approver for a in approvals],
        },
        "grant": grant_facts(grant),
    }


def grant_facts(grant: Grant | None) -> dict[str, Any] | None:
    if grant is None:
        return None
    return {
        "id": grant.id,
        "user": grant.user,
        "target": grant.target,
        "account": grant.account,
        "expires_at": _iso(grant.expires_at),
        "revoked_at": _iso(grant.revoked_at),
        "revoked_by": grant.revoked_by,
        "revoke_reason": grant.revoke_reason,
        "break_glass": grant.break_glass,
    }


def at_decision(facts: dict[str, Any], approver: str, state: str) -> dict[str, Any]:
    """The request as of ``approver``'s decision, which left it in ``state``: the approvals
    up to theirs, and no grant yet while it is still pending (the dispatcher may read the
    request after later decisions)."""
    request = dict(facts["request"])
    names = list(request["approved_by"])
    if approver in names:
        names = names[: names.index(approver) + 1]
    request["approved_by"], request["approvals"] = names, len(names)
    if state:
        request["state"] = state
    grant = None if state == "pending" else facts["grant"]
    return {**facts, "request": request, "grant": grant}


def is_kill(reason: str) -> bool:
    return kill_reason(reason) in _KILLS or reason.startswith("node lost")
