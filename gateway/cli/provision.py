"""Provisioned targets on the command line: ``target set`` (mode, UID range, home archive),
the provisioner key (``credential set TARGET --provisioner``) and ``provisioned``; and
``nodes``, where the cluster's members are."""

from __future__ import annotations

from typing import Any

from gateway.cli.context import Context, Usage

PROVISIONED_COLUMNS = ("id", "target", "account", "kind", "state", "uid", "user", "grant", "reason")
DEFAULT_LOGIN = "lockgate"  # the provisioner's login name on the target unless one is given


def provisioner_login(ctx: Context) -> str:
    """``credential set TARGET [LOGIN] --provisioner --private-key FILE``."""
    a = ctx.args
    if not a.private_key:
        raise Usage("--provisioner goes with --private-key FILE")
    return str(a.account or DEFAULT_LOGIN)


def provision_options(ctx: Context) -> dict[str, Any]:
    a = ctx.args
    given: dict[str, Any] = {}
    if a.provision is not None:
        given["provision"] = a.provision
    if a.uid_range is not None:
        given["uid_range"] = a.uid_range
    if a.home_archive is not None:
        given["home_archive"] = a.home_archive
    return given


async def target_set(ctx: Context) -> int:
    given = provision_options(ctx)
    if not given:
        raise Usage("target set needs --provision, --uid-range or --home-archive")
    return ctx.emit(await ctx.svc.policy.set_target_provision(ctx.actor, ctx.args.name, **given))


async def provisioned(ctx: Context) -> int:
    items = await ctx.svc.provisioner.list(ctx.args.target, live_only=ctx.args.live)
    return ctx.emit([i.public() for i in items], PROVISIONED_COLUMNS)


NODE_COLUMNS = (
    "name",
    "state",
    "sessions",
    "heartbeat_at",
    "host",
    "pid",
    "lost_reason",
    "lost_by",
)


async def nodes(ctx: Context) -> int:
    """Every node (worker) the cluster knows: live, silent, stopped or lost."""
    return ctx.emit(await ctx.svc.nodes.listing(), NODE_COLUMNS)
