"""The periodic check: does the identity provider still recognise the people who hold access?

Every ``check_interval`` (per provider, on the node's ``Timer``, so tests drive it with a fake
clock) each linked user with an active grant or a pending request is checked, and every other
linked user once per ``IDLE_FACTOR`` intervals (an approver, or a holder of an API token,
holds no grant but still holds power): the gateway's
refresh token is exchanged (a refusal, e.g. ``invalid_grant`` for a disabled user or a revoked
token, deprovisions them), userinfo is read with the new access token (a refusal or another
subject deprovisions them), and the claims are mapped again (a managed role no longer
granted is removed, with the grants and pending requests it carried). A provider that does
not answer leaves access as it is and is audited as ``oidc.check.unreachable``; a user with no
refresh token to check with loses their live access (it cannot be confirmed).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Sequence
from datetime import datetime

from gateway.audit import AuditLog
from gateway.oidc.accounts import Accounts
from gateway.oidc.client import ProviderClient, ProviderRefused, ProviderUnreachable, Tokens
from gateway.oidc.identities import Identities, Identity
from gateway.oidc.settings import OidcProvider
from gateway.oidc.signin import Clients
from gateway.sessions.killswitch import Timer
from policy.service import PolicyService
from vault.secret import Secret
from vault.service import VaultService

log = logging.getLogger(__name__)
IDLE_FACTOR = 10  # users without live access are checked every 10 intervals
CLOSE_WAIT = 15.0  # seconds a stopping node waits for a check pass under way


class ProviderChecker:
    def __init__(
        self,
        providers: Sequence[OidcProvider],
        clients: Clients,
        accounts: Accounts,
        identities: Identities,
        policy: PolicyService,
        vault: VaultService,
        audit: AuditLog,
        timer: Timer,
    ) -> None:
        self.providers = tuple(providers)
        self.clients = clients
        self.accounts = accounts
        self.identities = identities
        self.policy = policy
        self.vault = vault
        self.audit = audit
        self.timer = timer
        self._passes: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until cancelled: one loop per provider. A pass under way is not cancelled with
        the loop (a cancel in the middle of a database call can leave SQLite locked): it
        runs to its end, and ``aclose`` waits for it."""
        await asyncio.gather(*(self._loop(p) for p in self.providers))

    async def _loop(self, provider: OidcProvider) -> None:
        while True:
            await self.timer.sleep_until(self.timer.now() + provider.check_interval)
            task = asyncio.ensure_future(self._pass(provider))
            self._passes.add(task)
            task.add_done_callback(self._passes.discard)
            await asyncio.shield(task)

    async def _pass(self, provider: OidcProvider) -> None:
        try:
            await self.check_provider(provider)
        except Exception:
            log.exception("checking the users of identity provider %s failed", provider.name)

    async def aclose(self) -> None:
        """Wait (a bounded time) for the passes under way once the loops are cancelled."""
        if self._passes:
            await asyncio.wait(set(self._passes), timeout=CLOSE_WAIT)

    async def check_provider(self, provider: OidcProvider) -> None:
        identities = await self.identities.of_provider(provider.name)
        live = await self.policy.users_with_live_access(i.user for i in identities)
        interval = provider.check_interval
        now = self.timer.now()
        for identity in identities:
            every = interval if identity.user in live else interval * IDLE_FACTOR
            # due half an interval early, so a check that woke a little late still claims
            due = now - every + interval / 2
            if await self.identities.claim(provider.name, identity.subject, now, due):
                await self.check(provider, identity)

    async def check(self, provider: OidcProvider, identity: Identity) -> None:
        now = self.timer.now()
        token = await self.vault.refresh_token(identity.user, provider.name)
        if token is None:
            await self.policy.withdraw_access(
                identity.user,
                f"identity provider {provider.name}: no refresh token to confirm the user with",
                everything=True,
            )
            return
        client = await self.clients.get(provider.name)
        try:
            tokens = await self._refresh(client, identity, provider, token)
            if tokens.access_token is None:
                raise ProviderRefused("no_access_token", 200)
            claims = await client.userinfo(tokens.access_token)
        except ProviderRefused as exc:
            await self._deprovision(provider, identity, f"refused the refresh ({exc.error})", now)
            return
        except ProviderUnreachable:
            await self.audit.record_or_owe(
                actor="lockgate",
                action="oidc.check.unreachable",
                subject=identity.user,
                details={"provider": provider.name},
            )
            return
        if tokens.refresh_token:
            await self.vault.keep_refresh_token(
                identity.user, provider.name, Secret(tokens.refresh_token)
            )
        if claims is None:
            await self.identities.checked(provider.name, identity.subject, now)
            return
        if claims.get("sub") != identity.subject:
            await self._deprovision(provider, identity, "userinfo names another subject", now)
            return
        await self.accounts.reconcile(provider, identity, claims, now)

    async def _refresh(
        self, client: ProviderClient, identity: Identity, provider: OidcProvider, token: Secret
    ) -> Tokens:
        """The refresh; refused, it is tried once more with the vault's token when that one
        changed meanwhile (a sign-in, or another node's check, rotated it)."""
        try:
            return await client.refresh(token.reveal_text())
        except ProviderRefused:
            again = await self.vault.refresh_token(identity.user, provider.name)
            if again is None or hmac.compare_digest(again.reveal(), token.reveal()):
                raise
            return await client.refresh(again.reveal_text())

    async def _deprovision(
        self, provider: OidcProvider, identity: Identity, why: str, now: datetime
    ) -> None:
        # the token first: once access is taken away nothing of the sign-in is left to use
        await self.vault.forget_refresh_token(identity.user, provider.name)
        await self.accounts.deprovision(provider, identity, why, now)
