"""Slack- and Mattermost-compatible incoming webhooks: one message per notice, with the
request's facts as attachment fields (both products render ``attachments``), the approver
progress ("1 of 2") and a link to the request page on Lockgate (signing in, with TOTP, is
needed there: nothing is approved by a link alone).

Incoming webhooks cannot edit a message they posted, so a later notice about the same
request is a follow-up that repeats the request's title and carries the same thread key
(``X-Lockgate-Thread``); the text of every value a person typed is escaped, so a reason
cannot mention ``@channel`` or forge a link."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from gateway.notify.delivery import post_json
from gateway.notify.settings import Channel

_MENTION = re.compile(r"(?<![\w.])@")  # "@channel", "@here", "@alice"; not "root@db01"
_COLOURS = {
    "request.created": "#439FE0",
    "request.approved": "#2EB67D",
    "request.denied": "#E01E5A",
    "request.cancelled": "#999999",
    "request.expired": "#999999",
    "grant.expiring": "#ECB22E",
    "grant.revoked": "#E01E5A",
    "session.killed": "#E01E5A",
    "breakglass.used": "#E01E5A",
}


def escape(value: object) -> str:
    """Plain text for Slack and Mattermost: no markup, links or mentions."""
    text = str(value if value is not None else "")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION.sub("@\u200b", text)


def progress(request: Mapping[str, Any]) -> str:
    required = request.get("approvals_required")
    if required is None:
        return str(request.get("approvals", 0))
    return f"{request.get('approvals', 0)} of {required}"


def headline(notice: Mapping[str, Any], escape: Callable[[object], str] = escape) -> str:
    """One line saying what happened (``escape`` makes values safe for the medium)."""
    event, actor = notice["event"], escape(notice.get("actor"))
    request = notice.get("request") or {}
    grant = notice.get("grant") or {}
    session = notice.get("session") or {}
    prov = notice.get("provisioning") or {}
    who = escape(request.get("user") or grant.get("user") or session.get("user"))
    what = escape(
        f"{request.get('account') or grant.get('account') or session.get('account')}"
        f"@{request.get('target') or grant.get('target') or session.get('target')}"
    )
    if event == "provisioning.cleanup_failed":
        return (
            f"Removing {escape(prov.get('account'))} from {escape(prov.get('target'))} failed"
            f" ({escape(prov.get('error'))}); retrying until the target confirms"
        )
    if event == "request.created":
        kind = "an extension of" if request.get("extends_grant") else "access to"
        return f"{who} requests {kind} {what} ({progress(request)} approvals)"
    if event == "request.approved":
        if request.get("state") == "approved":
            return f"{actor} approved: {who} has {what} ({progress(request)} approvals)"
        return f"{actor} approved {who}'s request for {what} ({progress(request)} approvals)"
    if event == "request.denied":
        return f"{actor} denied {who}'s request for {what}"
    if event == "request.cancelled":
        return f"{who} cancelled the request for {what}"
    if event == "request.expired":
        return f"{who}'s request for {what} expired unanswered"
    if event == "grant.expiring":
        minutes = max(int(notice.get("ends_in_seconds", 0)) // 60, 1)
        return f"{who}'s access to {what} ends in {minutes} min"
    if event == "grant.revoked":
        return f"{actor} revoked {who}'s access to {what}"
    if event == "session.killed":
        return f"{who}'s session on {what} was ended: {escape(session.get('reason'))}"
    return f"BREAK-GLASS: {who} took {what} without approval"


WIDE = {"Reason", "Ticket check", "Comment", "Revoke reason", "Session end", "Error"}


def facts(notice: Mapping[str, Any]) -> list[tuple[str, object]]:
    """The facts every medium shows, as (label, value), empty ones left out."""
    request = notice.get("request") or {}
    grant = notice.get("grant") or {}
    session = notice.get("session") or {}
    prov = notice.get("provisioning") or {}
    rows: list[tuple[str, object]] = [
        ("Target", request.get("target") or grant.get("target") or session.get("target")),
        ("Account", request.get("account") or grant.get("account") or session.get("account")),
        ("Provisioned", f"{prov['kind']} {prov['account']}@{prov['target']}" if prov else None),
        ("For", prov.get("user")),
        ("Error", prov.get("error")),
        ("Next try", prov.get("retry_at")),
        ("Reason", request.get("reason")),
        ("Ticket", request.get("ticket")),
        ("Ticket check", request.get("ticket_summary")),
        ("Duration", request.get("duration")),
        ("Until", grant.get("expires_at") or ("once approved" if request else None)),
        ("Rule", notice.get("rule")),
        ("Approvals", progress(request) if request else None),
        ("Approved by", ", ".join(request.get("approved_by") or ())),
        ("Comment", notice.get("comment")),
        ("Revoke reason", notice.get("reason")),
        ("Session", session.get("id")),
        ("Session end", session.get("reason")),
    ]
    return [(label, value) for label, value in rows if value not in (None, "")]


def story(notice: Mapping[str, Any]) -> str:
    """The title every notice of one story repeats: the request, else the grant or session."""
    if notice.get("request"):
        return f"Request {notice['request']['id']}"
    if notice.get("grant"):
        return f"Grant {notice['grant']['id']}"
    if notice.get("provisioning"):
        return f"Provisioned {notice['provisioning']['id']}"
    return f"Session {(notice.get('session') or {}).get('id', '')}"


def message(channel: Channel, notice: Mapping[str, Any]) -> dict[str, Any]:
    fields = [(name, value, name not in WIDE) for name, value in facts(notice)]
    title = story(notice)
    line = headline(notice)
    body: dict[str, Any] = {
        "text": line,
        "attachments": [
            {
                "fallback": f"{line} {notice['link']}",
                "color": _COLOURS.get(str(notice["event"]), "#999999"),
                "title": escape(title),
                "title_link": notice["link"],
                "fields": [
                    {"title": name, "value": escape(value), "short": short}
                    for name, value, short in fields
                ],
                "footer": f"lockgate {notice['event']} {notice['id']}",
            }
        ],
    }
    if channel.channel:
        body["channel"] = channel.channel
    return body


async def deliver_chat(
    http: aiohttp.ClientSession, channel: Channel, notice: Mapping[str, Any], url: str
) -> None:
    body = json.dumps(message(channel, notice), ensure_ascii=False).encode()
    headers = {"Idempotency-Key": str(notice["id"]), "X-Lockgate-Thread": str(notice["thread"])}
    await post_json(http, url, body, headers)
