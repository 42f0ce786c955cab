"""Web targets' settings: URL, upstream TLS trust, Host, masked parameters, body recording —
validated at the edge of the policy service, stored, and audited without the CA text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from policy.errors import InvalidInput, NotFound
from policy.service import SYSTEM_ACTOR, PolicyService
from policy.tables import metadata as policy_tables
from policy.webtarget import normalize_fingerprint, validate_url, web_settings
from tests.libdb import AuditLog, SessionMaker, create_tables


def ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


FP = "AB:" * 31 + "CD"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7:3000/grafana/",
        "https://grafana.internal",
        "https://[::1]:8443/",
        "http://app.example:80/a/b",
    ],
)
def test_good_urls_are_kept(url: str) -> None:
    assert validate_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/",
        "http://",
        "http:///path",
        "https://user:pw@host/",
        "https://user@host/",
        "https://host/#frag",
        "https://host/?q=1",
        "https://host:99999/",
        "https://host:0/",
        "https://ho st/",
        "https://host/\x00",
        "javascript:alert(1)",
        "",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        validate_url(url)


def test_fingerprint_is_lowercase_hex_without_colons() -> None:
    assert normalize_fingerprint(FP) == "ab" * 31 + "cd"
    assert normalize_fingerprint("sha256:" + "0F" * 32) == "0f" * 32
    for bad in ("ab" * 31, "zz" * 32, "ab" * 33, ""):
        with pytest.raises(InvalidInput, match="SHA-256"):
            normalize_fingerprint(bad)


def test_tls_choices_are_exclusive_and_need_https() -> None:
    pem = ca_pem()
    assert web_settings("https://h/", tls_ca=pem).tls_ca == pem.strip() + "\n"
    with pytest.raises(InvalidInput, match="at most one"):
        web_settings("https://h/", tls_ca=pem, tls_fingerprint=FP)
    with pytest.raises(InvalidInput, match="at most one"):
        web_settings("https://h/", tls_verify=False, tls_fingerprint=FP)
    with pytest.raises(InvalidInput, match="https"):
        web_settings("http://h/", tls_fingerprint=FP)
    with pytest.raises(InvalidInput, match="PEM"):
        web_settings("https://h/", tls_ca="-----BEGIN CERTIFICATE-----\nnope\n")
    with pytest.raises(InvalidInput, match="record_bodies"):
        web_settings("https://h/", record_bodies=1024 * 1024 + 1)
    with pytest.raises(InvalidInput, match="record_bodies"):
        web_settings("https://h/", record_bodies=-1)
    with pytest.raises(InvalidInput, match="parameter"):
        web_settings("https://h/", sensitive_params=["a b"])


@pytest.fixture
async def svc(engine: AsyncEngine, maker: SessionMaker) -> tuple[PolicyService, AuditLog]:
    await create_tables(engine, policy_tables)
    audit = await AuditLog.create(engine, maker)
    return PolicyService(maker, [], audit), audit


async def test_web_target_settings_are_stored_and_audited(
    svc: tuple[PolicyService, AuditLog],
) -> None:
    policy, audit = svc
    pem = ca_pem()
    added = await policy.add_target(
        SYSTEM_ACTOR,
        "grafana",
        kind="http",
        url="https://10.0.0.7:3000/grafana/",
        tls_ca=pem,
        preserve_host=True,
        sensitive_params=["token", "api_key", "token"],
        record_bodies=4096,
        accounts=["admin"],
    )
    again = await policy.get_target("grafana")
    assert again == added
    assert added.tls_ca == pem.strip() + "\n" and added.tls_fingerprint is None
    assert added.tls_verify and added.preserve_host
    assert added.sensitive_params == ("token", "api_key") and added.record_bodies == 4096
    ssh = await policy.add_target(SYSTEM_ACTOR, "db01", host="10.0.0.1", accounts=["root"])
    assert ssh.tls_ca is None and ssh.sensitive_params == () and ssh.record_bodies == 0

    changed = await policy.set_target_web(SYSTEM_ACTOR, "grafana", tls_verify=False)
    assert not changed.tls_verify and changed.tls_ca is None and changed.preserve_host
    changed = await policy.set_target_web(SYSTEM_ACTOR, "grafana", tls_fingerprint=FP)
    assert changed.tls_verify and changed.tls_fingerprint == "ab" * 31 + "cd"
    changed = await policy.set_target_web(
        SYSTEM_ACTOR, "grafana", url="https://10.0.0.8/", record_bodies=0, preserve_host=False
    )
    assert changed.url == "https://10.0.0.8/" and changed.tls_fingerprint == "ab" * 31 + "cd"
    assert changed.record_bodies == 0 and not changed.preserve_host

    events = [e for e in await audit.events() if e.subject == "grafana"]
    details = [dict(e.details) for e in events]
    assert [e.action for e in events] == ["target.add", *["target.web"] * 3]
    assert details[0]["tls_ca"] is True and details[0]["tls_insecure"] is False
    assert details[1]["tls_insecure"] is True
    assert "BEGIN CERTIFICATE" not in json.dumps(details)


async def test_web_settings_are_refused_on_bad_input_and_ssh_targets(
    svc: tuple[PolicyService, AuditLog],
) -> None:
    policy, _ = svc
    with pytest.raises(InvalidInput):
        await policy.add_target(SYSTEM_ACTOR, "w", kind="http", url="https://u:p@h/")
    with pytest.raises(InvalidInput, match="at most one"):
        await policy.add_target(
            SYSTEM_ACTOR, "w", kind="http", url="https://h/", tls_verify=False, tls_ca=ca_pem()
        )
    await policy.add_target(SYSTEM_ACTOR, "db01", host="10.0.0.1")
    with pytest.raises(InvalidInput, match="not a web target"):
        await policy.set_target_web(SYSTEM_ACTOR, "db01", preserve_host=True)
    with pytest.raises(NotFound):
        await policy.set_target_web(SYSTEM_ACTOR, "nosuch", preserve_host=True)
    assert [t.name for t in await policy.list_targets()] == ["db01"]
