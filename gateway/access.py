"""Who may sign in with what, and whether a session or channel may go on — for SSH and web.

The protocol edges only collect what the person presented and ask here; every answer comes
from the policy service and the vault. The one table of which login factors suffice:

| where            | factors that suffice                                              |
|------------------|-------------------------------------------------------------------|
| SSH, no MFA rule | a registered key; or password + TOTP; or password alone when the  |
|                  | user has no TOTP enrolled                                         |
| SSH, MFA rule    | password + a fresh TOTP code, even after a key (`mfa_per_session`)|
|                  | or an IdP sign-in whose `amr`/`acr` the rule's `idp_mfa` accepts  |
| web sign-in      | password + TOTP, always: a browser session lasts hours and can    |
|                  | approve access, so a user without TOTP uses API tokens instead    |
| either, IdP      | a sign-in at the user's OpenID provider (the browser's, or the    |
|                  | SSH device login's); not enough under an MFA rule                 |

With ``auth.password_login_roles`` set, a password signs in only a user holding one of those
roles (everyone else signs in through the identity provider or with a key).
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.oidc.identities import Identities
from gateway.sessions.registry import SessionHandle
from policy.errors import PolicyError
from policy.forwarding import ForwardDecision, decide_forward, parse_entry
from policy.httppath import normalize_http_path
from policy.models import ChannelKind, Rule, User
from policy.rules import http_request_allowed, match_rule
from policy.service import SYSTEM_ACTOR, PolicyService, SessionAuthorization
from vault.errors import VaultError
from vault.service import VaultService

if TYPE_CHECKING:
    import asyncssh


class Factor(enum.StrEnum):
    KEY = "key"
    PASSWORD = "password"  # noqa: S105  (a factor's name)
    TOTP = "totp"
    IDP = "idp"  # a sign-in at the user's OpenID provider
    IDP_MFA = "idp_mfa"  # ... which reported a second factor the rule accepts (idp_mfa)


class Where(enum.StrEnum):
    SSH = "ssh"
    WEB = "web"


def factors_suffice(
    user: User, presented: Collection[Factor], where: Where, *, mfa_per_session: bool = False
) -> bool:
    """Whether the verified ``presented`` factors sign ``user`` in (the table above).
    A disabled user never signs in."""
    if user.disabled:
        return False
    has = set(presented)
    if Factor.IDP in has and not mfa_per_session:
        return True
    if Factor.IDP_MFA in has and Factor.IDP in has:
        return True
    password_and_code = {Factor.PASSWORD, Factor.TOTP} <= has
    if where is Where.WEB or mfa_per_session:
        return password_and_code
    if Factor.KEY in has or password_and_code:
        return True
    return Factor.PASSWORD in has and not user.totp_enabled


class Access:
    """The access questions the SSH edge, the web sign-in and the kill switch ask."""

    def __init__(
        self,
        policy: PolicyService,
        vault: VaultService,
        identities: Identities,
        password_roles: frozenset[str] = frozenset(),
    ) -> None:
        self.policy = policy
        self.vault = vault
        self.identities = identities
        self.password_roles = password_roles

    def now(self) -> datetime:
        return self.policy.now()

    # --- login factors ---------------------------------------------------------------
    async def key_user(self, user: str, key: asyncssh.SSHKey) -> User | None:
        """The user ``key`` is registered to under that name (the signature is the SSH
        library's to verify)."""
        return await self.policy.user_for_key(user, key.export_public_key().decode())

    async def password_user(self, user: str, password: str) -> User | None:
        """The user, if the password is theirs (argon2id, constant time) and a password
        may sign them in (``auth.password_login_roles``)."""
        found = await self.policy.verify_password(user, password)
        if found is None or (self.password_roles and not found.roles & self.password_roles):
            return None
        return found

    async def idp_user(self, user: str) -> User | None:
        """``user`` if enabled and linked to an identity provider that still recognises them
        (they sign in to SSH with the device login)."""
        links = await self.identities.of_user(user)
        if not any(link.deprovisioned_at is None for link in links):
            return None
        try:
            found = await self.policy.get_user(user)
        except PolicyError:
            return None
        return None if found.disabled else found

    async def totp_ok(self, user: str, code: str) -> bool:
        """A current TOTP code of the user's enrolled seed; an unknown user or a vault
        failure is a wrong code."""
        try:
            return await self.vault.verify_totp(user, code.strip(), self.now())
        except VaultError:
            return False

    async def mfa_per_session(self, user: str, target: str, account: str | None) -> bool:
        """Whether the rule behind the user's grant demands a fresh TOTP for every session."""
        return (await self.session_mfa(user, target, account))[0]

    async def session_mfa(
        self, user: str, target: str, account: str | None
    ) -> tuple[bool, frozenset[str]]:
        """(per-session MFA demanded, the identity provider's amr/acr values the rule accepts
        in place of the TOTP) for the rule behind the user's grant."""
        auth = await self.policy.authorize_session(user, target, account, None)
        rule = auth.rule if auth.decision.allowed else None
        if rule is None or not rule.mfa_per_session:
            return False, frozenset()
        return True, rule.idp_mfa

    # --- sessions and channels -------------------------------------------------------
    async def authorize(
        self,
        user: str,
        target: str,
        account: str | None,
        channel: ChannelKind | None,
        *,
        auto_request: bool = False,
    ) -> SessionAuthorization:
        """The policy decision for a session (``channel`` None) or one channel. With
        ``auto_request``, a zero-approval rule that needs no reason or ticket creates the
        grant on connect (DESIGN §2)."""
        auth = await self.policy.authorize_session(user, target, account, channel)
        if auth.decision.allowed or auth.decision.reason != "no_grant" or not auto_request:
            return auth
        if auth.user is None or auth.target is None or not auth.account:
            return auth
        rule = match_rule(self.policy.rules, auth.user.roles, auth.target, auth.account)
        if rule is None or rule.approvals or rule.require_reason or rule.ticket_pattern:
            return auth
        try:
            await self.policy.create_request(user, target, account=auth.account)
        except PolicyError:
            return auth
        return await self.policy.authorize_session(user, target, account, channel)

    async def authorize_web(
        self, user: str, target: str, account: str | None, *, auto_request: bool = False
    ) -> SessionAuthorization:
        """The decision for a web session: channel kind ``http`` (locks, an active grant whose
        rule allows ``http``, the hour), as ``authorize``."""
        return await self.authorize(user, target, account, "http", auto_request=auto_request)

    async def authorize_forward(
        self, user: str, target: str, account: str | None, host: str, port: int
    ) -> ForwardDecision:
        """A local forward to ``host:port``: channel kind ``port_forward`` allowed by the
        grant's rule, and the destination on the rule's ``forward_to`` allowlist, matched on
        the normalised address (``policy.forwarding``). ``destination`` is what the target
        must be asked to connect to."""
        auth = await self.authorize(user, target, account, "port_forward")
        if not auth.decision.allowed or auth.rule is None:
            return ForwardDecision(False, host, str(auth.decision.message))
        entries = tuple(parse_entry(e) for e in auth.rule.forward_to)
        return decide_forward(entries, host, port)

    async def recheck(self, session: SessionHandle) -> tuple[bool, str, datetime | None]:
        """Whether a live session may go on: (allowed, the reason shown to the person when
        not, the grant's current end)."""
        auth = await self.policy.authorize_session(
            session.user, session.target, session.account, None
        )
        if auth.decision.allowed and auth.grant is not None:
            return True, "", auth.grant.expires_at
        if auth.decision.reason == "no_grant" and session.grant_id:
            try:
                grant = await self.policy.get_grant(SYSTEM_ACTOR, session.grant_id)
            except PolicyError:
                return False, "grant no longer exists", None
            if grant.revoked_at is not None:
                return False, f"grant revoked by {grant.revoked_by}: {grant.revoke_reason}", None
            return False, "grant expired", None
        return False, str(auth.decision.message), None


def http_request_path(rule: Rule | None, method: str, path: str) -> str | None:
    """The path to send upstream if the grant's rule lets this web request through (its
    ``http_methods`` and ``http_paths``, decided by policy on ``path`` as the browser sent
    it), else None. The path returned is policy's normalised form, the one the rule judged,
    so the path checked is the path served. No rule, no request."""
    if rule is None or not http_request_allowed(rule, method, path):
        return None
    return normalize_http_path(path)
