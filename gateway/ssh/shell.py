"""The gateway shell: what ``ssh -p 2222 alice@gw [COMMAND]`` runs when no target is named.

Commands are parsed like a shell line (``shlex``) and run against the policy service as the
authenticated person; the result is plain text for people or JSON with ``--json``. Nothing
here decides access: refusals come from the service and are shown as one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any, NoReturn

import asyncssh

from gateway.refusals import RefusalLog
from gateway.render import emit, to_jsonable
from policy.durations import format_duration, parse_duration
from policy.errors import AccessDenied, InvalidInput, PolicyError
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
  login                                    sign in (by key, password or your identity
                                           provider's link) and say who you are
  help
Connect to a granted target with:  ssh -p {port} {user}+ACCOUNT@TARGET@{host}
"""


@dataclass(frozen=True)
class ShellResult:
    status: int
    stdout: str
    stderr: str


@dataclass
class ShellContext:
    user: str
    policy: PolicyService
    gateway_host: str
    gateway_port: int
    wait_poll: float = 1.0
    gone: bool = False  # the person disconnected: stop waiting
    say: Callable[[str], None] = lambda text: None  # progress, shown at once (stderr)
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)  # Ctrl-C: stop waiting
    refusals: RefusalLog | None = None  # where a refused command is audited
    client: str = ""

    def connect_hint(self, account: str, target: str) -> str:
        return f"ssh -p {self.gateway_port} {self.user}+{account}@{target}@{self.gateway_host}"


class _Usage(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("lockgate").strip()
        raise _Usage(f"{command}: {message}" if command else message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Usage(message or "")


def _parser() -> _Parser:
    root = _Parser(prog="lockgate", add_help=False)
    sub = root.add_subparsers(dest="cmd", parser_class=_Parser)
    for name in ("help", "targets", "grants", "requests", "whoami", "login"):
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
    except InvalidInput as exc:
        return ShellResult(2, out.getvalue(), f"lockgate: {exc}\n")
    except PolicyError as exc:
        if isinstance(exc, AccessDenied) and ctx.refusals is not None:
            await ctx.refusals.refused(
                actor=ctx.user,
                action="shell.refused",
                subject=str(args.cmd),
                reason=str(exc),
                client=ctx.client,
            )
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
    if args.cmd == "login":  # ssh USER@gw login: the sign-in itself was the point
        user = await policy.get_user(ctx.user)
        roles = ", ".join(sorted(user.roles)) or "none"
        out.write(f"Signed in as {user.name} (roles: {roles}). Connect to a granted target with:\n")
        out.write(f"  {ctx.connect_hint('ACCOUNT', 'TARGET')}\n")
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
        requests = await policy.list_requests(ctx.user, mine_only=True)
        return show(requests, ("id", "target", "account", "duration", "state", "reason"))
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
        waited = args.wait and req.state is RequestState.PENDING
        if waited:
            ctx.interrupt.clear()
            ctx.say(
                f"request {req.id} is pending approval; waiting "
                "(Ctrl-C stops waiting, the request stays)...\n"
            )
            req = await _wait(ctx, req.id)
        show(req)
        if req.state is RequestState.APPROVED:
            if not as_json:
                out.write(f"approved: {ctx.connect_hint(req.account, req.target)}\n")
            return 0
        if waited and req.state is RequestState.PENDING:
            ctx.say(
                f"lockgate: stopped waiting; request {req.id} is still pending "
                f"(cancel {req.id} withdraws it)\n"
            )
            return 130
        return 0 if req.state is RequestState.PENDING else 1
    raise _Usage("unknown command")  # unreachable: argparse rejects unknown commands


async def _wait(ctx: ShellContext, request_id: str) -> Any:
    """Poll until the request is decided, the person disconnects or presses Ctrl-C."""
    while True:
        req = await ctx.policy.get_request(ctx.user, request_id)
        if req.state is not RequestState.PENDING or ctx.gone or ctx.interrupt.is_set():
            return req
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.interrupt.wait(), ctx.wait_poll)


class ShellChannel(asyncssh.SSHServerSession[bytes]):
    """``ssh alice@gw [COMMAND]``: one command, or a small line-edited prompt."""

    PROMPT = b"lockgate> "

    def __init__(self, ctx: ShellContext) -> None:
        self.ctx = ctx
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.command: str | None = None
        self.interactive = False
        self.line = bytearray()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # a command of the prompt is running

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self.ctx.say = self._say

    def _say(self, text: str) -> None:
        if self.chan is not None and not self.ctx.gone:
            self.chan.write_stderr(_crlf(text, self.interactive))

    def pty_requested(self, term_type: str, term_size: object, term_modes: object) -> bool:
        self.interactive = True
        return True

    def signal_received(self, signal: str) -> None:
        if signal == "INT":
            self.ctx.interrupt.set()

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return False

    def session_started(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self.chan is not None
        chan = self.chan
        if self.command is not None:
            result = await run_command(self.ctx, self.command)
            if self.ctx.gone:
                return
            chan.write(_crlf(result.stdout, self.interactive))
            chan.write_stderr(_crlf(result.stderr, self.interactive))
            chan.exit(result.status)
            return
        chan.write(_crlf(f"Lockgate gateway shell for {self.ctx.user}. Type 'help'.\n", True))
        while True:
            chan.write(self.PROMPT)
            line = await self.queue.get()
            if self.ctx.gone:
                return
            if line is None or line.strip() in ("exit", "quit", "logout"):
                chan.exit(0)
                return
            self.busy = True
            try:
                result = await run_command(self.ctx, line)
            finally:
                self.busy = False
            if self.ctx.gone:
                return
            chan.write(_crlf(result.stdout, True))
            chan.write_stderr(_crlf(result.stderr, True))

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        assert self.chan is not None
        for byte in data:
            if byte in (0x0D, 0x0A):
                self.chan.write(b"\r\n")
                self.queue.put_nowait(self.line.decode("utf-8", "replace"))
                self.line.clear()
            elif byte in (0x7F, 0x08):
                if self.line:
                    self.line.pop()
                    self.chan.write(b"\b \b")
            elif byte == 0x03:
                self.line.clear()
                if self.busy or self.command is not None:  # Ctrl-C stops what is running
                    self.chan.write(b"^C\r\n")
                    self.ctx.interrupt.set()
                else:
                    self.chan.write(b"^C\r\n" + self.PROMPT)
            elif byte == 0x04 and not self.line:
                self.queue.put_nowait(None)
            elif byte >= 0x20 and len(self.line) < 4096:
                self.line.append(byte)
                if self.interactive:
                    self.chan.write(bytes([byte]))

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        # Not cancelled (a cancel in the middle of a database call can leave SQLite
        # locked): the command in progress ends on its own, a wait at its next poll.
        self.ctx.gone = True
        self.queue.put_nowait(None)


def _crlf(text: str, tty: bool) -> bytes:
    return (text.replace("\n", "\r\n") if tty else text).encode()
