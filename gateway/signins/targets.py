"""Sign-ins to web targets, shared by every node: the hand-off's one-time codes
(``gw_web_handoffs``) and the target cookies they become (``gw_web_logins``).

Only SHA-256 digests of codes and cookie values are stored; a row found by its digest is
compared with it in constant time. A code is taken once (the row is deleted as it is read,
whichever node redeems it). A target cookie issued by one node is valid on every node: a node
that does not know it reads its row and opens its own live session for it.

Every request on the web fast path checks the target cookie, so each node keeps the sign-ins
it has read for at most ``CACHED`` (and at most ``MAX_CACHED`` of them): ``cached`` answers
from memory only, ``login`` reads the row when the memory has nothing fresh (one read per
cookie at a time: when an entry expires under load, every request carrying that cookie
waits for the same read instead of queueing a read each behind SQLite's lock). What ends a
sign-in reaches every node's memory at once: when a session for a sign-in is terminated (by a
kill, a lock, a revocation, an anomaly rule), the node that held it marks the rows ``ended``
and publishes ``logins_ended`` in the same transaction (``gateway.cluster.bus``); every node
then refuses the cookie and ends its own sessions for that sign-in (``on_ended``). Only what
was made until the end: a sign-in made again meanwhile, and its session, stay. When the
database cannot be read, ``login`` raises and the caller refuses the request (fail closed);
what is cached lives no longer than ``CACHED``, and live sessions are re-checked against the
database as before (``gateway.http.session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from gateway.cluster.bus import ClusterEvent, EventKind, publish
from gateway.db import READ_ONLY, SessionMaker
from gateway.db.tables import web_handoffs as codes
from gateway.db.tables import web_logins as logins
from gateway.signins.stored import digest, utc
from policy.models import Clock

log = logging.getLogger(__name__)
CACHED = timedelta(seconds=5)
MAX_CACHED = 10_000
_ENDED = 10_000  # digests of sign-ins ended elsewhere, remembered for reads in flight


def _columns(access: WebAccess) -> dict[str, object]:
    """The columns both tables hold for whose access a secret stands."""
    return {
        "user": access.user,
        "target": access.target,
        "account": access.account,
        "grant_id": access.grant_id,
        "grant_expires_at": access.expires_at,
    }


def _access(row: Any) -> WebAccess:
    return WebAccess(row.user, row.target, row.account, row.grant_id, utc(row.grant_expires_at))


@dataclass(frozen=True)
class WebAccess:
    """Who may use which target under which grant, as decided when the code was issued."""

    user: str
    target: str
    account: str
    grant_id: str
    expires_at: datetime

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.user, self.target, self.account, self.grant_id)


@dataclass
class Login:
    """What a target session cookie stands for."""

    access: WebAccess
    ended: str | None = None  # the reason, once its session was terminated
    until: datetime | None = None  # the cookie's own end (at most the grant's)

    def valid_at(self, now: datetime) -> bool:
        return now < min(self.until or self.access.expires_at, self.access.expires_at)


@dataclass(frozen=True)
class Code:
    access: WebAccess
    state_hash: str
    next_path: str
    expires: datetime


class TargetSignIns:
    def __init__(self, maker: SessionMaker, clock: Clock, node: str) -> None:
        self.maker = maker
        self.clock = clock
        self.node = node
        self._cache: dict[str, tuple[Login, datetime]] = {}
        self._ended: dict[str, str] = {}  # digest -> reason, from logins_ended events
        self._reading: dict[str, asyncio.Future[Login | None]] = {}  # digest -> its read
        self._tasks: set[asyncio.Task[None]] = set()
        # what a node does for a sign-in ended elsewhere (the proxy ends its sessions)
        # (access, reason, when): the sessions started until then end
        self.on_ended: list[Callable[[WebAccess, str, datetime], Awaitable[None]]] = []

    # --- hand-off codes ----------------------------------------------------------------
    async def new_code(
        self, access: WebAccess, state_hash: str, next_path: str, ttl: timedelta
    ) -> str:
        now = self.clock()
        code = secrets.token_urlsafe(32)
        async with self.maker() as db, db.begin():
            await db.execute(codes.delete().where(codes.c.expires_at <= now))
            await db.execute(
                codes.insert().values(
                    code_hash=digest(code),
                    **_columns(access),
                    state_hash=state_hash,
                    next_path=next_path,
                    expires_at=now + ttl,
                )
            )
        return code

    async def take_code(self, code: str) -> Code | None:
        """The code's hand-off, removed: it serves once, on whichever node."""
        wanted = digest(code)
        async with self.maker() as db, db.begin():
            row = (await db.execute(sa.select(codes).where(codes.c.code_hash == wanted))).first()
            if row is None or not secrets.compare_digest(str(row.code_hash), wanted):
                return None
            gone = await db.execute(codes.delete().where(codes.c.code_hash == wanted))
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                return None  # redeemed meanwhile on another node
        return Code(_access(row), row.state_hash, row.next_path, utc(row.expires_at))

    # --- target cookies ----------------------------------------------------------------
    async def new_login(self, access: WebAccess, until: datetime) -> str:
        now = self.clock()
        value = secrets.token_urlsafe(32)
        async with self.maker() as db, db.begin():
            await db.execute(logins.delete().where(logins.c.expires_at <= now))
            await db.execute(
                logins.insert().values(
                    digest=digest(value),
                    **_columns(access),
                    expires_at=until,
                    ended=None,
                    created_at=now,
                )
            )
        self._remember(digest(value), Login(access, None, until), now)
        return value

    def cached(self, value: str, target: str) -> Login | None:
        """From memory only (the fast path cannot wait): a sign-in read at most ``CACHED``
        ago, valid for ``target`` and within its grant."""
        now = self.clock()
        found = self._cache.get(digest(value))
        if found is None or now - found[1] > CACHED:
            return None
        login = found[0]
        return login if login.access.target == target and login.valid_at(now) else None

    async def login(self, value: str, target: str) -> Login | None:
        """The sign-in ``value`` stands for on ``target``, from memory or the database;
        raises when the database cannot say."""
        login = self.cached(value, target)
        if login is not None:
            return login
        wanted = digest(value)
        reading = self._reading.get(wanted)
        if reading is None:
            reading = asyncio.ensure_future(self._read(wanted))
            self._reading[wanted] = reading
            reading.add_done_callback(lambda done: self._read_done(wanted, done))
        login = await asyncio.shield(reading)
        if login is None:
            return None
        return login if login.access.target == target and login.valid_at(self.clock()) else None

    async def _read(self, wanted: str) -> Login | None:
        async with self.maker() as db:
            conn = await db.connection(execution_options=READ_ONLY)
            row = (await conn.execute(sa.select(logins).where(logins.c.digest == wanted))).first()
        if row is None or not secrets.compare_digest(str(row.digest), wanted):
            return None
        login = Login(_access(row), row.ended, utc(row.expires_at))
        self._remember(wanted, login, self.clock())
        return login

    def _read_done(self, wanted: str, done: asyncio.Future[Login | None]) -> None:
        self._reading.pop(wanted, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have left meanwhile

    def _remember(self, key: str, login: Login, now: datetime) -> None:
        if login.ended is None and key in self._ended:
            login.ended = self._ended[key]  # read before its end was announced
        if len(self._cache) >= MAX_CACHED:
            for old in [k for k, (_, at) in self._cache.items() if now - at > CACHED]:
                del self._cache[old]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = (login, now)

    def _mark(self, reason: str, digests: Sequence[str]) -> None:
        """Each of ``digests`` shows ``reason``, cached or read later."""
        for key in digests:
            if len(self._ended) >= _ENDED:
                del self._ended[next(iter(self._ended))]
            self._ended[key] = reason
            found = self._cache.get(key)
            if found is not None and found[0].ended is None:
                found[0].ended = reason

    # --- ending ------------------------------------------------------------------------
    def ended_here(self, access: WebAccess, reason: str) -> None:
        """A session of this node for ``access`` was terminated: its sign-ins end here at
        once and, through the database and the cluster event, on every node. Only the
        sign-ins made until now: the event reaches the nodes (this one too) later, and a
        person who signs in again meanwhile (after a lock is lifted, say) keeps that sign-in
        and its session."""
        for login, _ in self._cache.values():
            if login.access.key == access.key and login.ended is None:
                login.ended = reason
        at = self.clock()
        task = asyncio.ensure_future(self._announce(access, reason, at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, access: WebAccess, reason: str, at: datetime) -> None:
        """Mark the rows made until ``at`` ended and publish which; nothing when none was
        still live (so the nodes that end their own sessions on the event do not announce
        it again)."""
        reason = reason[:500]
        mine = sa.and_(
            logins.c.user == access.user,
            logins.c.target == access.target,
            logins.c.account == access.account,
            logins.c.grant_id == access.grant_id,
            logins.c.ended.is_(None),
            sa.or_(logins.c.created_at.is_(None), logins.c.created_at <= at),
        )
        try:
            async with self.maker() as db, db.begin():
                found = list(
                    (await db.execute(sa.select(logins.c.digest).where(mine).limit(100))).scalars()
                )
                if not found:
                    return
                await db.execute(
                    logins.update().where(logins.c.digest.in_(found)).values(ended=reason)
                )
                payload = {
                    "user": access.user,
                    "target": access.target,
                    "account": access.account,
                    "grant": access.grant_id,
                    "reason": reason,
                    "logins": found,
                    "at": utc(at).isoformat(),
                }
                await publish(db, self.node, EventKind.LOGINS_ENDED, payload, self.clock())
        except Exception:
            log.exception("web sign-ins of %s to %s could not be ended", access.user, access.target)

    async def on_event(self, event: ClusterEvent) -> None:
        if event.kind != EventKind.LOGINS_ENDED:
            return
        p = event.payload
        access = WebAccess(
            str(p.get("user")),
            str(p.get("target")),
            str(p.get("account")),
            str(p.get("grant")),
            self.clock(),
        )
        reason = str(p.get("reason", "terminated"))
        found = p.get("logins")
        self._mark(reason, [str(d) for d in found] if isinstance(found, list) else [])
        try:
            at = utc(datetime.fromisoformat(str(p["at"])))
        except (KeyError, ValueError):  # an older node's event: it ended what it found
            at = event.at
        for callback in self.on_ended:
            try:
                await callback(access, reason, at)
            except Exception:
                log.exception("ending sessions for an ended web sign-in failed")

    async def aclose(self) -> None:
        """Let announcements in flight finish (bounded by the database's own timeouts)."""
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
