"""What a fast-path connection remembers of its last heads, so a repeat costs little.

A client that polls, or fetches one kind of resource, sends the same header lines request
after request on one keep-alive connection (a browser loading a page's assets varies
``Accept``, ``Sec-Fetch-Dest`` and ``Referer``), and a target answers one resource with the
same response head (its ``Date`` changes once a second). Rewriting them is a pure function
of their text and of a few things the gateway holds: the session, the target, the
credential, the assertion, the client's view. Each memo keeps one result with everything it
was made from, and is used only when all of it is the same object (or equal text) again.
What is decided per request is still decided per request: the sign-in, the session, its
grant, its rule and the anomaly rules on the path (``FastFront.plan``), and the framing of
each answer's body (``Flight``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.http.headers import ClientView
from gateway.http.wire import ResponseHead

if TYPE_CHECKING:
    from gateway.http.flight import Framing
    from gateway.http.session import LiveHttpSession


@dataclass(slots=True)
class UpstreamFields:
    """The header lines sent upstream after the request line, and the view they were
    made with, for one block of the browser's header lines."""

    block: str
    prefix: str
    session: LiveHttpSession
    # What holds the credential and the assertion is kept out of any repr.
    credential: object = field(repr=False)
    assertion: str | None = field(repr=False)
    view: ClientView
    fields: bytes = field(repr=False)  # serialized, with the blank line that ends the head

    def fits(
        self,
        block: str,
        prefix: str,
        session: LiveHttpSession,
        assertion: str | None,
    ) -> bool:
        return (
            self.session is session
            and self.credential is session.credential
            and self.assertion == assertion
            and self.prefix == prefix
            and self.block == block
        )


@dataclass(slots=True)
class Answer:
    """One upstream response head and what went to the browser for it."""

    raw: bytes = field(repr=False)
    method: str
    date: str
    view: ClientView
    session: LiveHttpSession
    close: bool  # the browser asked to close
    head: ResponseHead
    framing: Framing
    out: bytes = field(repr=False)  # the head as sent to the browser

    def fits(
        self,
        raw: bytes,
        method: str,
        date: str,
        view: ClientView,
        session: LiveHttpSession,
        close: bool,
    ) -> bool:
        return (
            self.view is view
            and self.session is session
            and self.close == close
            and self.method == method
            and self.date == date
            and self.raw == raw
        )
