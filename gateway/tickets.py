"""Ticket validation against the ticket system: ``[tickets] url`` is called with the ticket
id before a request carrying one is filed, and must answer ``{"valid": bool, "summary":
str}`` within ``timeout``. Its summary is stored with the request and shown to approvers.

When it cannot answer (down, too slow, a bad reply) the request is refused with that reason
if ``fail_closed`` (the default); otherwise it goes ahead with the reason as its summary, so
approvers see that the ticket was not checked. A break-glass rule's request is stopped only
by an explicit "not valid": when the ticket system is down it goes ahead, marked so."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from policy.tickets import TicketVerdict

MAX_SUMMARY = 500


@dataclass(frozen=True)
class TicketSettings:
    url: str = ""  # "" = tickets are not checked
    timeout: timedelta = timedelta(seconds=5)
    fail_closed: bool = True


class TicketChecker:
    """Implements ``policy.tickets.TicketCheck`` over HTTP."""

    def __init__(self, settings: TicketSettings) -> None:
        self.settings = settings

    async def check(self, ticket: str, *, user: str, target: str, account: str) -> TicketVerdict:
        import aiohttp  # not at the top: every `lockgate` command imports this module

        seconds = self.settings.timeout.total_seconds()
        body = {"ticket": ticket, "user": user, "target": target, "account": account}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as http,
                http.post(self.settings.url, json=body, allow_redirects=False) as response,
            ):
                raw = await response.read()
                if response.status != 200:
                    return self._unanswered(f"it answered HTTP {response.status}")
        except TimeoutError:
            return self._unanswered(f"it did not answer within {seconds:g}s")
        except aiohttp.ClientError as exc:
            return self._unanswered(f"it cannot be reached ({type(exc).__name__})")
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return self._unanswered("its answer is not JSON")
        if (
            not isinstance(answer, dict)
            or not isinstance(answer.get("valid"), bool)
            or not isinstance(answer.get("summary", ""), str)
        ):
            return self._unanswered('its answer is not {"valid": bool, "summary": str}')
        summary = " ".join(str(answer.get("summary", "")).split())[:MAX_SUMMARY]
        return TicketVerdict(valid=answer["valid"], summary=summary)

    def _unanswered(self, why: str) -> TicketVerdict:
        text = f"the ticket system could not check it: {why}"
        if self.settings.fail_closed:
            return TicketVerdict(valid=False, summary=text, answered=False)
        return TicketVerdict(valid=True, summary=f"not checked ({text})", answered=False)
