"""The demo's web console: only Lockgate's injected token opens it, it names the person from a
verified assertion, its WebSocket ticks and echoes; and ``lockgate demo`` provisions and
prints a web sign-in a newcomer can follow."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.cli.setup import migrate
from gateway.config import load_config
from gateway.demo import DEMO_USER
from gateway.demo_web import DEMO_WEB_TARGET, start_demo_web, trust_gateway
from gateway.demo_web_setup import (
    DEMO_WEB_ACCOUNT,
    LOGIN_FILE,
    main,
    previous_port,
    provision_login,
    provision_web,
)
from gateway.http.assertion import HEADER, JWKS_PATH, AssertionSigner, jwks_handler
from gateway.services import Services, open_services
from policy.service import SYSTEM_ACTOR
from vault.keys import generate_master_key_file

TOKEN = "demo-token-" + "x" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Demo:
    url: str
    runner: web.AppRunner
    http: aiohttp.ClientSession


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    runner, url = await start_demo_web(TOKEN)
    http = aiohttp.ClientSession()
    try:
        yield Demo(url, runner, http)
    finally:
        await http.close()
        await runner.cleanup()


@pytest.fixture
async def gateway_keys(tmp_path: Path) -> AsyncIterator[tuple[AssertionSigner, str]]:
    """A signer and a server of its JWKS, standing in for the gateway: (signer, issuer)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    issuer = f"http://127.0.0.1:{sock.getsockname()[1]}"
    signer = AssertionSigner.load_or_create(tmp_path / "assertion.pem", issuer)
    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks_handler(signer))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield signer, issuer
    finally:
        await runner.cleanup()


def assertion(signer: AssertionSigner, subject: str = "alice", audience: str = "demo-web") -> str:
    now = datetime.now(UTC)
    return signer.sign(
        audience=audience,
        subject=subject,
        roles=["demo"],
        grant_id="gr_1",
        session_id="se_1",
        expires_at=now + timedelta(hours=1),
        now=now,
    )


async def get(demo: Demo, path: str = "", **headers: str) -> tuple[int, str, dict[str, str]]:
    async with demo.http.get(demo.url + path, headers=headers, allow_redirects=False) as r:
        return r.status, await r.text(), dict(r.headers)


# --- the token gate ------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", f"Bearer {TOKEN}x", f"bearer {TOKEN}", TOKEN, f"Basic {TOKEN}", "Bearer "],
)
@pytest.mark.parametrize("path", ["", "static/demo.js", "static/demo.css", "notes", "nowhere"])
async def test_every_path_refuses_a_request_without_the_exact_bearer_token(
    demo: Demo, authorization: str | None, path: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, body, head = await get(demo, path, **headers)
    assert status == 401
    assert head["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in body and "x" * 20 not in body


async def test_the_websocket_refuses_an_upgrade_without_the_token(demo: Demo) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await demo.http.ws_connect(demo.url + "ws")
    assert caught.value.status == 401


async def test_with_the_token_the_page_is_served_with_a_strict_policy(demo: Demo) -> None:
    status, body, head = await get(demo, **AUTH)
    assert status == 200
    assert head["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in head["Content-Security-Policy"]
    assert "No identity assertion arrived" in body
    assert 'src="static/demo.js"' in body  # relative: works under a path prefix too
    for name in ("demo.js", "demo.css"):
        status, text, _ = await get(demo, f"static/{name}", **AUTH)
        assert status == 200 and text


async def test_the_token_never_appears_on_the_page(demo: Demo) -> None:
    _, body, head = await get(demo, **AUTH)
    assert TOKEN not in body and TOKEN not in json.dumps(head)


async def test_a_demo_app_without_a_token_is_refused() -> None:
    with pytest.raises(ValueError):
        await start_demo_web("")


# --- who is signed in ----------------------------------------------------------------


async def test_a_verified_assertion_names_the_person(
    demo: Demo, gateway_keys: tuple[AssertionSigner, str]
) -> None:
    signer, issuer = gateway_keys
    trust_gateway(demo.runner, issuer)
    _, body, _ = await get(demo, **AUTH, **{HEADER: assertion(signer)})
    assert 'as <strong id="subject">alice</strong>' in body
    assert "verified against the gateway" in body
    assert "gr_1" in body and "se_1" in body


async def test_an_assertion_from_another_key_is_refused_on_the_page(
    demo: Demo, gateway_keys: tuple[AssertionSigner, str], tmp_path: Path
) -> None:
    _, issuer = gateway_keys
    trust_gateway(demo.runner, issuer)
    forger = AssertionSigner.load_or_create(tmp_path / "forger.pem", issuer)
    _, body, _ = await get(demo, **AUTH, **{HEADER: assertion(forger, "root")})
    assert "was refused" in body
    assert "root" not in body


async def test_an_assertion_for_another_target_is_refused_on_the_page(
    demo: Demo, gateway_keys: tuple[AssertionSigner, str]
) -> None:
    signer, issuer = gateway_keys
    trust_gateway(demo.runner, issuer)
    _, body, _ = await get(demo, **AUTH, **{HEADER: assertion(signer, audience="grafana")})
    assert "another audience" in body and "alice" not in body


async def test_without_the_gateways_keys_the_subject_is_shown_as_not_verified(
    demo: Demo, gateway_keys: tuple[AssertionSigner, str]
) -> None:
    signer, _ = gateway_keys
    _, body, _ = await get(demo, **AUTH, **{HEADER: assertion(signer, "bob")})
    assert "bob" in body and "not verified" in body


async def test_an_unreachable_key_set_leaves_the_subject_unverified(
    demo: Demo, gateway_keys: tuple[AssertionSigner, str]
) -> None:
    signer, _ = gateway_keys
    trust_gateway(demo.runner, "http://127.0.0.1:1")
    _, body, _ = await get(demo, **AUTH, **{HEADER: assertion(signer, "bob")})
    assert "could not be fetched" in body and "verified against" not in body


async def test_the_page_escapes_what_an_assertion_says(demo: Demo) -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "<script>x()</script>"}).encode())
    token = f"e30.{claims.decode().rstrip('=')}.AA"
    _, body, _ = await get(demo, **AUTH, **{HEADER: token})
    assert "<script>x()" not in body
    assert "&lt;script&gt;x()" in body


# --- the form and the WebSocket --------------------------------------------------------


async def test_a_posted_note_shows_on_the_page(demo: Demo) -> None:
    async with demo.http.post(
        demo.url + "notes", data={"note": "hello <b>there</b>"}, headers=AUTH, allow_redirects=False
    ) as r:
        assert r.status == 303
        assert r.headers["Location"] == "./"
    _, body, _ = await get(demo, **AUTH)
    assert "someone: hello &lt;b&gt;there&lt;/b&gt;" in body


async def test_an_empty_note_is_refused(demo: Demo) -> None:
    async with demo.http.post(demo.url + "notes", data={"note": " "}, headers=AUTH) as r:
        assert r.status == 400


async def test_the_websocket_ticks_every_second_and_echoes(demo: Demo) -> None:
    async with demo.http.ws_connect(demo.url + "ws", headers=AUTH) as ws:
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "tick"
        await ws.send_str("ping 42")
        seen = [await ws.receive_json(timeout=5) for _ in range(3)]
        assert {"type": "echo", "text": "ping 42"} in seen
        assert any(m["type"] == "tick" and m["time"] != first["time"] for m in seen)


async def test_stopping_the_app_closes_its_websockets(demo: Demo) -> None:
    ws = await demo.http.ws_connect(demo.url + "ws", headers=AUTH)
    assert (await ws.receive_json(timeout=5))["type"] == "tick"
    stopping = asyncio.ensure_future(demo.runner.cleanup())
    while (message := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT:
        pass
    await stopping
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY


# --- provisioning ----------------------------------------------------------------------


@pytest.fixture
async def services(db_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    config = load_config(
        None, environ={"LOCKGATE_SERVER_DATA_DIR": str(data), "LOCKGATE_DATABASE_URL": db_url}
    )
    generate_master_key_file(data / "master.key")
    await migrate(config)
    svc = await open_services(config)
    await svc.policy.add_user(SYSTEM_ACTOR, DEMO_USER, roles=["demo"])
    try:
        yield svc
    finally:
        await svc.aclose()


async def test_provisioning_adds_the_web_target_and_its_vaulted_bearer_token(
    services: Services,
) -> None:
    assert await previous_port(services) == 0
    assert await provision_web(services, "http://127.0.0.1:4567/", "t0ken")
    target = await services.policy.get_target(DEMO_WEB_TARGET)
    assert (target.kind, target.url, target.accounts) == (
        "http",
        "http://127.0.0.1:4567/",
        (DEMO_WEB_ACCOUNT,),
    )
    kind = await services.vault.credential_kind(DEMO_WEB_TARGET, DEMO_WEB_ACCOUNT)
    assert kind == "http_header"
    assert await previous_port(services) == 4567
    assert await provision_web(services, "http://127.0.0.1:4567/", "another")
    assert not await provision_web(services, "http://127.0.0.1:9999/", "another")


async def test_the_demo_user_gets_a_web_sign_in_that_works_and_is_kept(
    services: Services, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    login = await provision_login(services, data)
    assert (data / LOGIN_FILE).stat().st_mode & 0o777 == 0o600
    assert login.password not in repr(login)
    assert await services.policy.verify_password(DEMO_USER, login.password) is not None
    now = datetime.now(UTC)
    assert await services.vault.verify_totp(DEMO_USER, login.code(now), now)
    assert (await services.policy.get_user(DEMO_USER)).totp_enabled
    again = await provision_login(services, data)
    assert again == login


def test_the_totp_helper_prints_the_current_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["totp", str(tmp_path)]) == 1
    (tmp_path / LOGIN_FILE).write_text(
        json.dumps({"password": "p", "totp_uri": "otpauth://totp/L:d?secret=GEZDGNBVGY3TQOJQ"})
    )
    assert main(["totp", str(tmp_path)]) == 0
    code = capsys.readouterr().out.strip()
    assert len(code) == 6 and code.isdigit()


# --- lockgate demo, as a newcomer runs it -----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _demo(
    py: str, config: Path, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """``lockgate demo`` started, and what it printed until it serves (or exits)."""
    proc = await asyncio.create_subprocess_exec(
        py, "-m", "gateway", "demo", "--config", str(config),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if not line:
                await asyncio.wait_for(proc.wait(), 60)
                break
            lines.append(line)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, lines


async def test_lockgate_demo_prints_a_web_sign_in_that_works_as_printed(tmp_path: Path) -> None:
    py = sys.executable
    config = tmp_path / "lockgate.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
    init = [py, "-m", "gateway", "init", "--data-dir", "data", "--config", str(config)]
    assert subprocess.run(init, capture_output=True, env=env, timeout=120).returncode == 0
    template = config.read_text()
    for _ in range(3):  # a port found free may be taken before the demo binds it
        ssh_port, http_port = _free_port(), _free_port()
        config.write_text(
            template.replace('"0.0.0.0:2222"', f'"127.0.0.1:{ssh_port}"').replace(
                '"127.0.0.1:8080"', f'"127.0.0.1:{http_port}"'
            )
        )
        proc, lines = await _demo(py, config, env)
        if proc.returncode is None or "address already in use" not in "".join(lines):
            break
    try:
        assert proc.returncode is None, "".join(lines)
        web_line = next(x for x in lines if x.startswith("Web: open "))
        words = web_line.split()
        url, user, password = words[2], words[7], words[10]
        assert (url, user) == (f"http://127.0.0.1:{http_port}/", "demo")
        helper = next(x for x in lines if x.startswith("or print the current code with: "))
        command = helper.removeprefix("or print the current code with: ").split()
        code = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert code.returncode == 0, code.stderr
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url + "login",
                data={"user": user, "password": password, "code": code.stdout.strip()},
                headers={"Origin": url.rstrip("/")},
                allow_redirects=False,
            ) as response,
        ):
            assert response.status == 303
            assert "lockgate_session" in response.cookies
        show = [py, "-m", "gateway", "target", "show", DEMO_WEB_TARGET, "--json"]
        shown = subprocess.run(
            [*show, "--config", str(config)], capture_output=True, text=True, env=env, timeout=60
        )
        target_url = json.loads(shown.stdout)["url"]
        async with aiohttp.ClientSession() as http, http.get(target_url) as response:
            assert response.status == 401  # only Lockgate, with the vaulted token, gets in
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
