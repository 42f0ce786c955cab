"""The gateway shell: what ``ssh -p 2222 alice@gw [COMMAND]`` runs when no target is named.

Commands are parsed like a shell line (``shlex``) and run against the policy service as the
authenticated person; the result is plain text for people or JSON with ``--json``. Nothing
here decides access: refusals come from the service and are shown as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from io import StringIO
from typing import Any, NoReturn

from gateway.cli.render import emit, to_jsonable
from policy.durations import format_duration, parse_duration
from policy.errors import PolicyError
from policy.models import RequestState
from policy.service import PolicyService

HELP = """\
Lockgate gateway shell. Commands (each takes --json):
  targets                                  what you may request
  grants                                   your grants, with time left
  requests                                 your requests
  request TARGET [--account A] --for DURATION --reason TEXT [--ticket ID] [--wait]
  extend GRANT --for DURATION --reason TEXT
  cancel REQUEST
  whoami
  help
Connect to a granted target with:  ssh -p {port} {user}+ACCOUNT@TARGET@{host}
"""


@dataclass(frozen=True)
class ShellResult:
    status: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class ShellContext:
    user: str
    policy: PolicyService
    gateway_host: str
    gateway_port: int
    wait_poll: float = 1.0

    def connect_hint(self, account: str, target: str) -> str:
        return f"ssh -p {self.gateway_port} {self.user}+{account}@{target}@{self.gateway_host}"


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Usage(message or "")


def _parser() -> _Parser:
    root = _Parser(prog="lockgate", add_help=False)
    sub = root.add_subparsers(dest="cmd", parser_class=_Parser)
    for name in ("help", "targets", "grants", "requests", "whoami"):
        sub.add_parser(name, add_help=False).add_argument("--json", action="store_true")
    p = sub.add_parser("request", add_help=False)
    p.add_argument("target")
    p.add_argument("--account")
    p.add_argument("--for", dest="duration")
    p.add_argument("--reason", default="")
    p.add_argument("--ticket", default="")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("extend", add_help=False)
    p.add_argument("grant")
    p.add_argument("--for", dest="duration", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("cancel", add_help=False)
    p.add_argument("request")
    p.add_argument("--json", action="store_true")
    return root


async def run_command(ctx: ShellContext, line: str) -> ShellResult:
    """Run one gateway-shell command line as ``ctx.user``."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        return ShellResult(2, "", f"lockgate: {exc}\n")
    if not argv:
        return ShellResult(0, "", "")
    try:
        args = _parser().parse_args(argv)
    except _Usage as exc:
        text = str(exc).strip() or "bad usage"
        return ShellResult(2, "", f"lockgate: {text} (try: help)\n")
    out = StringIO()
    try:
        status = await _dispatch(ctx, args, out)
    except PolicyError as exc:
        return ShellResult(1, out.getvalue(), f"lockgate: {exc}\n")
    return ShellResult(status, out.getvalue(), "")


async def _dispatch(ctx: ShellContext, args: argparse.Namespace, out: StringIO) -> int:
    policy, as_json = ctx.policy, args.json

    def show(value: Any, columns: Sequence[str] | None = None) -> int:
        emit(value, out, as_json=as_json, columns=columns)
        return 0

    if args.cmd == "help":
        out.write(HELP.format(port=ctx.gateway_port, user=ctx.user, host=ctx.gateway_host))
        return 0
    if args.cmd == "whoami":
        user = await policy.get_user(ctx.user)
        return show(
            {"name": user.name, "roles": sorted(user.roles), "totp_enabled": user.totp_enabled}
        )
    if args.cmd == "targets":
        rows = [
            {
                "target": r.target.name,
                "kind": r.target.kind,
                "accounts": list(r.accounts),
                "rule": r.rule.name,
                "max_duration": format_duration(r.rule.max_duration),
                "approvals": r.rule.approvals,
                "labels": dict(r.target.labels),
            }
            for r in await policy.requestable(ctx.user)
        ]
        return show(rows, ("target", "accounts", "max_duration", "approvals", "labels"))
    if args.cmd == "grants":
        now = policy.now()
        rows = [
            {
                **to_jsonable(g),
                "time_left": format_duration(g.expires_at - now) if g.is_active(now) else "-",
                "connect": ctx.connect_hint(g.account, g.target),
            }
            for g in await policy.list_grants(ctx.user, active_only=True, mine_only=True)
        ]
        return show(rows, ("id", "target", "account", "time_left", "connect"))
    if args.cmd == "requests":
        rows = await policy.list_requests(ctx.user, mine_only=True)
        return show(rows, ("id", "target", "account", "duration", "state", "reason"))
    if args.cmd == "cancel":
        return show(await policy.cancel(ctx.user, args.request))
    if args.cmd == "extend":
        return show(
            await policy.extend(ctx.user, args.grant, parse_duration(args.duration), args.reason)
        )
    if args.cmd == "request":
        duration = parse_duration(args.duration) if args.duration else None
        req = await policy.create_request(
            ctx.user,
            args.target,
            account=args.account,
            duration=duration,
            reason=args.reason,
            ticket=args.ticket,
        )
        if args.wait and req.state is RequestState.PENDING:
            if not as_json:
                out.write(f"request {req.id} is pending approval; waiting...\n")
            req = await _wait(ctx, req.id)
        show(req)
        if req.state is RequestState.APPROVED:
            if not as_json:
                out.write(f"approved: {ctx.connect_hint(req.account, req.target)}\n")
            return 0
        return 0 if req.state is RequestState.PENDING else 1
    raise _Usage("unknown command")  # unreachable: argparse rejects unknown commands


async def _wait(ctx: ShellContext, request_id: str) -> Any:
    while True:
        req = await ctx.policy.get_request(ctx.user, request_id)
        if req.state is not RequestState.PENDING:
            return req
        await asyncio.sleep(ctx.wait_poll)
