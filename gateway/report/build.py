"""Gathering the compliance report from the database and the recordings.

A grant is in the report when its window touches the period (it ended, or ends, after
``since``). For each: the request behind it (when, reason, ticket and the ticket system's
summary), each approval (who, when, comment), revocation, and every session under it with
its start, end and end reason, the commands run (from the recording index), the files
transferred and the anomaly rules hit (from the audit log), the recording's link and whether
it verifies against its seal. The whole audit chain is verified too."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from gateway.db.tables import audit_events, sessions
from gateway.services import Services
from policy import store
from policy import tables as pt
from policy.durations import format_duration, parse_duration
from policy.errors import AccessDenied
from policy.service import SYSTEM_ACTOR
from recorder.errors import NotFound as NoRecording
from recorder.store import RecordingStore

# Transfers and changes; opens, listings and stats are in the audit log, not the report.
_FILE_ACTIONS = frozenset(
    f"{p}.{op}" for p in ("sftp", "scp") for op in ("upload", "download", "remove", "rename")
)
VERIFIED = "verified"
UNSEALED = "not sealed yet (session live)"
NO_RECORDING = "no recording"


@dataclass(frozen=True)
class ApprovalRow:
    approver: str
    at: datetime
    comment: str


@dataclass(frozen=True)
class ExtensionRow:
    """A request to extend the grant: when, why, for how long, and how it was decided."""

    request_id: str
    requested_at: datetime
    reason: str
    duration: str
    state: str
    approvals: tuple[ApprovalRow, ...]


@dataclass(frozen=True)
class Command:
    t: float  # seconds into the recording
    text: str


@dataclass(frozen=True)
class SessionRow:
    id: str
    kind: str
    client: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    bytes_up: int
    bytes_down: int
    commands: tuple[Command, ...]
    files: tuple[dict[str, Any], ...]  # op, path, bytes, result
    anomalies: tuple[dict[str, Any], ...]  # action, rule, at
    http_requests: int
    recording: str  # the replay link
    recording_status: str  # VERIFIED, UNSEALED, NO_RECORDING, or what is wrong with it
    indexed: bool  # False: the commands listed may be incomplete (indexing still runs)


@dataclass(frozen=True)
class GrantRow:
    id: str
    user: str
    target: str
    account: str
    rule: str
    requested_at: datetime | None
    request_id: str
    reason: str
    ticket: str
    ticket_summary: str
    approvals: tuple[ApprovalRow, ...]
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    break_glass: bool
    extensions: tuple[ExtensionRow, ...]
    sessions: tuple[SessionRow, ...]


@dataclass(frozen=True)
class Report:
    generated_at: datetime
    since: datetime
    target: str | None
    user: str | None
    audit_ok: bool
    audit_events: int
    audit_problem: str
    recordings_checked: int
    recordings_failed: tuple[tuple[str, str], ...]
    grants: tuple[GrantRow, ...] = field(default=())

    @property
    def sessions(self) -> int:
        return sum(len(g.sessions) for g in self.grants)

    @property
    def verified(self) -> bool:
        return self.audit_ok and not self.recordings_failed


async def report_for(
    services: Services,
    viewer: str,
    *,
    since: str,
    target: str | None = None,
    user: str | None = None,
    public_url: str = "",
) -> Report:
    """The report as ``viewer`` may see it: auditors and admins only (AccessDenied else);
    ``since`` is a duration back from now (``30d``); InvalidInput when it does not parse."""
    if viewer != SYSTEM_ACTOR and not (await services.policy.get_user(viewer)).is_auditor:
        raise AccessDenied(f"{viewer} may not read the compliance report (auditors and admins)")
    start = services.policy.now() - parse_duration(since)
    recordings = RecordingStore(services.config.recordings_path, services.maker)
    return await build_report(
        services, recordings, since=start, target=target, user=user, public_url=public_url
    )


def _utc(value: Any) -> datetime | None:
    return None if value is None else store.utc(value)


async def build_report(
    services: Services,
    recordings: RecordingStore,
    *,
    since: datetime,
    target: str | None = None,
    user: str | None = None,
    public_url: str = "",
) -> Report:
    """The report of every grant whose window reaches past ``since`` (optionally one
    target's or one person's). Callers check that the viewer is an auditor or admin."""
    now = services.policy.now()
    where = [pt.grants.c.expires_at >= since]
    if target:
        where.append(pt.grants.c.target == target)
    if user:
        where.append(pt.grants.c.user == user)
    async with services.maker() as db:
        grants = sorted(await store.list_grants(db, where), key=lambda g: (g.created_at, g.id))
        requests = {g.id: await store.load_request(db, g.request_id) for g in grants}
        extensions: dict[str, list[Any]] = {}
        if grants:
            asked = await store.list_requests(
                db, [pt.requests.c.extends_grant.in_([g.id for g in grants])]
            )
            for ask in sorted(asked, key=lambda r: (r.created_at, r.id)):
                extensions.setdefault(str(ask.extends_grant), []).append(ask)
        rows: Sequence[Any] = []
        if grants:
            rows = (
                await db.execute(
                    sa.select(sessions)
                    .where(sessions.c.grant_id.in_([g.id for g in grants]))
                    .order_by(sessions.c.started_at, sessions.c.id)
                )
            ).all()
        facts: dict[str, list[Any]] = {r.id: [] for r in rows}
        if rows:
            found = await db.execute(
                sa.select(audit_events)
                .where(audit_events.c.subject.in_(list(facts)))
                .order_by(audit_events.c.seq)
            )
            for event in found:
                facts[event.subject].append(event)
    chain = await services.audit.verify()
    failed: list[tuple[str, str]] = []
    by_grant: dict[str, list[SessionRow]] = {}
    for row in rows:
        session = await _session(row, facts[row.id], recordings, public_url)
        if session.recording_status not in (VERIFIED, UNSEALED, NO_RECORDING):
            failed.append((session.id, session.recording_status))
        by_grant.setdefault(row.grant_id, []).append(session)
    return Report(
        generated_at=now,
        since=since,
        target=target,
        user=user,
        audit_ok=chain.ok,
        audit_events=chain.count,
        audit_problem=chain.problem,
        recordings_checked=len(rows),
        recordings_failed=tuple(failed),
        grants=tuple(
            _grant(g, requests[g.id], extensions.get(g.id, []), by_grant.get(g.id, []))
            for g in grants
        ),
    )


def _approvals(request: Any) -> tuple[ApprovalRow, ...]:
    return tuple(
        ApprovalRow(a.approver, a.at, a.comment)
        for a in (request.approvals if request is not None else ())
        if a.decision == "approve"
    )


def _grant(grant: Any, request: Any, asked: list[Any], found: list[SessionRow]) -> GrantRow:
    approvals = _approvals(request)
    return GrantRow(
        id=grant.id,
        user=grant.user,
        target=grant.target,
        account=grant.account,
        rule=grant.rule,
        requested_at=request.created_at if request is not None else None,
        request_id=grant.request_id,
        reason=request.reason if request is not None else "",
        ticket=request.ticket if request is not None else "",
        ticket_summary=request.ticket_summary if request is not None else "",
        approvals=approvals,
        granted_at=grant.created_at,
        expires_at=grant.expires_at,
        revoked_at=grant.revoked_at,
        revoked_by=grant.revoked_by,
        revoke_reason=grant.revoke_reason,
        break_glass=grant.break_glass,
        extensions=tuple(
            ExtensionRow(
                r.id,
                r.created_at,
                r.reason,
                format_duration(r.duration),
                r.state.value,
                _approvals(r),
            )
            for r in asked
        ),
        sessions=tuple(found),
    )


async def _session(
    row: Any, events: list[Any], recordings: RecordingStore, public_url: str
) -> SessionRow:
    files, anomalies = [], []
    for event in events:
        details = json.loads(event.details)
        if event.action in _FILE_ACTIONS:
            files.append(
                {
                    "op": event.action,
                    "path": details.get("path", ""),
                    "bytes": details.get("bytes"),
                    "result": details.get("result", ""),
                }
            )
        elif event.action.startswith("anomaly."):
            anomalies.append(
                {
                    "action": event.action.removeprefix("anomaly."),
                    "rule": details.get("rule", ""),
                    "at": _utc(event.at),
                }
            )
    commands: list[Command] = []
    http_requests = 0
    status, indexed = NO_RECORDING, False
    try:
        info = await recordings.get(row.id)
    except NoRecording:
        info = None
    if info is not None:
        for item in await recordings.timeline(row.id):
            if item["kind"] == "command":
                commands.append(Command(round(float(item["t"]), 3), str(item.get("text", ""))))
            elif item["kind"] == "http":
                http_requests += 1
        indexed = info.indexed
        if not info.sealed:
            status = UNSEALED
        else:
            status = (await recordings.verify(row.id))[0][1] or VERIFIED
    return SessionRow(
        id=row.id,
        kind=row.kind,
        client=row.client_addr,
        started_at=store.utc(row.started_at),
        ended_at=_utc(row.ended_at),
        end_reason=row.end_reason,
        bytes_up=int(row.bytes_up or 0),
        bytes_down=int(row.bytes_down or 0),
        commands=tuple(commands),
        files=tuple(files),
        anomalies=tuple(anomalies),
        http_requests=http_requests,
        recording=f"{public_url}/recordings/{row.id}",
        recording_status=status,
        indexed=indexed,
    )
