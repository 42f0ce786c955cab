"""The compliance report as JSON, CSV (one row per session; a grant without sessions gets
one row) or a self-contained HTML file (styles inline, no script, nothing fetched from
anywhere: it can be attached to an audit as it is)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import jinja2

from gateway.render import to_jsonable
from gateway.report.build import GrantRow, Report, SessionRow

FORMATS = ("json", "csv", "html")
TEMPLATES = Path(__file__).parent / "templates"
CSV_COLUMNS = (
    "grant",
    "user",
    "target",
    "account",
    "rule",
    "requested_at",
    "reason",
    "ticket",
    "ticket_summary",
    "approved_by",
    "granted_at",
    "expires_at",
    "revoked",
    "break_glass",
    "extensions",
    "session",
    "session_kind",
    "client",
    "session_start",
    "session_end",
    "end_reason",
    "commands",
    "files",
    "anomalies",
    "recording",
    "recording_status",
)


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def _when(value: datetime | None) -> str:
    """A moment for people: UTC, to the second."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def as_json(report: Report) -> str:
    data = to_jsonable(report)
    data["verified"] = report.verified
    data["sessions"] = report.sessions
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _grant_cells(grant: GrantRow) -> list[str]:
    revoked = ""
    if grant.revoked_at is not None:
        revoked = f"{_iso(grant.revoked_at)} by {grant.revoked_by}: {grant.revoke_reason}"
    return [
        grant.id,
        grant.user,
        grant.target,
        grant.account,
        grant.rule,
        _iso(grant.requested_at),
        grant.reason,
        grant.ticket,
        grant.ticket_summary,
        "; ".join(f"{a.approver} at {_iso(a.at)}" for a in grant.approvals),
        _iso(grant.granted_at),
        _iso(grant.expires_at),
        revoked,
        "yes" if grant.break_glass else "no",
        " ; ".join(
            f"{e.duration} asked {_iso(e.requested_at)}: {e.state}"
            + "".join(f", {a.approver} at {_iso(a.at)}" for a in e.approvals)
            for e in grant.extensions
        ),
    ]


def _session_cells(session: SessionRow | None) -> list[str]:
    if session is None:
        return [""] * 11
    return [
        session.id,
        session.kind,
        session.client,
        _iso(session.started_at),
        _iso(session.ended_at),
        session.end_reason or "",
        " ; ".join(c.text for c in session.commands),
        " ; ".join(f"{f['op']} {f['path']} ({f['bytes']} bytes)" for f in session.files),
        " ; ".join(f"{a['rule']} ({a['action']})" for a in session.anomalies),
        session.recording,
        session.recording_status,
    ]


def as_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for grant in report.grants:
        for session in grant.sessions or (None,):
            writer.writerow(_grant_cells(grant) + _session_cells(session))
    return out.getvalue()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    return env


_ENV = _environment()


def as_html(report: Report) -> str:
    return _ENV.get_template("report.html").render(report=report)


def render(report: Report, fmt: str) -> str:
    if fmt == "csv":
        return as_csv(report)
    if fmt == "html":
        return as_html(report)
    return as_json(report)


def content_type(fmt: str) -> str:
    return {"csv": "text/csv", "html": "text/html"}.get(fmt, "application/json")
