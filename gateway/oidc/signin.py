"""Signing in through an OpenID provider: the authorization code flow with PKCE, ``state``
and ``nonce`` (OpenID Connect Core 3.1, RFC 7636, RFC 9700's advice).

``start`` makes a flow: a random ``state`` (the key), bound to the browser that started it by
a random value whose SHA-256 the flow keeps (the edge puts it in a cookie) and from which the
``nonce`` and the PKCE verifier are derived; the flow is kept in the database for ten
minutes (``gateway.oidc.flows``), so the callback may reach any node. ``finish`` takes the
callback: the flow is removed whatever happens (one ``state``, one try); the browser must be
the one that
started it (login CSRF: a code and state planted in another browser are refused); the code
is exchanged with the verifier; the ID token is verified (``gateway.oidc.idtoken``); userinfo
must name the same subject; then ``gateway.oidc.accounts`` admits the user. Every refusal is
audited as ``auth.failure`` with a stable reason and never with a token.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.audit import AuditLog
from gateway.oidc.accounts import Accounts, SignInRefused
from gateway.oidc.client import ProviderClient, ProviderError, ProviderRefused, Tokens
from gateway.oidc.flows import FLOW_TTL, Flow, Flows, derived
from gateway.oidc.idtoken import Expected, TokenRefused, header, verify
from gateway.oidc.settings import OidcProvider
from gateway.signins.stored import digest
from policy.errors import PolicyError
from policy.models import Clock, User
from vault.errors import VaultError
from vault.secret import Secret
from vault.service import VaultService

# The client secret is the credential (SECRET_TARGET, provider name).
SECRET_TARGET = "lockgate:oidc"  # noqa: S105  (a credential's target name)
SECRET_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class Started:
    url: str  # where to send the browser
    binding: str  # the cookie value that binds the flow to this browser


@dataclass(frozen=True)
class SignedIn:
    user: User
    provider: str
    next_url: str
    claims: Mapping[str, Any]

    @property
    def methods(self) -> frozenset[str]:
        """How the person authenticated at the provider: its ``amr`` values and ``acr``."""
        amr = self.claims.get("amr")
        found = {m for m in amr if isinstance(m, str)} if isinstance(amr, list) else set()
        acr = self.claims.get("acr")
        if isinstance(acr, str) and acr:
            found.add(acr)
        return frozenset(found)


class Clients:
    """One ``ProviderClient`` per provider, its client secret read from the vault (audited
    checkout) and kept for a few minutes, so a rotated secret is picked up."""

    def __init__(
        self, providers: Sequence[OidcProvider], vault: VaultService, clock: Clock
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.vault = vault
        self.clock = clock
        self._clients: dict[str, tuple[ProviderClient, datetime]] = {}

    async def get(self, name: str) -> ProviderClient:
        provider = self.providers[name]
        cached = self._clients.get(name)
        if cached is not None and self.clock() - cached[1] < SECRET_TTL:
            return cached[0]
        secret: Secret | None
        try:
            out = await self.vault.checkout(SECRET_TARGET, name, "oidc", actor="lockgate")
            secret = out.secret
        except VaultError:
            secret = None  # a public client (PKCE only)
        client = ProviderClient(provider, secret)
        if cached is not None:  # keep what discovery learnt
            client._meta, client._keys = cached[0]._meta, cached[0]._keys
        self._clients[name] = (client, self.clock())
        return client


class OidcSignIn:
    def __init__(
        self,
        providers: Sequence[OidcProvider],
        clients: Clients,
        accounts: Accounts,
        audit: AuditLog,
        clock: Clock,
        flows: Flows,
    ) -> None:
        self.providers = {p.name: p for p in providers}
        self.clients = clients
        self.accounts = accounts
        self.audit = audit
        self.clock = clock
        self.flows = flows

    def provider(self, name: str) -> OidcProvider | None:
        return self.providers.get(name)

    async def start(self, name: str, redirect_uri: str, next_url: str) -> Started:
        """A new flow for provider ``name``; ProviderError when it cannot be reached."""
        provider = self.providers[name]
        client = await self.clients.get(provider.name)
        now = self.clock()
        state, binding = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        nonce, _, challenge = derived(binding)
        url = await client.authorization_url(redirect_uri, state, nonce, challenge)
        flow = Flow(provider.name, redirect_uri, next_url, digest(binding), now)
        await self.flows.put(state, flow)
        return Started(url, binding)

    async def finish(
        self, name: str, query: Mapping[str, str], binding: str, address: str
    ) -> SignedIn:
        """The callback: SignInRefused (audited) unless every check passes."""
        try:
            return await self._finish(name, query, binding)
        except SignInRefused as refused:
            await self.audit.record(
                actor="?",
                action="auth.failure",
                subject="?",
                details={
                    "via": "oidc",
                    "provider": name,
                    "reason": refused.reason,
                    "addr": address,
                },
            )
            raise

    async def _finish(self, name: str, query: Mapping[str, str], binding: str) -> SignedIn:
        flow = await self.flows.take(query.get("state", ""))  # unreachable: it raises
        now = self.clock()
        if flow is None or flow.provider != name or now - flow.created > FLOW_TTL:
            raise SignInRefused("state", "this sign-in was not started here or has expired")
        if not secrets.compare_digest(digest(binding).encode(), flow.binding.encode()):
            raise SignInRefused("state", "this sign-in was started in another browser")
        nonce, verifier, _ = derived(binding)
        if "error" in query:
            error = "".join(c for c in query["error"][:40] if c.isalnum() or c in "_-")
            raise SignInRefused("provider_error", f"the identity provider refused ({error})")
        code = query.get("code", "")
        if not code:
            raise SignInRefused("code", "the identity provider sent no code")
        provider = self.providers[name]
        client = await self.clients.get(name)
        try:
            tokens = await client.exchange_code(code, flow.redirect_uri, verifier)
        except ProviderRefused as exc:
            raise SignInRefused(
                "code", f"the identity provider refused the code ({exc.error})"
            ) from None
        except ProviderError:
            raise SignInRefused("unreachable", "the identity provider cannot be reached") from None
        claims = await self._verified(client, provider, tokens, nonce, now)
        try:
            user = await self.accounts.admit(provider, claims, now)
            if tokens.refresh_token:
                await self.clients.vault.keep_refresh_token(
                    user.name, name, Secret(tokens.refresh_token)
                )
        except (PolicyError, VaultError) as exc:  # fail closed, with one line
            raise SignInRefused("policy", f"the sign-in cannot be completed ({exc})") from None
        await self.audit.record(
            actor=user.name,
            action="auth.success",
            subject=user.name,
            details={"via": "oidc", "provider": name, "roles": sorted(user.roles)},
        )
        return SignedIn(user, name, flow.next_url, claims)

    async def _verified(
        self,
        client: ProviderClient,
        provider: OidcProvider,
        tokens: Tokens,
        nonce: str,
        now: datetime,
    ) -> dict[str, Any]:
        if tokens.id_token is None:
            raise SignInRefused("id_token", "the identity provider sent no ID token")
        expected = Expected(provider.issuer, provider.client_id, nonce, now, provider.clock_skew)
        try:
            _, kid = header(tokens.id_token)
            keys = await client.keys(kid)
            claims = verify(tokens.id_token, keys, expected)
        except TokenRefused as refused:
            raise SignInRefused(refused.reason, str(refused)) from None
        except ProviderError:
            raise SignInRefused("unreachable", "the identity provider cannot be reached") from None
        if tokens.access_token is not None:
            try:
                info = await client.userinfo(tokens.access_token)
            except ProviderError:
                raise SignInRefused("userinfo", "the identity provider's userinfo failed") from None
            if info is not None:
                if info.get("sub") != claims["sub"]:
                    raise SignInRefused("userinfo", "userinfo names another subject")
                claims = {**claims, **info}
        return claims
