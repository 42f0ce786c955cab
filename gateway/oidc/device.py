"""SSH sign-in through the identity provider, device-code style (after RFC 8628).

A person whose user is linked to a provider connects with plain ``ssh``; keyboard-interactive
shows a short link, ``<gateway>/ssh/<code>``, and the SSH login waits. In the browser they
sign in with the provider (a fresh sign-in: at most ``FRESH`` old) and approve the login,
which names the SSH client's address. Only the same user can approve it; each code serves
once (a compare-and-swap from ``pending``) and expires with ``TTL``.

The logins are rows in the database, so the browser may reach any node of the cluster: the
node holding the SSH connection learns the answer at once when it served the browser itself,
else by reading the row again every ``POLL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from gateway.db import SessionMaker, completed
from gateway.db.tables import device_logins as table
from policy.models import Clock

TTL = timedelta(minutes=5)
FRESH = timedelta(minutes=10)  # how recent the browser's IdP sign-in must be to approve
POLL = 0.5  # seconds between reads of a login's row by the node that waits for it
_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: no words; no look-alike digits


def new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class DeviceLogin:
    code: str
    user: str
    address: str
    created: datetime
    approved: bool = False
    # amr values and acr of the approving browser's IdP sign-in (for a rule's idp_mfa)
    methods: frozenset[str] = frozenset()
    done: asyncio.Event = field(default_factory=asyncio.Event)


class DeviceLogins:
    def __init__(self, maker: SessionMaker, clock: Clock) -> None:
        self.maker = maker
        self.clock = clock
        self._waiting: dict[str, DeviceLogin] = {}  # logins this node's SSH side waits for

    async def start(self, user: str, address: str) -> DeviceLogin:
        now = self.clock()
        async with self.maker() as db, db.begin():
            await db.execute(table.delete().where(table.c.created_at < now - 2 * TTL))
        for _ in range(5):
            login = DeviceLogin(new_code(), user, address[:255], now)
            try:
                async with self.maker() as db, db.begin():
                    await db.execute(
                        table.insert().values(
                            code=login.code,
                            user=user,
                            address=login.address,
                            created_at=now,
                            state="pending",
                            methods="[]",
                        )
                    )
            except IntegrityError:
                continue  # the code is taken: draw again
            self._waiting[login.code] = login
            return login
        raise RuntimeError("no free device code")  # 20^8 codes: never in practice

    async def pending(self, code: str) -> DeviceLogin | None:
        """The pending, unexpired login with ``code``."""
        async with self.maker() as db:
            row = (
                await db.execute(
                    sa.select(table).where(
                        table.c.code == code.strip().upper()[:16],
                        table.c.state == "pending",
                        table.c.created_at > self.clock() - TTL,
                    )
                )
            ).first()
        if row is None:
            return None
        return DeviceLogin(row.code, row.user, row.address, _utc(row.created_at))

    async def decide(
        self, code: str, user: str, approve: bool, methods: frozenset[str] = frozenset()
    ) -> bool:
        """Approve or deny ``code`` as ``user``; False when it is not that user's pending
        login. ``methods``: how the user signed in at the provider (amr, acr)."""
        async with self.maker() as db, db.begin():
            done = await db.execute(
                table.update()
                .where(
                    table.c.code == code,
                    table.c.user == user,
                    table.c.state == "pending",
                    table.c.created_at > self.clock() - TTL,
                )
                .values(
                    state="approved" if approve else "denied",
                    methods=json.dumps(sorted(methods)),
                )
            )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
        local = self._waiting.get(code)
        if local is not None:
            local.done.set()
        return True

    async def _answer(self, login: DeviceLogin) -> str:
        async with self.maker() as db:
            row = (
                await db.execute(
                    sa.select(table.c.state, table.c.methods).where(table.c.code == login.code)
                )
            ).first()
        if row is None:
            return "cancelled"
        if row.state == "approved":
            login.methods = frozenset(json.loads(row.methods))
        return str(row.state)

    async def wait(self, login: DeviceLogin, seconds: float) -> bool:
        """Whether the login was approved within ``seconds`` (real time: it bounds how long
        an unauthenticated connection is held)."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL):
                            await login.done.wait()
                    # the SSH side's task is cancelled when the client leaves: never
                    # in the middle of a database call (gateway.db.completed)
                    state = await completed(self._answer(login))
                    if state != "pending":
                        login.approved = state == "approved"
                        return login.approved
                    if login.done.is_set():  # cancelled here
                        return False
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(login.code, None)

    async def cancel(self, login: DeviceLogin) -> None:
        """The SSH side gives up (the client left, or answered with a password)."""
        login.done.set()
        self._waiting.pop(login.code, None)
        async with self.maker() as db, db.begin():
            await db.execute(
                table.update()
                .where(table.c.code == login.code, table.c.state == "pending")
                .values(state="cancelled")
            )
