"""``[[auth.oidc]]`` parsing, the claims-to-roles mapping, and the ID token refusals that
need no provider (algorithms a client must never accept)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.oidc.accounts import judge
from gateway.oidc.idtoken import Expected, Keys, TokenRefused, verify
from gateway.oidc.settings import apply_roles, parse_provider
from tests.oidc.idp import rsa_jwk

BASE = {"name": "corp", "issuer": "https://idp.example.com", "client_id": "lockgate"}


def test_mappings_match_exactly_by_glob_or_by_whole_regex() -> None:
    corp = parse_provider(
        {**BASE, "role_mappings": {"ops": ["a"], "sre-*": ["b"], "/^x-(1|2)$/": ["c"]}}
    )
    assert corp.roles_for({"groups": ["ops"]}) == {"a"}
    assert corp.roles_for({"groups": ["opsx", "sre-db"]}) == {"b"}
    assert corp.roles_for({"groups": ["x-1"]}) == {"c"}
    assert corp.roles_for({"groups": ["x-12", "y-x-1"]}) == frozenset()  # whole value only
    assert corp.roles_for({"groups": "ops"}) == {"a"}  # a single string claim
    assert corp.roles_for({"groups": [1, None]}) == frozenset()
    assert corp.managed_roles == {"a", "b", "c"}
    assert apply_roles({"a", "hand"}, corp.managed_roles, frozenset({"b"})) == {"b", "hand"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"issuer": "http://idp.example.com"}, "https"),
        ({"issuer": "https://idp.example.com/?x=1"}, "query"),
        ({"role_mappings": {"/(/": ["a"]}}, "not a regular expression"),
        ({"role_mappings": {"g": "Admin"}}, "role names"),
        ({"name": "Corp"}, "name"),
        ({"colour": "blue"}, "unknown key colour"),
        ({"check_interval": "1s"}, "at least 5s"),
    ],
)
def test_bad_provider_tables_are_refused_naming_the_key(
    table: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_provider({**BASE, **table})


def test_http_issuer_only_on_loopback_and_config_errors_name_the_provider(tmp_path: Path) -> None:
    assert (
        parse_provider({**BASE, "issuer": "http://127.0.0.1:5556/"}).issuer
        == "http://127.0.0.1:5556"
    )
    path = tmp_path / "lockgate.toml"
    path.write_text(
        '[[auth.oidc]]\nname = "corp"\nissuer = "https://i"\nclient_id = "c"\n'
        '[[auth.oidc]]\nname = "corp"\nissuer = "https://j"\nclient_id = "c"\n'
    )
    with pytest.raises(ConfigError, match=r"names used twice: corp"):
        load_config(path, environ={})
    path.write_text('[auth]\npassword_login_roles = ["breakglass"]\n')
    assert load_config(path, environ={}).password_login_roles == {"breakglass"}
    with pytest.raises(ConfigError, match="lists are set in the file only"):
        load_config(path, environ={"LOCKGATE_AUTH_PASSWORD_LOGIN_ROLES": "x"})


def test_judge_needs_a_verified_email_and_a_usable_name() -> None:
    corp = parse_provider(BASE)
    assert judge(corp, {"preferred_username": "Bob", "email_verified": True}).user == "bob"
    assert judge(corp, {"preferred_username": "bob"}).refusal is not None  # no email_verified
    relaxed = parse_provider({**BASE, "require_email_verified": False})
    assert judge(relaxed, {"preferred_username": "bob"}).refusal is None
    for name in ("bob@example.com", "lockgate", "", None):
        verdict = judge(relaxed, {"preferred_username": name})
        assert verdict.refusal is not None and verdict.refusal.reason == "username"


def _expected(now: datetime) -> Expected:
    return Expected("https://idp", "lockgate", "n1", now, timedelta(seconds=60))


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_unsigned_and_hmac_tokens_are_refused_before_any_key_is_used(alg: str) -> None:
    now = datetime.now(UTC)
    claims = {
        "iss": "https://idp",
        "aud": "lockgate",
        "sub": "s",
        "nonce": "n1",
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + 60,
    }
    key = None if alg == "none" else "lockgate-client-secret-used-as-hmac-key"
    token = jwt.encode(claims, key, algorithm=alg)  # type: ignore[arg-type]
    with pytest.raises(TokenRefused) as refused:
        verify(token, Keys({"keys": [rsa_jwk("k1")]}), _expected(now))
    assert refused.value.reason == "alg"


def test_a_token_from_the_future_and_a_second_audience_without_azp_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    keys = Keys({"keys": [{**public, "kid": "k1", "use": "sig"}]})
    now = datetime.now(UTC)
    base = {
        "iss": "https://idp",
        "aud": "lockgate",
        "sub": "s",
        "nonce": "n1",
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + 600,
    }

    def signed(**claims: object) -> str:
        return jwt.encode({**base, **claims}, private, algorithm="RS256", headers={"kid": "k1"})

    assert verify(signed(), keys, _expected(now))["sub"] == "s"
    cases = {
        "iat": signed(iat=int(now.timestamp()) + 120),
        "aud": signed(aud=["lockgate", "other"]),
        "iss": signed(iss="https://other"),
        "claims": signed(sub=""),
    }
    for reason, token in cases.items():
        with pytest.raises(TokenRefused) as refused:
            verify(token, keys, _expected(now))
        assert refused.value.reason == reason, reason
    assert verify(signed(aud=["lockgate", "o"], azp="lockgate"), keys, _expected(now))
    # exp within the skew still passes, beyond it not
    assert verify(signed(exp=int(now.timestamp()) - 30), keys, _expected(now))
    with pytest.raises(TokenRefused, match="expired"):
        verify(signed(exp=int(now.timestamp()) - 61), keys, _expected(now))


def test_an_idp_sign_in_suffices_except_under_mfa_unless_it_reported_an_accepted_factor() -> None:
    from gateway.access import Factor, Where, factors_suffice
    from policy.models import User
    from policy.rules import parse_rule

    user = User("us-1", "alice", frozenset({"dev"}), (), False, False, False, datetime.now(UTC))
    assert factors_suffice(user, {Factor.IDP}, Where.WEB)
    assert factors_suffice(user, {Factor.IDP}, Where.SSH)
    assert not factors_suffice(user, {Factor.IDP}, Where.SSH, mfa_per_session=True)
    both = {Factor.IDP, Factor.IDP_MFA}
    assert factors_suffice(user, both, Where.SSH, mfa_per_session=True)
    assert not factors_suffice(user, {Factor.IDP_MFA}, Where.SSH, mfa_per_session=True)
    disabled = User("us-2", "bob", frozenset(), (), False, False, True, datetime.now(UTC))
    assert not factors_suffice(disabled, both, Where.SSH)
    rule = parse_rule({"name": "r", "roles": ["dev"], "mfa_per_session": True, "idp_mfa": ["otp"]})
    assert rule.idp_mfa == {"otp"}
