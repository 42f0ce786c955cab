"""API routes for sessions, recordings, the audit log and SIEM signals.

Recordings belong to their session's user: a requester reads only their own, auditors and
admins every one; anything else answers "not found", like a recording that does not exist.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.audit import AuditEvent, VerifyResult
from gateway.sessions.enforce import SignalResult
from gateway.sessions.records import SessionRecord
from gateway.signals import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_signature,
    remember,
    signal_secret,
)
from gateway.web import paging, shapes
from gateway.web import schemas as s
from gateway.web.limits import duration
from gateway.web.routes import ADMIN, AUDITOR, PUBLIC, TABLE, USER, Call
from policy.errors import NotFound
from recorder.asciicast import export as asciicast
from recorder.errors import InvalidQuery
from recorder.errors import NotFound as NoRecording
from recorder.events import iter_records_from
from recorder.http import TimelineEntry
from recorder.http import timeline as http_timeline
from recorder.replay import frame_at, frames_between
from recorder.store import RecordingInfo

route = TABLE.add
MAX_WINDOW = 60.0  # seconds of frames per request


@route(
    "GET",
    "/sessions",
    "Sessions (own; auditors: all)",
    query=s.SessionsQuery,
    tag="sessions",
    returns=SessionRecord,
    paged=True,
)
async def list_sessions(call: Call) -> Any:
    size = paging.limit(call.request)
    rows = await call.deps.sessions.list(
        call.actor,
        active_only=call.flag("active"),
        limit=size + 1,
        after=paging.cursor(call.request),
    )
    last = rows[size - 1] if len(rows) > size else None
    return paging.Page(rows[:size], (last.started_at, last.id) if last else None)


@route("GET", "/sessions/{id}", "One session", tag="sessions", returns=SessionRecord)
async def get_session(call: Call) -> Any:
    return await call.deps.sessions.get(call.actor, call.arg("id"))


@route(
    "POST",
    "/sessions/{id}/terminate",
    "End a live session: the node holding it ends it shortly (202)",
    access=ADMIN,
    body=s.WithReason,
    status=202,
    tag="sessions",
    returns=SessionRecord,
)
async def terminate_session(call: Call) -> Any:
    return await call.deps.sessions.terminate(call.actor, call.arg("id"), call.body["reason"])


async def readable_recording(call: Call, session_id: str) -> RecordingInfo:
    """The recording if the caller may read it; otherwise NotFound, as if it did not exist."""
    try:
        info = await call.deps.recordings.get(session_id)
    except NoRecording:
        raise NotFound(f"no recording for session {session_id}") from None
    assert call.who is not None
    if not call.who.user.is_auditor and info.meta.get("user") != call.actor:
        raise NotFound(f"no recording for session {session_id}")
    return info


def _summary(info: RecordingInfo) -> dict[str, Any]:
    return {
        "session": info.session_id,
        "user": info.meta.get("user"),
        "target": info.meta.get("target"),
        "account": info.meta.get("account"),
        "kind": info.meta.get("kind"),
        "started_at": info.started_at,
        "ended_at": info.ended_at,
        "duration": round(info.duration, 3),
        "width": info.width,
        "height": info.height,
        "term": info.meta.get("term", "xterm"),
        "size": info.size,
        "sealed": info.sealed,
        "end_reason": info.end_reason,
    }


@route(
    "GET",
    "/recordings",
    "Recordings, newest first (own; auditors: all)",
    query=s.RecordingsQuery,
    tag="recordings",
    returns=shapes.RecordingSummary,
    paged=True,
)
async def list_recordings(call: Call) -> Any:
    assert call.who is not None
    user = call.query("user") or None
    if not call.who.user.is_auditor:
        if user not in (None, call.actor):
            return paging.Page([], None)
        user = call.actor
    try:
        since, until = _day(call.query("since")), _day(call.query("until"), after=True)
    except ValueError:  # no such day: nothing was recorded on it
        return paging.Page([], None)
    infos, after = await call.deps.recordings.page(
        user=user,
        target=call.query("target") or None,
        kind=call.query("kind") or None,
        since=since,
        until=until,
        limit=paging.limit(call.request),
        after=paging.cursor(call.request),
    )
    return paging.Page([_summary(i) for i in infos], after)


@route(
    "GET",
    "/recordings/search",
    "Find text that appeared on screen or commands typed, across recordings",
    access=AUDITOR,
    query=s.SearchQuery,
    tag="recordings",
    returns=shapes.SearchHit,
    paged=True,
)
async def search_recordings(call: Call) -> Any:
    text = call.query("q").strip()
    hits = await call.deps.recordings.search(text, call.query("session") or None)
    found = [{"session": h.session_id, "t": h.t, "kind": h.kind, "line": h.line} for h in hits]
    return paging.page_of(call.request, found, key=_hit_key)


def _hit_key(hit: Any) -> str:
    return f"{hit['session']}/{hit['t']!r}/{hit['kind']}/{hit['line']}"


@route(
    "GET",
    "/recordings/verify",
    "Check every recording against its seal",
    access=AUDITOR,
    tag="recordings",
    query=s.Paged,
    returns=shapes.SealCheck,
    paged=True,
)
async def verify_recordings(call: Call) -> Any:
    results = await call.deps.recordings.verify(None)
    return [{"session": s, "ok": p is None, "problem": p or ""} for s, p in results]


@route(
    "GET",
    "/recordings/{id}",
    "A recording's facts and timeline markers",
    tag="recordings",
    returns=shapes.Recording,
)
async def get_recording(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    facts = _summary(info)
    facts["grant"] = await _grant_facts(call, info.meta.get("grant") or "")
    try:
        facts["markers"] = [
            e for e in await call.deps.recordings.timeline(info.session_id) if e["kind"] != "output"
        ]
    except NoRecording:
        facts["markers"] = []
    facts["indexed"] = info.indexed
    return facts


@route(
    "GET",
    "/recordings/{id}/requests",
    "A web session's requests in order (method, path, status, bytes, time), filtered",
    query=s.TimelineQuery,
    tag="recordings",
    returns=shapes.TimelineRequest,
    paged=True,
)
async def recording_requests(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    try:
        entries, after = await request_timeline(call.request, info)
    except InvalidQuery as exc:
        if "cursor" in str(exc):
            raise paging.no_such_page() from None
        raise
    return paging.Page([e.as_dict() for e in entries], after)


async def request_timeline(
    request: web.Request, info: RecordingInfo
) -> tuple[list[TimelineEntry], str | None]:
    """One page of an HTTP recording's requests, with the query's filters; and the cursor of
    the next page. Bad filters are 422 (InvalidQuery)."""
    size = paging.limit(request)
    entries = await asyncio.to_thread(
        http_timeline,
        info.path,
        method=request.query.get("method") or None,
        status=request.query.get("status") or None,
        path_glob=request.query.get("path") or None,
        limit=size + 1,
        cursor=request.query.get("cursor") or None,
    )
    more = len(entries) > size
    return entries[:size], entries[size - 1].cursor if more else None


async def _grant_facts(call: Call, grant_id: str) -> dict[str, Any] | None:
    """The grant behind a session, its request's reason and who approved it."""
    if not grant_id:
        return None
    policy = call.deps.services.policy
    from policy.service import SYSTEM_ACTOR

    try:
        grant = await policy.get_grant(SYSTEM_ACTOR, grant_id)
        request = await policy.get_request(SYSTEM_ACTOR, grant.request_id)
    except NotFound:
        return {"id": grant_id}
    return {
        "id": grant.id,
        "rule": grant.rule,
        "expires_at": grant.expires_at,
        "reason": request.reason,
        "ticket": request.ticket,
        "approvers": [a.approver for a in request.approvals if a.decision == "approve"],
    }


@route(
    "GET",
    "/recordings/{id}/verify",
    "Check one recording against its seal",
    access=AUDITOR,
    tag="recordings",
    query=s.Paged,
    returns=shapes.SealCheck,
    paged=True,
)
async def verify_recording(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    results = await call.deps.recordings.verify(info.session_id)
    return [{"session": s, "ok": p is None, "problem": p or ""} for s, p in results]


@route(
    "GET",
    "/recordings/{id}/cast",
    "Download as asciicast v2",
    tag="recordings",
    media=("application/x-asciicast",),
)
async def recording_cast(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    headers = {
        "Content-Type": "application/x-asciicast",
        "Content-Disposition": f'attachment; filename="{info.session_id}.cast"',
    }
    if call.request.method == "HEAD":  # the headers only: a streamed body has no length
        return web.Response(headers=headers)
    response = web.StreamResponse(headers=headers)
    await response.prepare(call.request)
    lines = await asyncio.to_thread(lambda: list(asciicast(iter_records_from(str(info.path), 0))))
    batch: list[str] = []
    for line in lines:
        batch.append(line + "\n")
        if len(batch) >= 500:
            await response.write("".join(batch).encode())
            batch.clear()
    await response.write("".join(batch).encode())
    await response.write_eof()
    return response


def _day(text: str, after: bool = False) -> datetime | None:
    """Midnight UTC of a YYYY-MM-DD day, or of the day after it (``after``; None past the
    last day there is). Raises ValueError for a day the calendar has not got."""
    if not text:
        return None
    day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    try:
        return day + timedelta(days=1) if after else day
    except OverflowError:
        return None


@route(
    "GET",
    "/recordings/{id}/frames",
    "The screen at a time (at=), or the frames between from= and to= (to defaults to "
    "from + 10 s; a window is cut at 60 s; one that ends before it starts has no frames)",
    query=s.FramesQuery,
    tag="recordings",
    returns=shapes.Frame | shapes.Frames,
)
async def recording_frames(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    store = call.deps.recordings
    if call.params.get("from") is not None:
        start = float(call.params["from"])
        to = call.params.get("to")
        end = min(start + (10.0 if to is None else float(to) - start), start + MAX_WINDOW)
        if end < start:
            return {"session": info.session_id, "duration": info.duration, "frames": []}
        keyframe = await store.keyframe_before(info.session_id, start)
        frames = await asyncio.to_thread(frames_between, str(info.path), keyframe, start, end)
        return {"session": info.session_id, "duration": info.duration, "frames": frames}
    at = float(call.params.get("at") or 0.0)
    keyframe = await store.keyframe_before(info.session_id, at)
    frame = await asyncio.to_thread(frame_at, str(info.path), keyframe, at)
    return {"session": info.session_id, "duration": info.duration, **frame}


@route(
    "GET",
    "/audit",
    "Audit events",
    access=AUDITOR,
    query=s.AuditQuery,
    tag="audit",
    returns=AuditEvent,
    paged=True,
)
async def list_audit(call: Call) -> Any:
    since = None
    if call.query("since"):
        since = call.deps.services.policy.now() - duration(call.query("since"))
    events = await call.deps.services.audit.events(since=since)
    wanted = {k: call.query(k) for k in ("actor", "action", "subject") if call.query(k)}
    return [e for e in events if all(getattr(e, k) == v for k, v in wanted.items())]


@route(
    "GET",
    "/audit/verify",
    "Verify the audit hash chain",
    access=AUDITOR,
    tag="audit",
    returns=VerifyResult,
)
async def verify_audit(call: Call) -> Any:
    return await call.deps.services.audit.verify()


@route(
    "POST",
    "/signals",
    "A signed signal from a SIEM: alert, kill or kill_and_lock",
    access=PUBLIC,
    body=s.Signal,
    tag="signals",
    returns=SignalResult,
)
async def post_signal(call: Call) -> Any:
    deps = call.deps
    now = deps.services.policy.now()
    secret = await signal_secret(deps.services.vault)
    digest = check_signature(
        secret,
        call.request.headers.get(TIMESTAMP_HEADER, ""),
        call.request.headers.get(SIGNATURE_HEADER, ""),
        await call.request.read(),
        now,
    )
    await remember(deps.services.maker, digest, now)
    b = call.body
    return await deps.enforcer.signal(
        b["action"],
        b.get("reason") or "",
        session=b.get("session"),
        user=b.get("user"),
        target=b.get("target"),
        source=(b.get("source") or "siem")[:64],
    )


@route(
    "GET",
    "/openapi.json",
    "This document",
    access=PUBLIC,
    tag="meta",
    returns={"type": "object"},
)
async def openapi_document(call: Call) -> Any:
    from gateway.web.openapi import document

    return document(TABLE)


__all__ = ["USER"]
