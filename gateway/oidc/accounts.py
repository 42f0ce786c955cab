"""From verified claims to a Lockgate user, and back out when the provider withdraws them.

``judge`` is pure (the dry run ``lockgate auth test-mapping`` prints it): the user name the
claims name, the roles they grant, or why they sign nobody in. ``Accounts.admit`` applies it
at sign-in: the link (provider, subject) -> user is made on the first sign-in (a new user
only with ``auto_create``; an existing local user only with ``link_existing``), a user the
provider had deprovisioned is enabled again, and the managed roles are set from the claims.
``Accounts.deprovision`` and ``Accounts.reconcile`` take access away with an audited reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.oidc.identities import Identities, Identity
from gateway.oidc.settings import OidcProvider, apply_roles
from policy.errors import NotFound
from policy.models import User
from policy.service import PolicyService

_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")


class SignInRefused(Exception):
    """``reason`` is a stable code for the audit log; the message is for the person."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Judgement:
    user: str | None
    roles: frozenset[str]  # the managed roles the claims grant
    managed: frozenset[str]
    groups: tuple[str, ...]
    refusal: SignInRefused | None


def judge(provider: OidcProvider, claims: Mapping[str, Any]) -> Judgement:
    """Who ``claims`` sign in as and with which managed roles; pure."""
    roles = provider.roles_for(claims)
    groups = tuple(provider.groups(claims))
    refusal: SignInRefused | None = None
    raw = claims.get(provider.username_claim)
    name = raw.strip().lower() if isinstance(raw, str) else None
    if provider.require_email_verified and claims.get("email_verified") is not True:
        refusal = SignInRefused(
            "email_unverified", "the identity provider has not verified the email"
        )
    elif not name or not _USER.match(name) or name == "lockgate":
        refusal = SignInRefused(
            "username",
            f"the claim {provider.username_claim} is not a usable user name "
            "(a-z, 0-9, '.', '_', '-')",
        )
        name = None
    return Judgement(name, roles, provider.managed_roles, groups, refusal)


class Accounts:
    def __init__(self, policy: PolicyService, identities: Identities) -> None:
        self.policy = policy
        self.identities = identities

    async def admit(self, provider: OidcProvider, claims: Mapping[str, Any], now: datetime) -> User:
        """The user ``claims`` sign in, with roles re-applied; SignInRefused otherwise."""
        verdict = judge(provider, claims)
        if verdict.refusal is not None:
            raise verdict.refusal
        subject = str(claims["sub"])
        link = await self.identities.by_subject(provider.name, subject)
        name = link.user if link is not None else verdict.user
        assert name is not None
        try:
            current = await self.policy.get_user(name)
        except NotFound:
            current = None
        if link is None:
            if current is None and not provider.auto_create:
                raise SignInRefused("no_user", f"there is no Lockgate user {name}; ask an admin")
            if current is not None and not provider.link_existing:
                raise SignInRefused(
                    "not_linked", f"the user {name} exists and is not linked to {provider.name}"
                )
            if current is not None and await self._linked_elsewhere(name, provider.name):
                raise SignInRefused("not_linked", f"the user {name} signs in elsewhere")
        if current is not None and current.disabled:
            if link is None or link.deprovisioned_at is None:
                raise SignInRefused("disabled", f"the user {name} is disabled")
            await self.policy.set_deprovisioned(
                name, False, via=provider.name, reason="signed in at the identity provider again"
            )
        roles = apply_roles(current.roles if current else (), verdict.managed, verdict.roles)
        change = await self.policy.sync_roles(
            name, roles, via=provider.name, create=current is None
        )
        if change.removed:
            await self.policy.withdraw_access(
                name,
                f"identity provider {provider.name} no longer grants "
                f"{', '.join(sorted(change.removed))}",
                everything=False,
            )
        await self.identities.signed_in(provider.name, subject, name, now)
        return change.user

    async def _linked_elsewhere(self, name: str, provider: str) -> bool:
        return any(i.provider != provider for i in await self.identities.of_user(name))

    async def reconcile(
        self, provider: OidcProvider, identity: Identity, claims: Mapping[str, Any], now: datetime
    ) -> frozenset[str]:
        """A periodic check's answer: the managed roles as the claims now grant them; access
        the removed roles carried is withdrawn. Returns the roles removed."""
        verdict = judge(provider, claims)
        if verdict.refusal is not None and verdict.refusal.reason == "email_unverified":
            await self.deprovision(provider, identity, "the email is no longer verified", now)
            return frozenset()
        user = await self.policy.get_user(identity.user)
        roles = apply_roles(user.roles, verdict.managed, verdict.roles)
        change = await self.policy.sync_roles(identity.user, roles, via=provider.name, create=False)
        if change.removed:
            await self.policy.withdraw_access(
                identity.user,
                f"identity provider {provider.name} no longer grants "
                f"{', '.join(sorted(change.removed))}",
                everything=False,
            )
        await self.identities.checked(provider.name, identity.subject, now)
        return change.removed

    async def deprovision(
        self, provider: OidcProvider, identity: Identity, why: str, now: datetime
    ) -> None:
        """The provider no longer recognises the person: the user is disabled (API tokens and
        browser sessions stop working), every grant is revoked (live sessions end) and every
        pending request cancelled, each audited with the reason."""
        reason = f"identity provider {provider.name}: {why}"
        await self.identities.deprovisioned(provider.name, identity.subject, now, reason)
        try:
            user = await self.policy.get_user(identity.user)
        except NotFound:
            return
        if not user.disabled:
            await self.policy.set_deprovisioned(
                identity.user, True, via=provider.name, reason=reason
            )
        await self.policy.withdraw_access(identity.user, reason, everything=True)
