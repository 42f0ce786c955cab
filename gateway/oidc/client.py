"""The gateway's side of the OpenID Connect wire: discovery, JWKS, the token endpoint (code
with PKCE, refresh) and userinfo. No decision here beyond "did the provider say yes".

Discovery must name exactly the configured issuer (a document that names another issuer is
refused: OpenID Connect Discovery 4.3). Keys are fetched again, at most once a minute, when a
token names a ``kid`` the cached set lacks (the provider rotated its keys). Every call has a
timeout; a provider that does not answer is ``ProviderUnreachable``, one that answers with an
error is ``ProviderRefused`` (its ``error`` code kept, its description never echoed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from gateway.oidc.idtoken import Keys
from gateway.oidc.settings import OidcProvider
from vault.secret import Secret

TIMEOUT = aiohttp.ClientTimeout(total=10)
KEY_REFETCH = 60.0  # seconds between JWKS fetches for an unknown kid
DISCOVERY_TTL = 3600.0


class ProviderError(Exception):
    pass


class ProviderUnreachable(ProviderError):
    pass


class ProviderRefused(ProviderError):
    def __init__(self, error: str, status: int) -> None:
        super().__init__(f"the identity provider refused ({error})")
        self.error = error
        self.status = status


@dataclass(frozen=True)
class Tokens:
    id_token: str | None
    access_token: str | None
    refresh_token: str | None


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class ProviderClient:
    """One configured provider's endpoints, discovered once and cached."""

    def __init__(self, provider: OidcProvider, secret: Secret | None) -> None:
        self.provider = provider
        self.secret = secret
        self._meta: dict[str, Any] | None = None
        self._meta_at = 0.0
        self._keys: Keys | None = None
        self._keys_at = 0.0
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as http,
                http.get(url, headers=dict(headers or {}), allow_redirects=False) as response,
            ):
                if response.status == 401 or response.status == 403:
                    raise ProviderRefused("invalid_token", response.status)
                if response.status != 200:
                    raise ProviderUnreachable(f"{url} answered {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnreachable(f"{url}: {type(exc).__name__}") from None

    async def metadata(self) -> dict[str, Any]:
        async with self._lock:
            if self._meta is None or time.monotonic() - self._meta_at > DISCOVERY_TTL:
                url = self.provider.issuer + "/.well-known/openid-configuration"
                meta = await self._get_json(url)
                if not isinstance(meta, dict) or meta.get("issuer") != self.provider.issuer:
                    raise ProviderUnreachable("the discovery document names another issuer")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(meta.get(key), str):
                        raise ProviderUnreachable(f"the discovery document has no {key}")
                self._meta, self._meta_at = meta, time.monotonic()
            return self._meta

    async def keys(self, kid: str | None) -> Keys:
        """The JWKS, fetched again when ``kid`` is not in it (at most once a minute)."""
        meta = await self.metadata()
        stale = self._keys is None or (
            kid is not None
            and all(k.key_id != kid for k in self._keys.keys)
            and time.monotonic() - self._keys_at > KEY_REFETCH
        )
        if stale:
            self._keys = Keys(await self._get_json(meta["jwks_uri"]))
            self._keys_at = time.monotonic()
        assert self._keys is not None
        return self._keys

    async def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, challenge: str
    ) -> str:
        meta = await self.metadata()
        query = {
            "response_type": "code",
            "client_id": self.provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.provider.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if "offline_access" in self.provider.scopes:
            query["prompt"] = "consent"
        base = str(meta["authorization_endpoint"])
        return base + ("&" if "?" in base else "?") + urlencode(query)

    async def _token(self, form: dict[str, str]) -> Tokens:
        meta = await self.metadata()
        methods = meta.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
        headers: dict[str, str] = {}
        form = {**form}
        if self.secret is not None:
            if "client_secret_basic" in methods:
                # RFC 6749 2.3.1: each part form-encoded before the Basic encoding
                pair = f"{quote(self.provider.client_id, safe='')}:"
                pair += quote(self.secret.reveal_text(), safe="")
                headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            else:
                form["client_id"] = self.provider.client_id
                form["client_secret"] = self.secret.reveal_text()
        else:
            form["client_id"] = self.provider.client_id
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as http,
                http.post(
                    meta["token_endpoint"], data=form, headers=headers, allow_redirects=False
                ) as response,
            ):
                body = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnreachable(f"token endpoint: {type(exc).__name__}") from None
        if status >= 500:
            raise ProviderUnreachable(f"token endpoint answered {status}")
        if status != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise ProviderRefused(str(error or "error")[:40], status)

        def text(key: str) -> str | None:
            value = body.get(key)
            return value if isinstance(value, str) and value else None

        return Tokens(text("id_token"), text("access_token"), text("refresh_token"))

    async def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> Tokens:
        return await self._token(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            }
        )

    async def refresh(self, refresh_token: str) -> Tokens:
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def userinfo(self, access_token: str) -> dict[str, Any] | None:
        """The userinfo claims; None when the provider has no userinfo endpoint."""
        meta = await self.metadata()
        url = meta.get("userinfo_endpoint")
        if not isinstance(url, str):
            return None
        claims = await self._get_json(url, {"Authorization": f"Bearer {access_token}"})
        if not isinstance(claims, dict):
            raise ProviderUnreachable("userinfo is not a JSON object")
        return claims
