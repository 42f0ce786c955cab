"""Provisioning ``lockgate demo``'s web target (idempotent, like the SSH demo's).

Each run starts the demo console (``gateway.demo_web``) with a new bearer token and stores it
in the vault as the ``demo-web`` target's ``http_header`` credential, so only the gateway can
open the app. The demo user gets a web sign-in (web sign-in always asks for a password and a
TOTP code), made once and kept 0600 in the data directory beside the demo's SSH key, so each
run prints the same one; ``python -m gateway.demo_web_setup totp DATA_DIR`` prints its
current code for a newcomer without an authenticator app.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiohttp import web

from gateway.demo import DEMO_USER
from gateway.demo_web import DEMO_WEB_TARGET, start_demo_web
from gateway.services import Services
from policy.errors import Conflict, NotFound
from policy.models import CHANNEL_KINDS, Rule
from policy.service import SYSTEM_ACTOR
from vault import totp
from vault.secret import Secret

DEMO_WEB_ACCOUNT = "console"
DEMO_WEB_RULE = Rule(
    name="demo-web",
    roles=frozenset({"demo"}),
    targets=(DEMO_WEB_TARGET,),
    approvals=0,
    require_reason=False,
    channels=frozenset({"http"}),
)
# The rule is in force once policy knows the channel kind ``http``; until then it is left out.
DEMO_WEB_RULES: tuple[Rule, ...] = (DEMO_WEB_RULE,) if "http" in CHANNEL_KINDS else ()
LOGIN_FILE = "demo_web_login.json"


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def previous_port(services: Services) -> int:
    """The port of the last run's app (0 when none): reusing it keeps the target's URL right,
    as a target's URL cannot be changed once added."""
    try:
        target = await services.policy.get_target(DEMO_WEB_TARGET)
    except NotFound:
        return 0
    return urlsplit(target.url or "").port or 0


async def provision_web(services: Services, url: str, token: str) -> bool:
    """The target and its vaulted bearer token (idempotent). False when an older target of
    that name points elsewhere (the caller says so)."""
    try:
        target = await services.policy.add_target(
            SYSTEM_ACTOR,
            DEMO_WEB_TARGET,
            kind="http",
            url=url,
            accounts=[DEMO_WEB_ACCOUNT],
            labels={"env": "demo"},
        )
    except Conflict:
        target = await services.policy.get_target(DEMO_WEB_TARGET)
    await services.vault.set_credential(
        SYSTEM_ACTOR,
        DEMO_WEB_TARGET,
        DEMO_WEB_ACCOUNT,
        "http_header",
        Secret(f"Bearer {token}"),
        public={"header": "Authorization"},
    )
    return bool(target.url == url)


@dataclass(frozen=True)
class WebLogin:
    """The demo user's web sign-in, printed by ``lockgate demo`` for its own user."""

    password: str = field(repr=False)
    totp_uri: str = field(repr=False)

    def code(self, when: datetime | None = None) -> str:
        secret = parse_qs(urlsplit(self.totp_uri).query)["secret"][0]
        seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
        return totp.code_at(seed, when or datetime.now(UTC))


def _read_login(path: Path) -> WebLogin | None:
    try:
        raw = json.loads(path.read_text())
        return WebLogin(str(raw["password"]), str(raw["totp_uri"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_login(path: Path, login: WebLogin) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"password": login.password, "totp_uri": login.totp_uri}, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


async def provision_login(services: Services, data_dir: Path) -> WebLogin:
    """A password and a TOTP seed for the demo user (web sign-in always asks for both), made
    once and kept 0600 in the data directory beside the demo's SSH key."""
    path = data_dir / LOGIN_FILE
    user = await services.policy.get_user(DEMO_USER)
    saved = _read_login(path)
    if (
        saved is not None
        and user.totp_enabled
        and await services.policy.verify_password(DEMO_USER, saved.password) is not None
    ):
        return saved
    password = secrets.token_urlsafe(12)
    await services.policy.set_password(SYSTEM_ACTOR, DEMO_USER, password)
    uri = await services.vault.enroll_totp(SYSTEM_ACTOR, DEMO_USER)
    await services.policy.set_totp_enabled(SYSTEM_ACTOR, DEMO_USER, True)
    login = WebLogin(password, uri)
    _write_login(path, login)
    return login


@dataclass(frozen=True)
class DemoWeb:
    runner: web.AppRunner
    url: str
    login: WebLogin
    url_current: bool  # False: an older demo-web target points at another port


async def serve_demo_web(services: Services, data_dir: Path) -> DemoWeb:
    """Start the app with a new token (on the last run's port when it is free) and provision
    its target, credential and the demo user's web sign-in. Call after the SSH demo's
    ``provision`` (which adds the demo user)."""
    token = new_token()
    port = await previous_port(services)
    try:
        runner, url = await start_demo_web(token, port=port)
    except OSError:
        runner, url = await start_demo_web(token)
    try:
        current = await provision_web(services, url, token)
        login = await provision_login(services, data_dir)
    except BaseException:
        await runner.cleanup()
        raise
    return DemoWeb(runner, url, login, current)


def instructions(web_url: str, demo: DemoWeb, data_dir: Path) -> str:
    """What ``lockgate demo`` prints about the web side."""
    login = demo.login
    code = f"{sys.executable} -m gateway.demo_web_setup totp {data_dir}"
    text = (
        f"Web: open {web_url} and sign in as {DEMO_USER} with password {login.password}\n"
        "and a TOTP code: add this to an authenticator app\n\n"
        f"  {login.totp_uri}\n\n"
        f"or print the current code with: {code}\n"
    )
    if DEMO_WEB_RULES:
        text += (
            f"Then on My access request '{DEMO_WEB_TARGET}' and open it: a small console that "
            "lets you in with a token\nfrom the vault that you never see.\n"
        )
    if not demo.url_current:
        text += (
            f"(The '{DEMO_WEB_TARGET}' target of an earlier run points at another port, and a "
            "target's URL cannot be changed: remove the data directory to start afresh.)\n"
        )
    return text


def main(argv: list[str]) -> int:
    """``python -m gateway.demo_web_setup totp DATA_DIR``: the demo user's current TOTP code."""
    if len(argv) != 2 or argv[0] != "totp":
        print("usage: python -m gateway.demo_web_setup totp DATA_DIR", file=sys.stderr)
        return 2
    login = _read_login(Path(argv[1]) / LOGIN_FILE)
    if login is None:
        print(f"no demo web sign-in in {argv[1]}: run lockgate demo first", file=sys.stderr)
        return 1
    print(login.code())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
