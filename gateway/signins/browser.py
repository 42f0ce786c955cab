"""Browsers signed in to the gateway, shared by every node through ``gw_browser_sessions``.

The cookie is an opaque random value; the database keeps only its SHA-256, found by that
digest and compared in constant time, so a copy of the table signs nobody in. The CSRF token
is derived from the cookie value (a SHA-256 under its own label): bound to the session,
stored nowhere, and useless for recovering the cookie. Every request reads the row, so a
sign-out on one node refuses the cookie on all of them at once; a user who is locked,
disabled or deprovisioned loses every browser session (on the cluster event that announces
it, wherever the change was made). Expired rows are removed when new sessions are made.
When the database cannot be read, ``lookup`` raises and the caller treats the browser as
not signed in (fail closed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from gateway.cluster.bus import ClusterEvent, EventKind
from gateway.db import SessionMaker
from gateway.db.tables import browser_sessions as table
from gateway.signins.stored import digest, utc
from policy.models import Clock

SESSION_TTL = timedelta(hours=8)
# The cluster re-check actions that end a user's browser sessions (subject: who).
_ENDS_USER = {"user.disable": "", "user.deprovision": "", "lock.create": "user:"}


def csrf_token(cookie: str) -> str:
    """The session's CSRF token: derived from its cookie value, so every node knows it."""
    raw = hashlib.sha256(b"lockgate-csrf\x00" + cookie.encode()).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class BrowserSession:
    user: str
    csrf: str
    expires: datetime
    via: str = "password"  # or "oidc:<provider>"
    at: datetime | None = None  # when the person signed in
    methods: frozenset[str] = frozenset()  # the IdP's amr values and acr, for idp_mfa


class BrowserSessions:
    """Signed-in browsers of the cluster, keyed by the SHA-256 of the cookie value."""

    def __init__(self, maker: SessionMaker, clock: Clock) -> None:
        self.maker = maker
        self.clock = clock

    async def create(
        self, user: str, via: str = "password", methods: frozenset[str] = frozenset()
    ) -> tuple[str, str]:
        """(cookie value, csrf token) for a fresh session."""
        now = self.clock()
        cookie = secrets.token_urlsafe(32)
        async with self.maker() as db, db.begin():
            await db.execute(table.delete().where(table.c.expires_at <= now))
            await db.execute(
                table.insert().values(
                    digest=digest(cookie),
                    user=user,
                    via=via[:64],
                    methods=json.dumps(sorted(methods)),
                    signed_in_at=now,
                    expires_at=now + SESSION_TTL,
                )
            )
        return cookie, csrf_token(cookie)

    async def lookup(self, cookie: str) -> BrowserSession | None:
        """The live session ``cookie`` stands for; raises when the database cannot say."""
        wanted = digest(cookie)
        async with self.maker() as db:
            row = (await db.execute(sa.select(table).where(table.c.digest == wanted))).first()
        if row is None or not secrets.compare_digest(str(row.digest), wanted):
            return None
        expires = utc(row.expires_at)
        if expires <= self.clock():
            return None
        return BrowserSession(
            row.user,
            csrf_token(cookie),
            expires,
            row.via,
            utc(row.signed_in_at),
            frozenset(json.loads(row.methods)),
        )

    async def end(self, cookie: str) -> None:
        """Sign-out: the cookie is refused by every node from now on."""
        async with self.maker() as db, db.begin():
            await db.execute(table.delete().where(table.c.digest == digest(cookie)))

    async def end_user(self, user: str) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(table.delete().where(table.c.user == user))

    async def on_event(self, event: ClusterEvent) -> None:
        """A user locked, disabled or deprovisioned anywhere is signed out everywhere."""
        if event.kind != EventKind.RECHECK:
            return
        prefix = _ENDS_USER.get(str(event.payload.get("action", "")))
        subject = str(event.payload.get("subject", ""))
        if prefix is not None and subject.startswith(prefix) and len(subject) > len(prefix):
            await self.end_user(subject[len(prefix) :])
