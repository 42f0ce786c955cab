"""``lockgate notifications``: the outbox (dead letters, retry) and the channels' secrets.
On the gateway host or, for ``list`` and ``retry``, through the API."""

from __future__ import annotations

import secrets
from typing import Any

from gateway.cli.context import Context, Usage
from gateway.cli.remote import Client, remote

# The outbox, the vault and the API's views are imported where a command runs on the host:
# sent through the API, these commands start without the database layers.

WHAT = {"webhook": "secret", "slack": "webhook URL", "email": "SMTP password"}
COLUMNS = ("id", "channel", "event", "state", "attempts", "last_error", "created_at", "thread")


async def _may(ctx: Context, admin: bool) -> None:
    from policy.errors import AccessDenied
    from policy.service import SYSTEM_ACTOR

    if ctx.actor == SYSTEM_ACTOR:
        return
    user = await ctx.svc.policy.get_user(ctx.actor)
    if not (user.is_admin if admin else user.is_auditor):
        raise AccessDenied(f"{ctx.actor} may not {'change' if admin else 'read'} notifications")


async def notifications_list(ctx: Context) -> int:
    from gateway.notify.outbox import Outbox
    from gateway.web.api_events import notification_view

    await _may(ctx, admin=False)
    rows = await Outbox(ctx.svc.maker).list(state=ctx.args.state, channel=ctx.args.channel)
    return ctx.emit([notification_view(r) for r in rows], COLUMNS)


async def notifications_retry(ctx: Context) -> int:
    from gateway.notify.outbox import Outbox
    from gateway.web.api_events import notification_view
    from policy.errors import NotFound

    await _may(ctx, admin=True)
    outbox = Outbox(ctx.svc.maker)
    if not await outbox.retry([ctx.args.id], ctx.svc.policy.now()):
        raise NotFound(f"no dead letter {ctx.args.id}")
    return ctx.emit(notification_view(await outbox.get(ctx.args.id)))


async def notifications_secret(ctx: Context) -> int:
    """A webhook's signing secret, a chat channel's webhook URL or an email channel's SMTP
    password, into the vault;
    ``--generate`` shows a new webhook secret once, for the receiver's configuration."""
    from gateway.notify.sender import VAULT_TARGET
    from vault.secret import Secret

    name = ctx.args.name
    channel = next((c for c in ctx.svc.config.notifications if c.name == name), None)
    if channel is None:
        raise Usage(f"no [[notifications]] channel named {name} in the configuration")
    if channel.kind == "slack" and channel.url:
        raise Usage(f"{name} has its url in the configuration; remove it there to vault it")
    if ctx.args.generate:
        if channel.kind != "webhook":
            raise Usage("--generate is for webhook secrets; give this one on stdin")
        value = secrets.token_urlsafe(32)
    else:
        value = ctx.read_stdin_secret(WHAT[channel.kind])
    if channel.kind == "slack" and not value.startswith(("https://", "http://")):
        raise Usage("a chat webhook URL starts with https://")
    if channel.kind == "webhook" and len(value) < 16:
        raise Usage("a webhook secret needs at least 16 characters")
    info = await ctx.svc.vault.set_credential(
        ctx.actor, VAULT_TARGET, name, "password", Secret(value)
    )
    if ctx.args.generate:
        ctx.out.write(f"{value}\n")
        ctx.err.write(f"secret {info.id}: shown once, configure the receiver with it now\n")
        return 0
    return ctx.emit(info)


@remote(notifications_list)
async def _list(ctx: Context, api: Client) -> int:
    query: dict[str, Any] = {"state": ctx.args.state or "", "channel": ctx.args.channel or ""}
    return ctx.emit(await api.call("GET", "/notifications", query=query), COLUMNS)


@remote(notifications_retry)
async def _retry(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("POST", f"/notifications/{ctx.args.id}/retry", {}))
