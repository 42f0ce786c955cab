"""API routes for sessions, recordings, the audit log and SIEM signals.

Recordings belong to their session's user: a requester reads only their own, auditors and
admins every one; anything else answers "not found", like a recording that does not exist.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from gateway.signals import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_signature,
    remember,
    signal_secret,
)
from gateway.web import paging
from gateway.web.routes import ADMIN, AUDITOR, PUBLIC, TABLE, USER, Call, F, openapi
from policy.durations import parse_duration
from policy.errors import InvalidInput, NotFound
from recorder.asciicast import export as asciicast
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
    query={"active": "only live ones", **paging.QUERY},
    tag="sessions",
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


@route("GET", "/sessions/{id}", "One session", tag="sessions")
async def get_session(call: Call) -> Any:
    return await call.deps.sessions.get(call.actor, call.arg("id"))


@route(
    "POST",
    "/sessions/{id}/terminate",
    "End a live session on whichever node holds it",
    access=ADMIN,
    body={"reason": F("string", required=True, max_length=500)},
    tag="sessions",
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
    query={
        "user": "only this user's",
        "target": "only this target's",
        **paging.QUERY,
    },
    tag="recordings",
)
async def list_recordings(call: Call) -> Any:
    assert call.who is not None
    user = call.query("user") or None
    if not call.who.user.is_auditor:
        if user not in (None, call.actor):
            return paging.Page([], None)
        user = call.actor
    infos, after = await call.deps.recordings.page(
        user=user,
        target=call.query("target") or None,
        limit=paging.limit(call.request),
        after=paging.cursor(call.request),
    )
    return paging.Page([_summary(i) for i in infos], after)


@route(
    "GET",
    "/recordings/search",
    "Find text that appeared on screen or commands typed, across recordings",
    access=AUDITOR,
    query={"q": "the text", "session": "only within this recording"},
    tag="recordings",
)
async def search_recordings(call: Call) -> Any:
    text = call.query("q").strip()
    if not text or len(text) > 200:
        raise InvalidInput("q must be 1 to 200 characters")
    hits = await call.deps.recordings.search(text, call.query("session") or None)
    return [{"session": h.session_id, "t": h.t, "kind": h.kind, "line": h.line} for h in hits]


@route(
    "GET",
    "/recordings/verify",
    "Check every recording against its seal",
    access=AUDITOR,
    tag="recordings",
)
async def verify_recordings(call: Call) -> Any:
    results = await call.deps.recordings.verify(None)
    return [{"session": s, "ok": p is None, "problem": p or ""} for s, p in results]


@route("GET", "/recordings/{id}", "A recording's facts and timeline markers", tag="recordings")
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


TIMELINE_QUERY = {
    "method": "only this method",
    "status": "only this status or class, e.g. 404 or 4xx",
    "path": "only paths matching this glob, e.g. /api/*",
    "limit": "at most this many (1-1000, default 100)",
    "cursor": "the next page: from the Link header of the previous one",
}


@route(
    "GET",
    "/recordings/{id}/requests",
    "A web session's requests in order (method, path, status, bytes, time), filtered",
    query=TIMELINE_QUERY,
    tag="recordings",
)
async def recording_requests(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    entries, after = await request_timeline(call.request, info)
    return paging.respond(call.request, [e.as_dict() for e in entries], after)


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
)
async def verify_recording(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    results = await call.deps.recordings.verify(info.session_id)
    return [{"session": s, "ok": p is None, "problem": p or ""} for s, p in results]


@route("GET", "/recordings/{id}/cast", "Download as asciicast v2", tag="recordings")
async def recording_cast(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/x-asciicast",
            "Content-Disposition": f'attachment; filename="{info.session_id}.cast"',
        }
    )
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


def _seconds(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{name} must be a number of seconds, 0 or more")
    return value


@route(
    "GET",
    "/recordings/{id}/frames",
    "The screen at a time (at=), or the frames between from= and to= (at most 60 s)",
    query={"at": "seconds from the start", "from": "window start", "to": "window end"},
    tag="recordings",
)
async def recording_frames(call: Call) -> Any:
    info = await readable_recording(call, call.arg("id"))
    store = call.deps.recordings
    if call.query("from"):
        start = _seconds(call.query("from"), "from")
        end = _seconds(call.query("to", str(start + 10)), "to")
        if end < start or end - start > MAX_WINDOW:
            raise InvalidInput(f"to must be after from, by at most {MAX_WINDOW:g} seconds")
        keyframe = await store.keyframe_before(info.session_id, start)
        frames = await asyncio.to_thread(frames_between, str(info.path), keyframe, start, end)
        return {"session": info.session_id, "duration": info.duration, "frames": frames}
    at = _seconds(call.query("at", "0"), "at")
    keyframe = await store.keyframe_before(info.session_id, at)
    frame = await asyncio.to_thread(frame_at, str(info.path), keyframe, at)
    return {"session": info.session_id, "duration": info.duration, **frame}


@route(
    "GET",
    "/audit",
    "Audit events",
    access=AUDITOR,
    query={**paging.QUERY, "since": "a duration, e.g. 1h"},
    tag="audit",
)
async def list_audit(call: Call) -> Any:
    since = None
    if call.query("since"):
        since = call.deps.services.policy.now() - parse_duration(call.query("since"))
    return await call.deps.services.audit.events(since=since)


@route("GET", "/audit/verify", "Verify the audit hash chain", access=AUDITOR, tag="audit")
async def verify_audit(call: Call) -> Any:
    return await call.deps.services.audit.verify()


@route(
    "POST",
    "/signals",
    "A signed signal from a SIEM: alert, kill or kill_and_lock",
    access=PUBLIC,
    body={
        "action": F("string", required=True, max_length=20),
        "reason": F("string", max_length=500),
        "session": F("string", max_length=64),
        "user": F("string", max_length=64),
        "target": F("string", max_length=80),
        "source": F("string", max_length=64),
    },
    tag="signals",
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


@route("GET", "/openapi.json", "This document", access=PUBLIC, tag="meta")
async def openapi_document(call: Call) -> Any:
    return openapi(TABLE)


__all__ = ["USER"]
