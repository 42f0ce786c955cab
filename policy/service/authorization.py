"""The policy service's the session check every edge makes."""

from __future__ import annotations

from policy import store
from policy import tables as t
from policy.models import (
    ChannelKind,
)
from policy.rules import SessionFacts, evaluate_session
from policy.service.base import ServiceBase, SessionAuthorization


class AuthorizationMixin(ServiceBase):
    # --- sessions --------------------------------------------------------------
    async def authorize_session(
        self, user: str, target: str, account: str | None, channel: ChannelKind | None
    ) -> SessionAuthorization:
        """The check every edge makes when a session opens and for every new channel: user
        exists and is enabled, user not locked, target not locked, an active grant covers
        (user, target, account, now), the grant's rule allows ``channel`` and the hour. Never
        raises for a refusal: the Decision says why. ``account`` None = the default account."""
        now = self.now()
        async with self.maker() as db:
            person = await store.load_user(db, user)
            tgt = await store.load_target(db, target)
            locks = await store.open_locks(db, [user, target])
            grants = await store.list_grants(
                db, [t.grants.c.user == user, t.grants.c.target == target]
            )
        facts = SessionFacts(
            user_name=user,
            user=person,
            target_name=target,
            target=tgt,
            account=account,
            locks=locks,
            grants=grants,
            rules=self.rules,
            channel=channel,
            gateway_hint=self.gateway_hint,
        )
        decision, grant = evaluate_session(facts, now)
        resolved = account or (tgt.default_account if tgt else None)
        rule = self.rule(grant.rule) if grant is not None else None
        return SessionAuthorization(decision, person, tgt, resolved, grant, rule)
