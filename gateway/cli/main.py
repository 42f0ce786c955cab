"""Dispatch and the exit-status contract of ``lockgate`` (the grammar is ``parser``).

Exit status 0 on success, 1 on a refused action (reason on stderr), 2 on bad usage. Every
refusal and every bad input is one line on stderr starting with ``lockgate:``; no traceback
reaches the person.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from gateway.cli import (
    interrupts,
)
from gateway.cli.context import Context, Usage
from gateway.cli.parser import build_parser
from gateway.errors import AuditError, ConfigError, StartupError
from policy.errors import AccessDenied, InvalidInput, PolicyError
from vault.errors import InvalidInput as VaultInvalidInput
from vault.errors import VaultError


def config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        return Path(args.config)
    env = os.environ.get("LOCKGATE_CONFIG")
    if env:
        return Path(env)
    default = Path("lockgate.toml")
    return default if default.exists() else None


def handler_of(args: argparse.Namespace) -> Callable[[Context], Awaitable[int]]:
    """The parsed command's handler (``parser`` names it), its module imported now."""
    module, name = str(args.handler).rsplit(".", 1)
    handler: Callable[[Context], Awaitable[int]] = getattr(
        importlib.import_module(f"gateway.cli.{module}"), name
    )
    return handler


async def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    handler = handler_of(args)
    url, token = os.environ.get("LOCKGATE_URL", ""), os.environ.get("LOCKGATE_TOKEN", "")
    if url or token:
        if not (url and token):
            raise Usage("set both LOCKGATE_URL and LOCKGATE_TOKEN to use the HTTP API")
        from gateway.cli.remote import run_remote  # aiohttp, only through the API

        ctx = Context(args, out, err, None, None, "")
        return await run_remote(ctx, handler, url, token)
    # The database, SSH and web layers: only for a command run here.
    from gateway.config import load_config
    from gateway.services import open_services
    from policy.service import SYSTEM_ACTOR

    path = config_path(args)
    needs_services = getattr(handler, "needs_services", True)
    services = None
    if needs_services:
        config = load_config(path)
        if path is None:
            _check_initialised(config.master_key)
        services = await open_services(config)
    ctx = Context(
        args=args,
        out=out,
        err=err,
        config_path=path,
        services=services,
        actor=args.actor or SYSTEM_ACTOR,
    )
    try:
        return int(await handler(ctx))
    except AccessDenied as exc:
        if services is not None:  # refused actions leave an audit trace, as over the API
            await services.refusals.refused(
                actor=ctx.actor,
                action="cli.refused",
                subject=str(getattr(handler, "__name__", "command")),
                reason=str(exc),
                client="cli",
            )
        raise
    finally:
        if services is not None:
            await services.aclose()


class NotInitialised(StartupError):
    """No configuration file and no data directory here."""


def _check_initialised(master_key: str) -> None:
    """Without a configuration file, the defaults name ``./lockgate-data``: if nothing is
    there, say how to start rather than which key file is missing."""
    if master_key.startswith("file:") and not Path(master_key[5:]).exists():
        raise NotInitialised(
            "no Lockgate configuration here (./lockgate.toml): run `lockgate init` first, "
            "or pass --config FILE or set LOCKGATE_CONFIG"
        )


_DURATION_OPTIONS = frozenset({"--for"})


def _joined_negative_values(argv: Sequence[str]) -> list[str]:
    """``--for -5m`` as ``--for=-5m``: argparse would read ``-5m`` as an unknown option and
    say the duration is missing; the duration check then says what is wrong with it."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if (
            items[i] in _DURATION_OPTIONS
            and i + 1 < len(items)
            and items[i + 1][:2] in {f"-{d}" for d in "0123456789"}
        ):
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = _joined_negative_values(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except Usage as exc:
        err.write(f"lockgate: {exc}\n")
        return 2
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    try:
        if getattr(args, "handler", None) is None:  # ``lockgate`` or ``lockgate GROUP`` alone
            getattr(args, "help_of", parser).print_help(out)
            code = 0
        else:
            code = asyncio.run(_run(args, out, err))
        out.flush()  # a closed pipe shows here, not in an interpreter's exit message
        return code
    except BrokenPipeError:
        return interrupts.pipe_closed()
    except KeyboardInterrupt:
        return interrupts.INTERRUPTED
    except interrupts.Interrupted:
        return interrupts.INTERRUPTED
    except (Usage, ConfigError, InvalidInput, VaultInvalidInput) as exc:
        err.write(f"lockgate: {_unprefixed(exc)}\n")
        return 2
    except (PolicyError, VaultError, StartupError, AuditError) as exc:
        err.write(f"lockgate: {_unprefixed(exc)}\n")
        return 1
    except Exception as exc:  # the last resort: one line, the details only on request
        if os.environ.get("LOCKGATE_DEBUG"):
            import traceback

            traceback.print_exc(file=err)
        err.write(
            f"lockgate: internal error ({type(exc).__name__}); set LOCKGATE_DEBUG=1 for details\n"
        )
        return 1


def _unprefixed(exc: BaseException) -> str:
    """The message once, without a ``lockgate:`` of its own (never ``lockgate: lockgate:``)."""
    text = str(exc).strip()
    while text.startswith("lockgate:"):
        text = text.removeprefix("lockgate:").strip()
    return text
