"""The policy service's access requests: creation, approval, denial, cancellation, expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from policy import requests as machine
from policy import store
from policy import tables as t
from policy.durations import format_duration
from policy.errors import (
    AccessDenied,
    Conflict,
    InvalidTransition,
    NotFound,
    Refused,
)
from policy.models import (
    ADMIN,
    AUDITOR,
    AccessRequest,
    RequestState,
)
from policy.rules import MAX_TEXT, check_request, match_rule, may_approve
from policy.service.base import REQUEST_TTL, SYSTEM_ACTOR, _new_id
from policy.service.grants import GrantsMixin


class RequestsMixin(GrantsMixin):
    # --- requests --------------------------------------------------------------
    async def create_request(
        self,
        actor: str,
        target: str,
        *,
        account: str | None = None,
        duration: timedelta | None = None,
        reason: str = "",
        ticket: str = "",
    ) -> AccessRequest:
        """``actor`` asks for access for themself. Zero-approval and break-glass rules approve
        at once and create the grant (``grant_id`` set)."""
        now = self.now()
        person = await self.get_user(actor) if actor != SYSTEM_ACTOR else None
        if person is None or person.disabled:
            raise AccessDenied("only an enabled user can request access")
        tgt = await self.get_target(target)
        account = account or tgt.default_account
        if not account or (tgt.accounts and account not in tgt.accounts):
            raise Refused(
                f"target {tgt.name} has no account {account or '(default)'}; "
                f"accounts: {', '.join(tgt.accounts) or 'none'}"
            )
        rule = match_rule(self.rules, person.roles, tgt, account)
        if rule is None:
            raise AccessDenied(
                f"no rule lets {actor} request {account}@{tgt.name}; an admin adds one: a "
                "[[rules]] entry in the configuration naming one of the user's roles"
            )
        terms = check_request(rule, tgt.name, duration, reason, ticket, now)
        duration, reason, ticket = terms.duration, terms.reason, terms.ticket
        summary = ""
        if ticket and self.tickets is not None:
            verdict = await self.tickets.check(ticket, user=actor, target=tgt.name, account=account)
            summary = " ".join(verdict.summary.split())[:MAX_TEXT]
            # Break-glass is for when things are broken, the ticket system perhaps too: only
            # its explicit "no" stops it, and approvers see that the ticket was not checked.
            if not verdict.valid and (verdict.answered or not rule.break_glass):
                raise AccessDenied(f"ticket {ticket} refused: {summary or 'not valid'}")
        request = AccessRequest(
            id=_new_id("rq"),
            user=actor,
            target=tgt.name,
            account=account,
            duration=duration,
            reason=reason,
            ticket=ticket,
            rule=rule.name,
            state=RequestState.PENDING,
            created_at=now,
            expires_at=now + REQUEST_TTL,
            approvals=(),
            grant_id=None,
            extends_grant=None,
            break_glass=rule.break_glass,
            version=1,
            ticket_summary=summary,
        )

        async def write(db: AsyncSession) -> AccessRequest:
            pending = await store.list_requests(
                db,
                [
                    t.requests.c.user == actor,
                    t.requests.c.target == tgt.name,
                    t.requests.c.account == account,
                    t.requests.c.state == "pending",
                    t.requests.c.extends_grant.is_(None),
                    t.requests.c.expires_at > now,
                ],
            )
            if pending:
                raise Conflict(
                    f"you already have pending request {pending[0].id} for {account}@{tgt.name}"
                )
            await self._audit(
                db,
                actor,
                "request.create",
                request.id,
                target=tgt.name,
                account=account,
                duration=format_duration(duration),
                reason=reason,
                ticket=ticket,
                ticket_summary=summary,
                rule=rule.name,
            )
            await store.insert_request(db, request)
            if rule.approvals == 0 or rule.break_glass:
                return await self._grant(
                    db, request, replace(request, state=RequestState.APPROVED), rule, now
                )
            return request

        return await self._write(write)

    async def _decide(
        self, actor: str, request_id: str, action: str, comment: str
    ) -> AccessRequest:
        async def write(db: AsyncSession) -> AccessRequest:
            now = self.now()
            roles = await self._roles(db, actor)
            request = await store.load_request(db, request_id)
            if request is None:
                raise NotFound(f"no request {request_id}")
            rule = self.rule(request.rule)
            if rule is None:
                raise InvalidTransition(
                    f"the rule {request.rule} of request {request_id} no longer exists"
                )
            if actor != request.user and not may_approve(rule, roles) and AUDITOR not in roles:
                raise NotFound(f"no request {request_id}")
            if action == "approve":
                new = machine.approve(request, rule, actor, roles, comment, now)
            else:
                new = machine.deny(request, rule, actor, roles, comment, now)
            await self._audit(
                db,
                actor,
                f"request.{action}",
                request.id,
                comment=" ".join(comment.split()),
                state=new.state.value,
            )
            if new.state is RequestState.APPROVED:
                return await self._grant(db, request, new, rule, now)
            return await store.swap_request(db, request, new)

        return await self._write(write)

    async def approve(self, actor: str, request_id: str, comment: str = "") -> AccessRequest:
        """One approval from a distinct approver holding an approver role of the rule (admins
        always qualify); self-approval raises AccessDenied. With enough approvals the request
        becomes approved and the grant is created (or extended)."""
        return await self._decide(actor, request_id, "approve", comment)

    async def deny(self, actor: str, request_id: str, comment: str) -> AccessRequest:
        return await self._decide(actor, request_id, "deny", comment)

    async def cancel(self, actor: str, request_id: str) -> AccessRequest:
        """The requester (or an admin) withdraws a pending request."""

        async def write(db: AsyncSession) -> AccessRequest:
            roles = await self._roles(db, actor)
            request = await store.load_request(db, request_id)
            if request is None or (request.user != actor and ADMIN not in roles):
                raise NotFound(f"no request {request_id}")
            new = machine.cancel(request, actor, ADMIN in roles, self.now())
            await self._audit(db, actor, "request.cancel", request.id)
            return await store.swap_request(db, request, new)

        return await self._write(write)

    def _visible_request(self, request: AccessRequest, viewer: str, roles: frozenset[str]) -> bool:
        if request.user == viewer or ADMIN in roles or AUDITOR in roles:
            return True
        rule = self.rule(request.rule)
        return rule is not None and may_approve(rule, roles)

    async def get_request(self, viewer: str, request_id: str) -> AccessRequest:
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            request = await store.load_request(db, request_id)
        if request is None or not self._visible_request(request, viewer, roles):
            raise NotFound(f"no request {request_id}")
        return machine.expire(request, self.now())

    async def list_requests(
        self, viewer: str, *, pending_only: bool = False, mine_only: bool = False
    ) -> list[AccessRequest]:
        """Requesters see their own; approvers also requests they could approve."""
        now = self.now()
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            where = [t.requests.c.user == viewer] if mine_only else []
            if pending_only:
                where += [t.requests.c.state == "pending", t.requests.c.expires_at > now]
            rows = await store.list_requests(db, where)
        return [machine.expire(r, now) for r in rows if self._visible_request(r, viewer, roles)]

    async def expire_requests(self) -> int:
        """Mark pending requests past their expiry as expired; returns how many."""
        now = self.now()

        async def write(db: AsyncSession) -> int:
            stale = await store.list_requests(
                db, [t.requests.c.state == "pending", t.requests.c.expires_at <= now]
            )
            for request in stale:
                await self._audit(db, SYSTEM_ACTOR, "request.expire", request.id)
                await store.swap_request(db, request, machine.expire(request, now))
            return len(stale)

        return await self._write(write)
