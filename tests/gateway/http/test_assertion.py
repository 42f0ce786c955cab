"""The identity assertion: ES256 JWTs that apps can verify, that cannot be forged, and that
never outlive the grant they speak for."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.http.assertion import (
    JWKS_PATH,
    LIFETIME,
    AssertionInvalid,
    AssertionSigner,
    SigningKeyError,
    jwks_handler,
    verify,
)

ISSUER = "https://gw.example.com"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
GRANT_END = NOW + timedelta(hours=1)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "assertion_key.pem"


@pytest.fixture
def signer(key_path: Path) -> AssertionSigner:
    return AssertionSigner.load_or_create(key_path, ISSUER)


def sign(signer: AssertionSigner, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "audience": "grafana",
        "subject": "alice",
        "roles": ["dev", "approver", "dev"],
        "grant_id": "gr_1",
        "session_id": "se_1",
        "expires_at": GRANT_END,
        "now": NOW,
    }
    args.update(overrides)
    return signer.sign(**args)


def check(token: str, signer: AssertionSigner, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"audience": "grafana", "issuer": ISSUER, "now": NOW}
    args.update(overrides)
    return verify(token, signer.jwks(), **args)


def parts(token: str) -> list[dict[str, Any]]:
    head, body, _ = token.split(".")
    return [json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, body)]


def es256(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A token signed by hand, for payloads the signer would never produce."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def refused(reason: str, token: str, signer: AssertionSigner, **overrides: Any) -> None:
    with pytest.raises(AssertionInvalid) as caught:
        check(token, signer, **overrides)
    assert caught.value.reason == reason
    for piece in token.split("."):
        if piece:
            assert piece not in str(caught.value)


# --- round trip and claims -----------------------------------------------------------


def test_a_signed_assertion_verifies_and_carries_who_what_and_until_when(
    signer: AssertionSigner,
) -> None:
    token = sign(signer)
    claims = check(token, signer)
    assert {k: claims[k] for k in ("iss", "aud", "sub", "roles", "grant", "sid")} == {
        "iss": ISSUER,
        "aud": "grafana",
        "sub": "alice",
        "roles": ["approver", "dev"],
        "grant": "gr_1",
        "sid": "se_1",
    }
    assert claims["iat"] == claims["nbf"] == int(NOW.timestamp())
    assert claims["exp"] == int((NOW + LIFETIME).timestamp())
    header = parts(token)[0]
    assert header == {"alg": "ES256", "kid": signer.jwks()["keys"][0]["kid"], "typ": "JWT"}


def test_the_key_set_is_one_public_es256_signing_key(signer: AssertionSigner) -> None:
    (key,) = signer.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
    assert (key["kty"], key["crv"], key["use"], key["alg"]) == ("EC", "P-256", "sig", "ES256")
    assert "d" not in key


def test_expiry_is_capped_by_the_grants_end(signer: AssertionSigner) -> None:
    end = NOW + timedelta(seconds=90)
    claims = check(sign(signer, expires_at=end), signer)
    assert claims["exp"] == int(end.timestamp())


def test_no_assertion_is_signed_for_a_grant_that_has_ended(signer: AssertionSigner) -> None:
    with pytest.raises(ValueError, match="ended"):
        sign(signer, expires_at=NOW)
    with pytest.raises(ValueError, match="ended"):
        sign(signer, expires_at=NOW - timedelta(minutes=1))


def test_naive_datetimes_are_refused(signer: AssertionSigner) -> None:
    with pytest.raises(ValueError, match="timezone"):
        sign(signer, now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize("minutes", [0, 1, 3, 4.5, 7, 30, 59, 59.99])
def test_at_no_time_does_an_assertion_outlive_the_grant_or_the_lifetime(
    signer: AssertionSigner, minutes: float
) -> None:
    now = NOW + timedelta(minutes=minutes)
    claims = check(sign(signer, now=now), signer, now=now)
    assert claims["exp"] <= GRANT_END.timestamp()
    assert claims["exp"] - claims["iat"] <= LIFETIME.total_seconds()
    assert claims["exp"] > now.timestamp()


def test_a_session_reuses_its_token_until_a_minute_before_it_expires(
    signer: AssertionSigner,
) -> None:
    first = sign(signer)
    assert sign(signer, now=NOW + timedelta(minutes=3, seconds=59)) == first
    renewed = sign(signer, now=NOW + timedelta(minutes=4))
    assert renewed != first
    assert parts(renewed)[1]["jti"] != parts(first)[1]["jti"]
    assert sign(signer, session_id="se_2") != first


def test_a_token_that_lasts_to_the_grants_end_is_reused_until_then(
    signer: AssertionSigner,
) -> None:
    end = NOW + timedelta(seconds=50)
    first = sign(signer, expires_at=end)
    assert sign(signer, expires_at=end, now=end - timedelta(seconds=1)) == first


def test_an_extended_grant_or_changed_roles_get_a_new_token(signer: AssertionSigner) -> None:
    first = sign(signer)
    extended = sign(signer, expires_at=GRANT_END + timedelta(hours=1))
    assert extended != first
    assert parts(sign(signer, roles=["dev"]))[1]["roles"] == ["dev"]


def test_a_forgotten_session_gets_a_new_token(signer: AssertionSigner) -> None:
    first = sign(signer)
    signer.forget("se_1")
    assert sign(signer) != first


def test_every_token_has_its_own_id(signer: AssertionSigner) -> None:
    ids = {parts(sign(signer, session_id=f"se_{i}"))[1]["jti"] for i in range(50)}
    assert len(ids) == 50


# --- forgeries -----------------------------------------------------------------------


def test_a_token_signed_by_another_key_is_refused(signer: AssertionSigner, tmp_path: Path) -> None:
    other = AssertionSigner.load_or_create(tmp_path / "other.pem", ISSUER)
    refused("unknown-key", sign(other), signer)


def test_a_token_signed_by_another_key_under_our_key_id_is_refused(
    signer: AssertionSigner,
) -> None:
    claims = parts(sign(signer))[1]
    header = {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    refused("signature", es256(ec.generate_private_key(ec.SECP256R1()), header, claims), signer)


def test_alg_none_is_refused(signer: AssertionSigner) -> None:
    _, body, _ = sign(signer).split(".")
    none = b64(json.dumps({"alg": "none", "kid": signer.kid, "typ": "JWT"}).encode())
    refused("algorithm", f"{none}.{body}.", signer)
    refused("algorithm", f"{none}.{body}.{sign(signer).split('.')[2]}", signer)


def test_hmac_with_the_public_key_as_secret_is_refused(signer: AssertionSigner) -> None:
    claims = parts(sign(signer))[1]
    secret = json.dumps(signer.jwks()["keys"][0]).encode()
    header = {"alg": "HS256", "kid": signer.kid, "typ": "JWT"}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    refused("algorithm", f"{signing_input}.{b64(mac)}", signer)


@pytest.mark.parametrize(
    "change",
    [{"sub": "root"}, {"roles": ["admin"]}, {"aud": "other"}, {"exp": 4102444800}],
)
def test_a_tampered_payload_is_refused(signer: AssertionSigner, change: dict[str, Any]) -> None:
    head, _, signature = sign(signer).split(".")
    claims = {**parts(sign(signer))[1], **change}
    refused("signature", f"{head}.{b64(json.dumps(claims).encode())}.{signature}", signer)


def test_a_flipped_signature_bit_is_refused(signer: AssertionSigner) -> None:
    head, body, signature = sign(signer).split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 1
    refused("signature", f"{head}.{body}.{b64(bytes(raw))}", signer)


def test_an_expired_token_is_refused_from_its_exp_on(signer: AssertionSigner) -> None:
    token = sign(signer)
    exp = NOW + LIFETIME
    assert check(token, signer, now=exp - timedelta(seconds=1))["sub"] == "alice"
    refused("expired", token, signer, now=exp)
    assert check(token, signer, now=exp, leeway=timedelta(seconds=30))["sub"] == "alice"


def test_a_token_used_before_it_was_issued_is_refused(signer: AssertionSigner) -> None:
    refused("not-yet-valid", sign(signer), signer, now=NOW - timedelta(seconds=5))


def test_a_token_for_another_target_or_from_another_issuer_is_refused(
    signer: AssertionSigner,
) -> None:
    token = sign(signer)
    refused("audience", token, signer, audience="kibana")
    refused("issuer", token, signer, issuer="https://evil.example.com")


def test_duplicate_claims_are_refused_even_when_signed(
    signer: AssertionSigner, key_path: Path
) -> None:
    claims = parts(sign(signer))[1]
    header = b64(json.dumps({"alg": "ES256", "kid": signer.kid}).encode())
    body = json.dumps(claims)[:-1] + ', "sub": "root"}'
    signing_input = f"{header}.{b64(body.encode())}"
    key = private_key(key_path)
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    token = f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    refused("malformed", token, signer)


def test_a_token_without_expiry_is_refused_even_when_signed(
    signer: AssertionSigner, key_path: Path
) -> None:
    claims = {k: v for k, v in parts(sign(signer))[1].items() if k != "exp"}
    token = es256(private_key(key_path), {"alg": "ES256", "kid": signer.kid}, claims)
    refused("malformed", token, signer)


def test_unknown_critical_extensions_are_refused(signer: AssertionSigner, key_path: Path) -> None:
    header = {"alg": "ES256", "kid": signer.kid, "crit": ["b64"], "b64": False}
    token = es256(private_key(key_path), header, parts(sign(signer))[1])
    refused("malformed", token, signer)


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!!.e30.AA", "e30=.e30.AA", "eyJhbGciOiJFUzI1NiJ9.e30.A"],
)
def test_garbage_is_refused_as_malformed(signer: AssertionSigner, token: str) -> None:
    with pytest.raises(AssertionInvalid) as caught:
        check(token, signer)
    assert caught.value.reason in ("malformed", "unknown-key")


def test_non_canonical_base64_in_the_signature_is_refused(signer: AssertionSigner) -> None:
    head, body, signature = sign(signer).split(".")
    # 64 bytes encode to 86 characters, the last holding 4 unused bits: set one of them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last % 16 == 0
    tweaked = signature[:-1] + alphabet[last + 1]
    refused("malformed", f"{head}.{body}.{tweaked}", signer)


# --- the key file --------------------------------------------------------------------


def test_the_key_file_is_created_private_and_loaded_again(key_path: Path) -> None:
    first = AssertionSigner.load_or_create(key_path, ISSUER)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = AssertionSigner.load_or_create(key_path, ISSUER)
    assert again.jwks() == first.jwks()
    assert check(sign(first), again)["sub"] == "alice"
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_file_group_or_others_can_read_is_refused(key_path: Path, mode: int) -> None:
    AssertionSigner.load_or_create(key_path, ISSUER)
    key_path.chmod(mode)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        AssertionSigner.load_or_create(key_path, ISSUER)


def test_a_key_file_that_is_not_a_p256_key_is_refused(key_path: Path) -> None:
    key_path.parent.mkdir()
    for content in (
        b"not a key",
        rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    ):
        key_path.write_bytes(content)
        key_path.chmod(0o600)
        with pytest.raises(SigningKeyError) as caught:
            AssertionSigner.load_or_create(key_path, ISSUER)
        assert str(key_path) in str(caught.value)
        assert "PRIVATE" not in str(caught.value)


def test_a_symlinked_key_file_is_refused(key_path: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    AssertionSigner.load_or_create(real, ISSUER)
    key_path.parent.mkdir()
    os.symlink(real, key_path)
    with pytest.raises(SigningKeyError):
        AssertionSigner.load_or_create(key_path, ISSUER)


def test_the_signer_shows_no_key_material_and_cannot_be_pickled(
    signer: AssertionSigner, key_path: Path
) -> None:
    text = repr(signer) + str(signer)
    private = private_key(key_path).private_numbers().private_value
    assert str(private) not in text
    assert format(private, "x") not in text
    assert "PRIVATE" not in text and ISSUER in text
    with pytest.raises(TypeError):
        pickle.dumps(signer)


# --- another implementation agrees -----------------------------------------------------


def test_pyjwt_verifies_our_assertion_with_our_key_set(signer: AssertionSigner) -> None:
    token = sign(signer, now=datetime.now(UTC), expires_at=datetime.now(UTC) + timedelta(hours=1))
    key = jwt.PyJWKSet.from_dict(signer.jwks())[signer.kid]
    claims = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience="grafana",
        issuer=ISSUER,
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert (claims["sub"], claims["grant"], claims["sid"]) == ("alice", "gr_1", "se_1")
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=["ES256"], audience="kibana", issuer=ISSUER)


def test_we_verify_a_token_pyjwt_signed_with_our_key(
    signer: AssertionSigner, key_path: Path
) -> None:
    claims = {**parts(sign(signer))[1], "sub": "bob"}
    key = private_key(key_path)
    token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": signer.kid})
    assert check(token, signer)["sub"] == "bob"


async def test_the_jwks_endpoint_serves_the_keys_cacheably_and_pyjwt_can_fetch_them(
    signer: AssertionSigner,
) -> None:
    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks_handler(signer))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}{JWKS_PATH}"
        now = datetime.now(UTC)
        token = sign(signer, now=now, expires_at=now + timedelta(hours=1))

        def fetch_and_verify() -> tuple[dict[str, Any], str]:
            import urllib.request

            with urllib.request.urlopen(url, timeout=10) as response:
                cache = response.headers["Cache-Control"]
                assert response.headers["Content-Type"].startswith("application/json")
            client = jwt.PyJWKClient(url, cache_keys=False)
            key = client.get_signing_key_from_jwt(token)
            return jwt.decode(token, key, algorithms=["ES256"], audience="grafana"), cache

        claims, cache = await asyncio.to_thread(fetch_and_verify)
        assert claims["sub"] == "alice"
        assert "max-age=300" in cache
    finally:
        await runner.cleanup()
