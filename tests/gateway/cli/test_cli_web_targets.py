"""``lockgate target add --url`` with its TLS, Host and recording options, and ``lockgate
credential set --basic-stdin``, on a real database — the password nowhere but the vault."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.gateway.cli.test_cli_flow import Cli, _all_db_text, cli  # noqa: F401  (fixture)
from tests.policy.test_web_targets import ca_pem

BASIC_PASSWORD = "B4sic-Pa55:with-colon-5e1f"


def test_web_target_with_its_options(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    ca = tmp_path / "ca.pem"
    ca.write_text(ca_pem())
    target = cli.json(
        "target", "add", "grafana", "--url", "https://10.0.0.7:3000/grafana/",
        "--tls-ca", str(ca), "--preserve-host", "--sensitive-param", "token",
        "--sensitive-param", "api_key", "--record-bodies", "2048", "--account", "admin",
    )  # fmt: skip
    assert target["kind"] == "http" and target["url"] == "https://10.0.0.7:3000/grafana/"
    assert target["tls_ca"].startswith("-----BEGIN CERTIFICATE-----") and target["tls_verify"]
    assert target["preserve_host"] is True and target["record_bodies"] == 2048
    assert target["sensitive_params"] == ["token", "api_key"]
    pinned = cli.json(
        "target", "add", "kibana", "--url", "https://kibana.internal/",
        "--tls-fingerprint", "AB:" * 31 + "CD",
    )  # fmt: skip
    assert pinned["tls_fingerprint"] == "ab" * 31 + "cd"
    assert cli.json("target", "show", "kibana")["tls_fingerprint"] == "ab" * 31 + "cd"
    plain = cli.json("target", "add", "app", "--url", "http://10.0.0.9:8080")
    assert plain["tls_ca"] is None and plain["record_bodies"] == 0 and plain["tls_verify"]


def test_tls_insecure_warns_loudly_and_is_audited(cli: Cli) -> None:  # noqa: F811
    code, _, err = cli(
        "target", "add", "bmc", "--url", "https://10.0.0.50/", "--tls-insecure", "--json"
    )
    assert code == 0, err
    assert err.count("\n") == 1 and "WARNING" in err and "--tls-insecure" in err
    events = [e for e in cli.json("audit") if e["subject"] == "bmc"]
    assert [e["action"] for e in events] == ["target.add"]
    assert events[0]["details"]["tls_insecure"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["target", "add", "w", "--url", "https://h/", "--tls-insecure", "--tls-fingerprint", "ab"],
        ["target", "add", "w", "--url", "https://h/", "--tls-fingerprint", "abc"],
        ["target", "add", "w", "--url", "https://h/", "--tls-ca", "/nonexistent.pem"],
        ["target", "add", "w", "--url", "https://u:p@h/"],
        ["target", "add", "w", "--url", "https://h/#x"],
        ["target", "add", "w", "--url", "http://h/", "--tls-insecure"],
        ["target", "add", "w", "--url", "https://h/", "--record-bodies", "9999999"],
        ["target", "add", "w", "--url", "https://h/", "--record-bodies", "many"],
        ["target", "add", "w", "--host", "h", "--preserve-host"],
        ["target", "add", "w", "--host", "h", "--tls-insecure"],
    ],
)
def test_bad_web_target_options_are_one_line_exit_2(cli: Cli, argv: list[str]) -> None:  # noqa: F811
    code, out, err = cli(*argv)
    assert code == 2, (argv, code, err)
    assert err.splitlines()[-1].startswith("lockgate: ") and "Traceback" not in err + out
    assert cli.json("target", "list") == []


def test_basic_credential_from_stdin(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    cli.json("target", "add", "grafana", "--url", "http://10.0.0.7:3000/", "--account", "admin")
    info = cli.json(
        "credential", "set", "grafana", "admin", "--basic-stdin",
        stdin=f"svc-grafana:{BASIC_PASSWORD}\n",
    )  # fmt: skip
    assert info["kind"] == "http_basic" and info["target"] == "grafana"

    async def checkout() -> tuple[str, str, dict[str, str]]:
        from gateway.config import load_config
        from gateway.services import open_services

        services = await open_services(load_config(cli.config))
        try:
            out = await services.vault.checkout("grafana", "admin", "s", "test")
            return out.kind, out.secret.reveal_text(), dict(out.public)
        finally:
            await services.aclose()

    kind, secret, public = asyncio.run(checkout())
    assert (kind, secret, public) == ("http_basic", BASIC_PASSWORD, {"username": "svc-grafana"})
    audit = cli("audit", "--json")[1]
    assert "credential" in audit
    assert BASIC_PASSWORD not in audit
    assert not any(BASIC_PASSWORD in text for text in cli.outputs)
    url = cli.db_url or f"sqlite+aiosqlite:///{tmp_path / 'data' / 'lockgate.db'}"
    assert BASIC_PASSWORD not in asyncio.run(_all_db_text(url))


@pytest.mark.parametrize("stdin", ["no-colon-here\n", ":only-password\n", "user:\n", "\n"])
def test_basic_stdin_without_user_and_password_is_a_usage_error(
    cli: Cli,  # noqa: F811
    stdin: str,
) -> None:
    cli.json("target", "add", "grafana", "--url", "http://10.0.0.7:3000/", "--account", "admin")
    code, out, err = cli("credential", "set", "grafana", "admin", "--basic-stdin", stdin=stdin)
    assert code == 2 and err.startswith("lockgate: ") and err.count("\n") == 1, err
    secret_part = stdin.strip().partition(":")[2] or stdin.strip()
    assert not secret_part or secret_part not in out + err
    assert cli.json("credential", "list") == []


def test_basic_stdin_is_for_web_targets(cli: Cli) -> None:  # noqa: F811
    cli.json("target", "add", "db01", "--host", "127.0.0.1", "--account", "root")
    code, _, err = cli("credential", "set", "db01", "root", "--basic-stdin", stdin="u:p\n")
    assert code == 2 and "web targets" in err
