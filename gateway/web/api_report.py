"""API route for the compliance report (auditors and admins)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.report.build import report_for
from gateway.report.render import FORMATS, content_type, render
from gateway.web.auth import scheme
from gateway.web.routes import AUDITOR, TABLE, Call
from policy.errors import InvalidInput

route = TABLE.add


@route(
    "GET",
    "/report",
    "The compliance report: per grant who, what, when, why, approved by whom, and the "
    "sessions with their commands, files, anomalies and recordings; whether the audit chain "
    "and the recordings verify",
    access=AUDITOR,
    tag="audit",
    query={
        "since": "how far back, a duration such as 30d (required)",
        "target": "one target only",
        "user": "one person only",
        "format": "json (default), csv or html (a self-contained file)",
    },
)
async def get_report(call: Call) -> Any:
    fmt = call.query("format", "json")
    if fmt not in FORMATS:
        raise InvalidInput("format must be csv, json or html")
    if not call.query("since"):
        raise InvalidInput("since is required, e.g. since=30d")
    services = call.deps.services
    report = await report_for(
        services,
        call.actor,
        since=call.query("since"),
        target=call.query("target") or None,
        user=call.query("user") or None,
        public_url=services.config.server.public_url
        or f"{scheme(call.request)}://{call.request.host}",
    )
    text = render(report, fmt)
    response = web.Response(text=text, content_type=content_type(fmt), charset="utf-8")
    if fmt != "json":
        stamp = report.generated_at.strftime("%Y%m%d-%H%M%S")
        response.headers["Content-Disposition"] = (
            f'attachment; filename="lockgate-report-{stamp}.{fmt}"'
        )
    return response
