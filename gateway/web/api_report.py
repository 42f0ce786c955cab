"""API route for the compliance report (auditors and admins)."""

from __future__ import annotations

from typing import Any, TypedDict, get_type_hints

from aiohttp import web

from gateway.report.build import Report, report_for
from gateway.report.render import content_type, render
from gateway.web import schemas as s
from gateway.web.auth import scheme
from gateway.web.limits import duration
from gateway.web.routes import AUDITOR, TABLE, Call

route = TABLE.add
_make: Any = TypedDict
ReportJson = _make("ReportJson", {**get_type_hints(Report), "verified": bool, "sessions": int})
"""The report as format=json writes it: the Report's fields, whether it all verified and
how many sessions it covers."""


@route(
    "GET",
    "/report",
    "The compliance report: per grant who, what, when, why, approved by whom, and the "
    "sessions with their commands, files, anomalies and recordings; whether the audit chain "
    "and the recordings verify",
    access=AUDITOR,
    tag="audit",
    query=s.ReportQuery,
    returns=ReportJson,
    media=("application/json", "text/csv", "text/html"),
)
async def get_report(call: Call) -> Any:
    fmt = call.query("format", "json")
    duration(call.query("since"))  # over a year: refused (403), like any too long duration
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
