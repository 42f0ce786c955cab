"""``lockgate report``: the compliance report, on the gateway host or through the API."""

from __future__ import annotations

from gateway.cli.context import Context, Usage
from gateway.cli.remote import Client, remote


def _write(ctx: Context, text: str) -> int:
    if ctx.args.output:
        try:
            ctx.args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise Usage(f"cannot write {ctx.args.output}: {exc.strerror}") from None
        return 0
    ctx.out.write(text)
    return 0


def _format(ctx: Context) -> str:
    return str(ctx.args.format or "json")  # the parser's choices


async def report(ctx: Context) -> int:
    # The report's layers (the database's tables, the renderers) only where it is built.
    from gateway.config import public_base
    from gateway.report.build import report_for
    from gateway.report.render import render

    fmt = _format(ctx)
    result = await report_for(
        ctx.svc,
        ctx.actor,
        since=ctx.args.since,
        target=ctx.args.target,
        user=ctx.args.user,
        public_url=public_base(ctx.svc.config),
    )
    return _write(ctx, render(result, fmt))


@remote(report)
async def _report(ctx: Context, api: Client) -> int:
    query = {
        "since": ctx.args.since,
        "target": ctx.args.target or "",
        "user": ctx.args.user or "",
        "format": _format(ctx),
    }
    text = await api.call("GET", "/report", query=query, raw=True)
    return _write(ctx, str(text))
