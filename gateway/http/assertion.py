"""The signed identity assertion sent upstream as ``X-Lockgate-Assertion``.

A web target is reached with one shared, vaulted credential; the assertion tells an app that
wants to know *who* is behind it. It is a JWT (compact JWS, RFC 7515/7519) signed with ES256
(ECDSA P-256 + SHA-256, RFC 7518 §3.4): the algorithm every JOSE library verifies.

Claims, and the security decisions behind them:

- ``iss``: the gateway's issuer URL, by convention its public web origin
  (``https://gw.example.com``); the public keys are at ``<iss>/.well-known/jwks.json``.
- ``aud``: the target's *name* (``grafana``), not its origin. The name is what a rule and a
  grant are about, it is the same in the per-target-origin and the path-prefix addressing
  modes, and it does not change when the gateway is renamed. An app checks ``aud`` equals its
  own target name, so an assertion minted for one target is useless at another.
- ``sub`` (the person), ``roles`` (sorted), ``grant`` (grant id), ``sid`` (Lockgate session id).
- ``iat``/``nbf``: signing time; ``exp``: at most ``LIFETIME`` later and never after the
  grant's end. No assertion is signed for a grant that has ended (fail closed).
- ``jti``: random, unique per *token*. A token is reused for the requests of one session while
  it has more than ``REFRESH_MARGIN`` left (one signature per session every few minutes, not
  one per request), so ``jti`` names a token, not a request: apps must not use it as a nonce.

``verify`` accepts only ES256 with a key from the given JWKS (``alg: none``, HMAC and every
other algorithm are refused before any key is looked at), checks ``iss``, ``aud``, ``exp``,
``nbf`` and ``iat`` and rejects duplicate JSON keys and non-canonical base64url. Its errors
never contain the token.

The private key lives in a PEM file (PKCS #8) created with mode 0600; a file that group or
others can read is refused, like the master key. Nodes of one cluster must share the file (or
the JWKS of each must list every node's key), since an app may fetch the keys from any node.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.errors import GatewayError, StartupError

HEADER = "X-Lockgate-Assertion"
JWKS_PATH = "/.well-known/jwks.json"
ALG = "ES256"
LIFETIME = timedelta(minutes=5)
REFRESH_MARGIN = timedelta(minutes=1)
MAX_CACHED = 10_000  # sessions; beyond this the expired, then the oldest, are dropped
_COORD = 32  # bytes of a P-256 coordinate and of each half of an ES256 signature
_B64URL = re.compile(r"[A-Za-z0-9_-]*")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SigningKeyError(StartupError):
    """The assertion signing key cannot be used. The message names the file, never the key."""


class AssertionInvalid(GatewayError):
    """A token was refused. ``reason`` is one of: malformed, algorithm, unknown-key,
    signature, issuer, audience, expired, not-yet-valid. The message never holds the token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _refuse(reason: str, message: str) -> NoReturn:
    raise AssertionInvalid(reason, message)


# --- encoding ------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str) -> bytes:
    """Strict: the URL-safe alphabet, no padding, and canonical (re-encodes to itself)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        _refuse("malformed", f"the {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        _refuse("malformed", f"the {what} is not base64url")
    if b64url(data) != text:
        _refuse("malformed", f"the {what} is not canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError):
        _refuse("malformed", f"the {what} is not a JSON object without duplicate keys")
    if not isinstance(value, dict):
        _refuse("malformed", f"the {what} is not a JSON object")
    return value


def _compact(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _timestamp(when: datetime, name: str) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return int(when.timestamp())


# --- keys ----------------------------------------------------------------------------


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(_COORD, "big")),
        "y": b64url(numbers.y.to_bytes(_COORD, "big")),
    }
    # RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace.
    jwk["kid"] = b64url(hashlib.sha256(_compact(jwk)).digest())
    return {**jwk, "use": "sig", "alg": ALG}


def _jwk_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        _refuse("unknown-key", "the key for this token is not a P-256 EC key")
    if jwk.get("alg", ALG) != ALG or jwk.get("use", "sig") != "sig":
        _refuse("algorithm", "the key for this token is not an ES256 signing key")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        _refuse("unknown-key", "the key for this token has no coordinates")
    xb, yb = _unb64url(x, "key's x"), _unb64url(y, "key's y")
    if len(xb) != _COORD or len(yb) != _COORD:
        _refuse("unknown-key", "the key for this token has wrong-sized coordinates")
    try:
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(xb, "big"), int.from_bytes(yb, "big"), ec.SECP256R1()
        )
        return numbers.public_key()
    except ValueError:
        _refuse("unknown-key", "the key for this token is not a point on P-256")


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SigningKeyError(f"assertion signing key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SigningKeyError(f"assertion signing key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SigningKeyError(
                f"assertion signing key {path} is accessible by group or others; "
                f"run: chmod 600 {path}"
            )
        data = f.read()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(
            f"assertion signing key {path} is not an unencrypted PEM private key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SigningKeyError(f"assertion signing key {path} is not a P-256 EC key")
    return key


def _create_key(path: Path) -> None:
    """Write a fresh key; if another process wins the race, its key is kept."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # unlike rename, never replaces a key that appeared meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


# --- signing -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cached:
    claims: tuple[str, str, tuple[str, ...], str, int]
    token: str
    iat: int
    exp: int
    grant_end: int


class AssertionSigner:
    """Signs assertions with one ES256 key; keeps the current token of each session."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, issuer: str) -> None:
        if not issuer:
            raise ValueError("the assertion issuer must not be empty")
        self._key = key
        self.issuer = issuer
        self._jwk = public_jwk(key.public_key())
        self.kid = self._jwk["kid"]
        self._header = b64url(_compact({"alg": ALG, "kid": self.kid, "typ": "JWT"}))
        self._cache: dict[str, _Cached] = {}

    @classmethod
    def load_or_create(cls, path: Path, issuer: str) -> AssertionSigner:
        """Load the PEM key at ``path``, creating it (mode 0600) if there is none. Raises
        SigningKeyError for a file group or others can read, or one that holds no P-256 key."""
        if not path.exists() and not path.is_symlink():
            _create_key(path)
        return cls(_read_key(path), issuer)

    def __repr__(self) -> str:
        return f"AssertionSigner(issuer={self.issuer!r}, kid={self.kid!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an AssertionSigner holds a private key and cannot be pickled")

    def jwks(self) -> dict[str, Any]:
        """The public keys, for ``/.well-known/jwks.json``."""
        return {"keys": [dict(self._jwk)]}

    def sign(
        self,
        *,
        audience: str,
        subject: str,
        roles: Sequence[str],
        grant_id: str,
        session_id: str,
        expires_at: datetime,
        now: datetime,
    ) -> str:
        """The assertion for one request of ``session_id``: the session's current token if it
        still has more than REFRESH_MARGIN left (or lasts to the grant's end), else a new one.
        ``expires_at`` is the grant's end; raises ValueError once it has passed."""
        now_s = _timestamp(now, "now")
        grant_end = _timestamp(expires_at, "expires_at")
        claims = (audience, subject, tuple(sorted(set(roles))), grant_id, grant_end)
        cached = self._cache.get(session_id)
        if cached is not None and cached.claims == claims and cached.iat <= now_s:
            fresh = now_s < cached.exp - int(REFRESH_MARGIN.total_seconds())
            if fresh or (cached.exp == cached.grant_end and now_s < cached.exp):
                return cached.token
        exp = min(now_s + int(LIFETIME.total_seconds()), grant_end)
        if exp <= now_s:
            self._cache.pop(session_id, None)
            raise ValueError("the grant has ended: no assertion is signed for it")
        payload = {
            "iss": self.issuer,
            "aud": audience,
            "sub": subject,
            "roles": list(claims[2]),
            "grant": grant_id,
            "sid": session_id,
            "iat": now_s,
            "nbf": now_s,
            "exp": exp,
            "jti": secrets.token_urlsafe(16),
        }
        signing_input = f"{self._header}.{b64url(_compact(payload))}"
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = f"{signing_input}.{b64url(r.to_bytes(_COORD, 'big') + s.to_bytes(_COORD, 'big'))}"
        self._remember(session_id, _Cached(claims, token, now_s, exp, grant_end), now_s)
        return token

    def forget(self, session_id: str) -> None:
        """Drop a session's token (call when the session ends)."""
        self._cache.pop(session_id, None)

    def _remember(self, session_id: str, entry: _Cached, now_s: int) -> None:
        self._cache.pop(session_id, None)
        if len(self._cache) >= MAX_CACHED:
            for sid in [k for k, v in self._cache.items() if v.exp <= now_s]:
                del self._cache[sid]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache[session_id] = entry


# --- verifying -----------------------------------------------------------------------


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        _refuse("malformed", f"the token's {name} claim is missing or not a number")
    return float(value)


def verify(
    token: str,
    jwks: Mapping[str, Any],
    *,
    audience: str,
    issuer: str,
    now: datetime,
    leeway: timedelta = timedelta(0),
) -> dict[str, Any]:
    """The claims of a valid assertion; raises AssertionInvalid otherwise. Only ES256 with a
    key of ``jwks`` (matched by ``kid``) is accepted; ``iss`` must equal ``issuer``, ``aud``
    must be (or, as a list, contain) ``audience``, and ``now`` must lie within
    ``[nbf, exp)`` give or take ``leeway`` (for clocks that differ between hosts)."""
    if not isinstance(token, str) or len(token) > 16384:
        _refuse("malformed", "the token is not a compact JWS of sane size")
    parts = token.split(".")
    if len(parts) != 3:
        _refuse("malformed", "the token is not a compact JWS (three dot-separated parts)")
    header = _json_object(_unb64url(parts[0], "header"), "header")
    if header.get("alg") != ALG:
        _refuse("algorithm", f"the token's algorithm is not {ALG}")
    if "crit" in header:
        _refuse("malformed", "the token names critical extensions this verifier does not know")
    kid = header.get("kid")
    keys = jwks.get("keys")
    if not isinstance(keys, Sequence) or isinstance(keys, str):
        _refuse("unknown-key", "the key set has no keys")
    jwk = next((k for k in keys if isinstance(k, Mapping) and k.get("kid") == kid), None)
    if jwk is None or not isinstance(kid, str):
        _refuse("unknown-key", "the token's key id is not in the key set")
    key = _jwk_key(jwk)
    signature = _unb64url(parts[2], "signature")
    if len(signature) != 2 * _COORD:
        _refuse("signature", "the token's signature is not a valid ES256 signature")
    r = int.from_bytes(signature[:_COORD], "big")
    s = int.from_bytes(signature[_COORD:], "big")
    try:
        key.verify(
            encode_dss_signature(r, s),
            f"{parts[0]}.{parts[1]}".encode("ascii"),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        _refuse("signature", "the token's signature does not verify")
    claims = _json_object(_unb64url(parts[1], "payload"), "payload")
    if claims.get("iss") != issuer:
        _refuse("issuer", "the token was issued by someone else")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        _refuse("audience", "the token is meant for another audience")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    at = now.timestamp()
    slack = leeway.total_seconds()
    if at >= _numeric(claims, "exp") + slack:
        _refuse("expired", "the token has expired")
    if "nbf" in claims and at < _numeric(claims, "nbf") - slack:
        _refuse("not-yet-valid", "the token is not valid yet")
    if "iat" in claims and at < _numeric(claims, "iat") - slack:
        _refuse("not-yet-valid", "the token was issued in the future")
    return claims


# --- HTTP ------------------------------------------------------------------------------


def jwks_handler(signer: AssertionSigner) -> Handler:
    """``GET /.well-known/jwks.json``: the public keys, cacheable for five minutes. It must be
    reachable without signing in (apps fetch it)."""
    body = json.dumps(signer.jwks(), sort_keys=True).encode()

    async def jwks(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body,
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    return jwks
