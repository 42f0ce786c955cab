"""The ticket-check port: whether a request's ticket is real and open, asked of the ticket
system before the request is filed. The gateway provides the implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TicketVerdict:
    valid: bool
    summary: str  # the ticket system's words (or why it could not be asked), shown to approvers
    answered: bool = True  # False: the ticket system could not be asked (down, slow, garbled)


class TicketCheck(Protocol):
    async def check(self, ticket: str, *, user: str, target: str, account: str) -> TicketVerdict:
        """Never raises: a ticket system that cannot answer gives the verdict the
        configuration asks for (refuse when failing closed)."""
