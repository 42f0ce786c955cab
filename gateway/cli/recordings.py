"""Recording commands: search, export, verify, play."""

from __future__ import annotations

import asyncio
import shutil
import sys
from typing import TYPE_CHECKING, Any

from gateway.cli.context import Context
from policy.errors import AccessDenied, NotFound
from recorder.asciicast import export as asciicast
from recorder.errors import NotFound as NoRecording
from recorder.events import iter_records_from
from recorder.integrity import verify_file

if TYPE_CHECKING:
    from recorder.store import RecordingStore

# The policy service, the store and pyte are imported where a command run on the host needs
# them: the remote CLI (gateway.cli.remote) imports this module for HIT_COLUMNS and
# show_verification alone, and a remote command's start-up is what a person waits for.

HIT_COLUMNS = ("session", "t", "kind", "line")


def _store(ctx: Context) -> RecordingStore:
    from recorder.store import RecordingStore

    return RecordingStore(ctx.svc.config.recordings_path, ctx.svc.maker)


def _built_in_admin(ctx: Context) -> bool:
    from policy.service import SYSTEM_ACTOR

    return ctx.actor == SYSTEM_ACTOR


async def _viewer_may_read(ctx: Context, session_user: str | None) -> None:
    """Auditors and admins read every recording; others only their own sessions."""
    if _built_in_admin(ctx):
        return
    user = await ctx.svc.policy.get_user(ctx.actor)
    if not user.is_auditor and session_user != ctx.actor:
        raise NotFound("no such recording")


async def _info(ctx: Context, session_id: str):  # type: ignore[no-untyped-def]
    try:
        info = await _store(ctx).get(session_id)
    except NoRecording:
        raise NotFound(f"no recording for session {session_id}") from None
    await _viewer_may_read(ctx, info.meta.get("user"))
    return info


async def search(ctx: Context) -> int:
    if not _built_in_admin(ctx) and not (await ctx.svc.policy.get_user(ctx.actor)).is_auditor:
        raise AccessDenied(f"{ctx.actor} may not search all recordings")
    hits = await _store(ctx).search(ctx.args.text, ctx.args.session)
    rows = [
        {"session": h.session_id, "t": round(h.t, 3), "kind": h.kind, "line": h.line} for h in hits
    ]
    return ctx.emit(rows, HIT_COLUMNS)


async def export(ctx: Context) -> int:
    info = await _info(ctx, ctx.args.session_id)
    for line in asciicast(iter_records_from(str(info.path), 0)):
        ctx.out.write(line + "\n")
    return 0


async def verify(ctx: Context) -> int:
    if not _built_in_admin(ctx) and not (await ctx.svc.policy.get_user(ctx.actor)).is_auditor:
        raise AccessDenied(f"{ctx.actor} may not verify recordings")
    try:
        results = await _store(ctx).verify(ctx.args.session_id)
    except NoRecording:
        raise NotFound(f"no recording for session {ctx.args.session_id}") from None
    rows = [
        {"session": sid, "ok": problem is None, "problem": problem or ""}
        for sid, problem in results
    ]
    return show_verification(ctx, rows)


def show_verification(ctx: Context, rows: list[dict[str, Any]]) -> int:
    ctx.emit(rows, ("session", "ok", "problem"))
    bad = [r for r in rows if not r["ok"]]
    if bad:
        ctx.err.write(f"lockgate: {len(bad)} recording(s) failed verification\n")
        return 1
    return 0


async def play(ctx: Context) -> int:
    info = await _info(ctx, ctx.args.session_id)
    if ctx.args.speed <= 0:
        from gateway.cli.context import Usage

        raise Usage("--speed must be more than zero")
    check = await asyncio.to_thread(verify_file, info.path)
    if not check.ok:
        ctx.err.write(f"lockgate: warning: recording fails verification: {check.problem}\n")
    out = sys.stdout.buffer if ctx.out is sys.stdout else None
    if out is not None and sys.stdout.isatty():
        cols, rows = shutil.get_terminal_size()
        if cols < info.width or rows < info.height:
            ctx.err.write(
                f"lockgate: recorded at {info.width}x{info.height} "
                f"({info.meta.get('term', 'xterm')}); this terminal is {cols}x{rows}, "
                "so the replay may wrap\n"
            )

    def write(data: bytes) -> None:
        if out is not None:
            out.write(data)
            out.flush()
        else:
            ctx.out.write(data.decode("utf-8", "replace"))

    from recorder.replay import playback

    await asyncio.to_thread(
        playback,
        iter_records_from(str(info.path), 0),
        write,
        speed=ctx.args.speed,
        idle_limit=ctx.args.idle_limit,
    )
    return 0
