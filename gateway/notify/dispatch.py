"""The notification dispatcher: reads committed audit events after its durable cursor, turns
those that matter into notices, and enqueues each notice for every channel that wants it in
the same transaction that moves the cursor (so a notice is enqueued exactly once, and none
is skipped across a restart). It also scans for grants about to expire.

A new dispatcher cursor starts at the log's current end: configuring a channel does not
replay history into it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import SessionMaker
from gateway.db.tables import audit_events, prov_items, sessions
from gateway.notify import notice as n
from gateway.notify.outbox import enqueue
from gateway.notify.settings import Channel
from gateway.stream.cursor import LEASE, CursorStore
from gateway.stream.record import head_seq
from policy import store
from policy import tables as pt
from policy.models import Clock, Rule

log = logging.getLogger("lockgate.notify")
CURSOR = "notify"
POLL = 0.2
BATCH = 200
WARN_BEFORE = timedelta(minutes=10)  # grant.expiring this long before a grant ends
SCAN_EVERY = 30.0  # seconds between scans for expiring grants

_REQUEST_EVENTS = {
    "request.create": "request.created",
    "request.extend": "request.created",
    "request.approve": "request.approved",
    "request.deny": "request.denied",
    "request.cancel": "request.cancelled",
    "request.expire": "request.expired",
}


class Dispatcher:
    def __init__(
        self,
        maker: SessionMaker,
        cursors: CursorStore,
        channels: Sequence[Channel],
        rules: Sequence[Rule],
        clock: Clock,
        public_url: str,
        *,
        poll: float = POLL,
    ) -> None:
        self.maker = maker
        self.cursors = cursors
        self.channels = list(channels)
        self.rules = {r.name: r for r in rules}
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.poll = poll
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.cursors.release(CURSOR)

    async def _run(self) -> None:
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notification dispatcher")
            await asyncio.sleep(1.0)

    async def _loop(self) -> None:
        position = await self.cursors.claim(CURSOR, start=await head_seq(self.maker))
        while position is None:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            position = await self.cursors.claim(CURSOR, start=await head_seq(self.maker))
        last_scan = -SCAN_EVERY
        loop = asyncio.get_running_loop()
        while True:
            moved = await self.step(position)
            if moved is None:
                return  # lost the lease: claim again
            position = moved
            if loop.time() - last_scan >= SCAN_EVERY:
                await self.scan_expiring()
                last_scan = loop.time()
                if await self.cursors.claim(CURSOR) is None:
                    return
            await asyncio.sleep(self.poll)

    async def step(self, position: int) -> int | None:
        """Dispatch the events after ``position``; the new position (None: lease lost)."""
        async with self.maker() as db, db.begin():
            rows = (
                await db.execute(
                    sa.select(audit_events)
                    .where(audit_events.c.seq > position)
                    .order_by(audit_events.c.seq)
                    .limit(BATCH)
                )
            ).all()
            if not rows:
                return position
            for row in rows:
                for item in await self._notices(db, row):
                    await self._enqueue(db, item)
            if not await self.cursors.advance_in(db, CURSOR, int(rows[-1].seq)):
                return None
            return int(rows[-1].seq)

    async def scan_expiring(self) -> None:
        """A ``grant.expiring`` notice for each active grant ending within WARN_BEFORE."""
        now = self.clock()
        async with self.maker() as db, db.begin():
            grants = await store.list_grants(
                db,
                [
                    pt.grants.c.revoked_at.is_(None),
                    pt.grants.c.expires_at > now,
                    pt.grants.c.expires_at <= now + WARN_BEFORE,
                ],
            )
            for grant in grants:
                request = await store.load_request(db, grant.request_id)
                data: dict[str, Any] = {"grant": n.grant_facts(grant)}
                if request is not None:
                    data = n.request_facts(request, self.rules.get(grant.rule), grant)
                data["ends_in_seconds"] = int((grant.expires_at - now).total_seconds())
                await self._enqueue(
                    db,
                    n.Notice(
                        "grant.expiring",
                        f"grant.expiring:{grant.id}:{grant.expires_at.isoformat()}",
                        grant.request_id,
                        grant.rule,
                        now,
                        "lockgate",
                        data,
                        grant.user,
                    ),
                )

    async def _enqueue(self, db: AsyncSession, item: n.Notice) -> None:
        for channel in self.channels:
            if not channel.wants(item.event, item.rule):
                continue
            payload = {"notice": item.body(self.link(item)), "requester": item.requester}
            if channel.kind == "email":
                payload["recipients"] = await self._recipients(db, channel, item)
            await enqueue(db, channel.name, item.key, item.event, item.thread, payload, item.at)

    def link(self, item: n.Notice) -> str:
        session = item.data.get("session")
        if item.event == "session.killed" and isinstance(session, dict):
            return f"{self.public_url}/recordings/{session['id']}"
        if item.event in ("request.created", "request.approved"):
            return f"{self.public_url}/approvals?request={item.thread}"
        if item.event == "provisioning.cleanup_failed":
            return f"{self.public_url}/provisioned"
        return f"{self.public_url}/access"

    async def _recipients(self, db: AsyncSession, channel: Channel, item: n.Notice) -> list[str]:
        found = list(channel.to)
        template = channel.user_address
        if channel.to_requester and item.requester:
            found.append(template.replace("{user}", item.requester))
        rule = self.rules.get(item.rule)
        asks_approvers = item.event.startswith("request.") or item.event == "breakglass.used"
        if channel.to_approvers and rule is not None and asks_approvers:
            for user in await store.list_users(db):
                if user.disabled or user.name == item.requester:
                    continue
                if user.roles & rule.approver_roles:
                    found.append(template.replace("{user}", user.name))
        return sorted(set(found))

    async def _notices(self, db: AsyncSession, row: Any) -> list[n.Notice]:
        action, subject = str(row.action), str(row.subject)
        details: dict[str, Any] = json.loads(row.details)
        at: datetime = store.utc(row.at)
        key = f"{action}:{subject}:{row.seq}"
        if action in _REQUEST_EVENTS:
            request = await store.load_request(db, subject)
            if request is None:
                return []
            if action == "request.create" and request.break_glass:
                return []  # its grant.create says breakglass.used, louder
            grant = await store.load_grant(db, request.grant_id) if request.grant_id else None
            facts = n.request_facts(request, self.rules.get(request.rule), grant)
            if action in ("request.approve", "request.deny"):
                facts = n.at_decision(facts, str(row.actor), str(details.get("state", "")))
                facts["comment"] = details.get("comment", "")
            event = _REQUEST_EVENTS[action]
            return [
                n.Notice(event, key, request.id, request.rule, at, row.actor, facts, request.user)
            ]
        if action in ("grant.revoke", "grant.create"):
            grant = await store.load_grant(db, subject)
            if grant is None or (action == "grant.create" and not grant.break_glass):
                return []
            request = await store.load_request(db, grant.request_id)
            data = (
                n.request_facts(request, self.rules.get(grant.rule), grant)
                if request is not None
                else {"grant": n.grant_facts(grant)}
            )
            if action == "grant.revoke":
                data["reason"] = details.get("reason", "")
            event = "grant.revoked" if action == "grant.revoke" else "breakglass.used"
            return [
                n.Notice(event, key, grant.request_id, grant.rule, at, row.actor, data, grant.user)
            ]
        if action == "session.end" and n.is_kill(str(details.get("reason", ""))):
            return await self._killed(db, row, key, at, str(details.get("reason", "")))
        if action == "provision.retry" and details.get("state") == "revoking":
            return await self._cleanup_failed(db, row, key, at, details)
        return []

    async def _cleanup_failed(
        self, db: AsyncSession, row: Any, key: str, at: datetime, details: dict[str, Any]
    ) -> list[n.Notice]:
        """A removal from a target failed: said at the first failure of each thing (it is
        retried until the target confirms; the metric and the audit log count every try)."""
        if details.get("attempt") != 1:
            return []
        item = (
            await db.execute(sa.select(prov_items).where(prov_items.c.id == details.get("item")))
        ).first()
        if item is None:
            return []
        data = {
            "provisioning": {
                "id": item.id,
                "kind": item.kind,
                "target": item.target,
                "account": item.account,
                "user": item.user,
                "grant": item.grant_id,
                "error": str(details.get("error", ""))[:500],
                "retry_at": details.get("retry_at"),
            }
        }
        return [n.Notice("provisioning.cleanup_failed", key, item.id, "", at, row.actor, data)]

    async def _killed(
        self, db: AsyncSession, row: Any, key: str, at: datetime, reason: str
    ) -> list[n.Notice]:
        found = (await db.execute(sa.select(sessions).where(sessions.c.id == row.subject))).first()
        if found is None:
            return []
        grant = await store.load_grant(db, found.grant_id) if found.grant_id else None
        data: dict[str, Any] = {
            "session": {
                "id": found.id,
                "kind": found.kind,
                "user": found.user,
                "target": found.target,
                "account": found.account,
                "client": found.client_addr,
                "reason": reason,
            },
            "grant": n.grant_facts(grant),
        }
        rule = grant.rule if grant is not None else ""
        thread = grant.request_id if grant is not None else found.id
        return [n.Notice("session.killed", key, thread, rule, at, row.actor, data, found.user)]
