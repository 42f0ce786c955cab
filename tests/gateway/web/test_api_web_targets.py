"""Web targets through the API and the remote CLI: TLS, Host and recording settings, and an
``http_basic`` credential whose password never comes back in any answer or audit event."""

from __future__ import annotations

import json

from gateway.web.routes import API
from tests.gateway.cli.test_cli_remote import lockgate, remote_env
from tests.gateway.web.conftest import Web
from tests.policy.test_web_targets import ca_pem

PASSWORD = "Api-B4sic-Pa55-93c1"


async def test_api_adds_a_web_target_with_its_settings(web: Web) -> None:
    body = {
        "name": "grafana",
        "url": "https://10.0.0.7:3000/grafana/",
        "tls_ca": ca_pem(),
        "preserve_host": True,
        "sensitive_params": ["token"],
        "record_bodies": 1024,
        "accounts": ["admin"],
    }
    status, target, _ = await web.call("POST", f"{API}/targets", "admin", json=body)
    assert status == 201, target
    assert target["tls_ca"].startswith("-----BEGIN CERTIFICATE-----")
    assert target["preserve_host"] is True and target["sensitive_params"] == ["token"]
    assert target["record_bodies"] == 1024 and target["tls_verify"] is True
    status, problem, _ = await web.call(
        "POST",
        f"{API}/targets",
        "admin",
        json={"name": "bmc", "url": "https://10.0.0.50/", "tls_verify": False, "tls_ca": ca_pem()},
    )
    assert status == 422 and "at most one" in json.dumps(problem)
    status, target, _ = await web.call(
        "POST",
        f"{API}/targets",
        "admin",
        json={"name": "bmc", "url": "https://10.0.0.50/", "tls_verify": False},
    )
    assert status == 201 and target["tls_verify"] is False
    status, _, _ = await web.call(
        "POST", f"{API}/targets", "requester", json={"name": "x", "url": "https://h/"}
    )
    assert status == 403
    _, events, _ = await web.call("GET", f"{API}/audit?since=1h", "admin")
    bmc = [e for e in events["items"] if e["subject"] == "bmc" and e["action"] == "target.add"]
    assert bmc and bmc[0]["details"]["tls_insecure"] is True


async def test_api_stores_a_basic_credential_write_only(web: Web) -> None:
    await web.policy.add_target("ada", "grafana", kind="http", url="http://10.0.0.7:3000/")
    status, info, _ = await web.call(
        "PUT",
        f"{API}/credentials/grafana/admin",
        "admin",
        json={"kind": "http_basic", "username": "svc", "value": PASSWORD},
    )
    assert status == 200, info
    assert info["kind"] == "http_basic" and PASSWORD not in json.dumps(info)
    out = await web.node.services.vault.checkout("grafana", "admin", "s", "test")
    assert (out.secret.reveal_text(), dict(out.public)) == (PASSWORD, {"username": "svc"})
    _, events, _ = await web.call("GET", f"{API}/audit?since=1h", "admin")
    assert PASSWORD not in json.dumps(events)


async def test_remote_cli_web_target_and_basic_stdin(web: Web) -> None:
    admin = remote_env(web, "admin")
    code, out, err = await lockgate(
        admin, "target", "add", "bmc", "--url", "https://10.0.0.50/", "--tls-insecure",
        "--sensitive-param", "sid", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert "WARNING" in err and json.loads(out)["tls_verify"] is False
    assert json.loads(out)["sensitive_params"] == ["sid"]
    code, out, err = await lockgate(
        admin, "credential", "set", "bmc", "root", "--basic-stdin", "--json",
        stdin=f"ADMIN:{PASSWORD}\n",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["kind"] == "http_basic" and PASSWORD not in out + err
    checked = await web.node.services.vault.checkout("bmc", "root", "s", "test")
    assert checked.secret.reveal_text() == PASSWORD and checked.public["username"] == "ADMIN"
    code, out, err = await lockgate(
        admin, "credential", "set", "bmc", "root", "--basic-stdin", stdin="nocolon\n"
    )
    assert code == 2 and err.startswith("lockgate: ") and "nocolon" not in out + err
