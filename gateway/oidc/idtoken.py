"""The ID token check (OpenID Connect Core 3.1.3.7), pure: token, keys and ``now`` in, claims or
a refusal with a stable reason out.

The signature is checked first, with a key of the provider's JWKS chosen by ``kid`` and an
asymmetric algorithm the key is for (``none`` and HMAC algorithms are refused: a client secret
must never verify a token). Then ``iss`` exactly, ``aud`` containing our client id (and
``azp`` naming us when there are several audiences), ``exp`` and ``iat`` against ``now`` with
the configured clock skew, and ``nonce`` against the one this sign-in sent, compared in
constant time. PyJWT does the JOSE work; times are checked here, on the gateway's clock.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class TokenRefused(Exception):
    """``reason`` is a stable code (``signature``, ``iss``, ``aud``, ``expired``, ``nonce``,
    ...); the message names no token content."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Expected:
    issuer: str
    client_id: str
    nonce: str | None  # None: a refresh, where the provider may omit it
    now: datetime
    skew: timedelta


class Keys:
    """A provider's JWKS: signing keys by ``kid``."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self.keys: list[jwt.PyJWK] = []
        for entry in jwks.get("keys", []) if isinstance(jwks, Mapping) else []:
            if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig":
                continue
            try:
                self.keys.append(jwt.PyJWK(dict(entry)))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key type this gateway cannot use is not a key it trusts

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        for key in self.keys:
            if kid is not None and key.key_id != kid:
                continue
            if str(key.key_type) == _family_of(alg):
                return key
        return None


def _family_of(alg: str) -> str:
    if alg.startswith(("RS", "PS")):
        return "RSA"
    if alg.startswith("ES"):
        return "EC"
    return "OKP"


def header(token: str) -> tuple[str, str | None]:
    """(alg, kid) of the token, or TokenRefused(``malformed``/``alg``)."""
    try:
        head = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise TokenRefused("malformed", "the ID token is not a JWS") from None
    alg = head.get("alg")
    if alg not in ALGORITHMS:
        raise TokenRefused("alg", "the ID token's algorithm is not accepted")
    kid = head.get("kid")
    return str(alg), kid if isinstance(kid, str) else None


def verify(token: str, keys: Keys, expected: Expected) -> dict[str, Any]:
    """The verified claims, or TokenRefused."""
    alg, kid = header(token)
    key = keys.find(kid, alg)
    if key is None:
        raise TokenRefused("key", "the ID token is signed with a key the provider does not list")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=expected.client_id,
            issuer=expected.issuer,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "require": ["iss", "sub", "aud", "exp", "iat"],
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenRefused("signature", "the ID token's signature does not verify") from None
    except jwt.InvalidAudienceError:
        raise TokenRefused("aud", "the ID token is for another client") from None
    except jwt.InvalidIssuerError:
        raise TokenRefused("iss", "the ID token comes from another issuer") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused("claims", f"the ID token has no {exc.claim} claim") from None
    except jwt.PyJWTError:
        raise TokenRefused("malformed", "the ID token does not decode") from None
    _check_times(claims, expected)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if len(audiences) > 1 and claims.get("azp") != expected.client_id:
        raise TokenRefused("aud", "the ID token names several audiences and not us as azp")
    if expected.nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(
            sent.encode(), expected.nonce.encode()
        ):
            raise TokenRefused("nonce", "the ID token's nonce is not this sign-in's")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:  # OIDC Core 2: at most 255
        raise TokenRefused("claims", "the ID token has no usable subject")
    return claims


def _check_times(claims: Mapping[str, Any], expected: Expected) -> None:
    try:
        exp = datetime.fromtimestamp(float(claims["exp"]), UTC)
        iat = datetime.fromtimestamp(float(claims["iat"]), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise TokenRefused("claims", "the ID token's exp or iat is not a time") from None
    if expected.now >= exp + expected.skew:
        raise TokenRefused("expired", "the ID token has expired")
    if iat > expected.now + expected.skew:
        raise TokenRefused("iat", "the ID token is issued in the future")
