"""Commands of the access lifecycle: requests, approvals, grants, locks, audit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.cli import interrupts
from gateway.cli.context import Context
from gateway.render import to_jsonable
from policy.durations import parse_duration

REQUEST_COLUMNS = (
    "id",
    "user",
    "target",
    "account",
    "duration",
    "state",
    "reason",
    "ticket",
    "ticket_summary",
    "created_at",
)
STREAM_COLUMNS = ("name", "kind", "destination", "delivered", "behind", "node", "updated_at")
LOCK_COLUMNS = ("id", "kind", "name", "reason", "created_by", "expires_at")
AUDIT_COLUMNS = ("seq", "at", "actor", "action", "subject", "details")
GRANT_COLUMNS = ("id", "user", "target", "account", "expires_at", "revoked_at", "request_id")


def _optional_duration(text: str | None) -> Any:
    return parse_duration(text) if text else None


async def request(ctx: Context) -> int:
    a = ctx.args
    policy = ctx.svc.policy
    result = await policy.create_request(
        ctx.actor,
        a.target,
        account=a.account,
        duration=_optional_duration(a.duration),
        reason=a.reason,
        ticket=a.ticket,
    )
    if a.wait:
        return await wait_for_decision(ctx, result, lambda rid: policy.get_request(ctx.actor, rid))
    return ctx.emit(result)


WAIT_POLL = 1.0


async def wait_for_decision(
    ctx: Context, request: Any, fetch: Callable[[str], Awaitable[Any]]
) -> int:
    """``request --wait``: say at once that it waits, then poll until the request is decided.
    0 when approved, 1 when denied, cancelled or expired; Ctrl-C stops waiting (130) and
    leaves the request pending."""
    data = to_jsonable(request)
    rid = data["id"]
    if data["state"] == "pending":

        async def decided() -> Any:
            # said once Ctrl-C is ours to take: a Ctrl-C right after the line still stops
            # only the wait
            ctx.err.write(
                f"request {rid} is pending approval; waiting (Ctrl-C stops waiting, the "
                "request stays)...\n"
            )
            ctx.err.flush()
            while True:
                await asyncio.sleep(WAIT_POLL)
                current = to_jsonable(await fetch(rid))
                if current["state"] != "pending":
                    return current

        try:
            data = await interrupts.interruptible(decided())
        except interrupts.Interrupted:
            ctx.err.write(
                f"lockgate: stopped waiting; request {rid} is still pending "
                f"(lockgate cancel {rid} withdraws it)\n"
            )
            return interrupts.INTERRUPTED
    ctx.emit(data)
    if data["state"] == "approved":
        return 0
    ctx.err.write(f"lockgate: request {rid} was {data['state']}\n")
    return 1


async def requests(ctx: Context) -> int:
    result = await ctx.svc.policy.list_requests(ctx.actor, pending_only=ctx.args.pending)
    return ctx.emit(result, REQUEST_COLUMNS)


async def approve(ctx: Context) -> int:
    result = await ctx.svc.policy.approve(ctx.actor, ctx.args.request_id, ctx.args.comment)
    return ctx.emit(result)


async def deny(ctx: Context) -> int:
    result = await ctx.svc.policy.deny(ctx.actor, ctx.args.request_id, ctx.args.comment)
    return ctx.emit(result)


async def cancel(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.cancel(ctx.actor, ctx.args.request_id))


async def grants(ctx: Context) -> int:
    result = await ctx.svc.policy.list_grants(ctx.actor, active_only=ctx.args.active)
    return ctx.emit(result, GRANT_COLUMNS)


async def revoke(ctx: Context) -> int:
    result = await ctx.svc.policy.revoke(ctx.actor, ctx.args.grant_id, ctx.args.reason)
    return ctx.emit(result)


async def extend(ctx: Context) -> int:
    a = ctx.args
    result = await ctx.svc.policy.extend(
        ctx.actor, a.grant_id, parse_duration(a.duration), a.reason
    )
    return ctx.emit(result)


async def lock(ctx: Context) -> int:
    a = ctx.args
    result = await ctx.svc.policy.lock(
        ctx.actor, a.kind, a.name, a.reason, _optional_duration(a.duration)
    )
    return ctx.emit(result)


async def unlock(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.unlock(ctx.actor, ctx.args.kind, ctx.args.name))


async def locks(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.list_locks(), LOCK_COLUMNS)


async def audit(ctx: Context) -> int:
    log = ctx.svc.audit
    await _require_auditor(ctx)
    if ctx.args.action == "verify":
        return show_verify(ctx, await log.verify())
    if ctx.args.action == "streams":
        from gateway.stream.status import stream_status  # every sink's module: only here

        return ctx.emit(await stream_status(ctx.svc), STREAM_COLUMNS)
    since = None
    if ctx.args.since:
        since = ctx.svc.policy.now() - parse_duration(ctx.args.since)
    events = await log.events(since=since)
    return ctx.emit(events, AUDIT_COLUMNS)


def show_verify(ctx: Context, result: Any) -> int:
    data = to_jsonable(result)
    ctx.emit(data)
    if not data["ok"]:
        ctx.err.write(f"lockgate: audit chain broken: {data['problem']}\n")
        return 1
    return 0


async def _require_auditor(ctx: Context) -> None:
    from policy.errors import AccessDenied
    from policy.service import SYSTEM_ACTOR

    if ctx.actor == SYSTEM_ACTOR:
        return
    user = await ctx.svc.policy.get_user(ctx.actor)
    if not user.is_auditor:
        raise AccessDenied(f"{ctx.actor} may not read the audit log")


SESSION_COLUMNS = (
    "id",
    "user",
    "target",
    "account",
    "node",
    "started_at",
    "ended_at",
    "end_reason",
    "bytes_up",
    "bytes_down",
)


async def sessions(ctx: Context) -> int:
    result = await ctx.svc.sessions.list(ctx.actor, active_only=ctx.args.active)
    return ctx.emit(result, SESSION_COLUMNS)


async def terminate(ctx: Context) -> int:
    sessions, sid = ctx.svc.sessions, ctx.args.session_id
    record = await sessions.terminate(ctx.actor, sid, ctx.args.reason)
    return await show_terminated(ctx, record, lambda: sessions.get(ctx.actor, sid))


TERMINATE_WAIT = 10.0  # seconds to wait for the node holding the session to end it


async def show_terminated(ctx: Context, record: Any, fetch: Callable[[], Awaitable[Any]]) -> int:
    """The session as it ended: the terminate request goes to whichever node holds the
    session, so the record is read again until it shows the end (or ``TERMINATE_WAIT``
    passes; then it is shown as it is, with a warning)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TERMINATE_WAIT
    while to_jsonable(record).get("ended_at") is None:
        if loop.time() >= deadline:
            print(
                f"lockgate: termination of {ctx.args.session_id} was sent; the node holding it "
                f"has not ended it within {TERMINATE_WAIT:g} s",
                file=ctx.err,
            )
            break
        await asyncio.sleep(0.05)
        record = await fetch()
    return ctx.emit(record)
