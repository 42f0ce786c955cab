"""``lockgate`` from anywhere: with ``LOCKGATE_URL`` and ``LOCKGATE_TOKEN`` set, commands go
through the HTTP API and print what they print on the gateway host, with the same exit
status (1 for a refusal, 2 for bad usage). The token is sent only in the Authorization
header and never printed. Commands that only make sense on the host (init, serve, demo,
db upgrade, vault rotate, signals secret, play) say so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from yarl import URL

from gateway.cli import access, admin, provision, recordings
from gateway.cli.context import Context, Usage

REFUSED = 1
BAD_USAGE = 2


class Refused(Exception):
    """The server said no; ``str()`` is its problem detail."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        *,
        raw: bool = False,
    ) -> Any:
        """The JSON answer (every page of a listing, its items in one list); with ``raw``
        the body as text. Fields set to None are left out of ``body``."""
        url = f"{self.url}/api/v1{path}"
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if v is not None}
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v})
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        items: list[Any] = []
        try:
            while True:  # a listing comes in pages: follow Link rel="next" to its end
                async with self.session.request(method, url, json=body, headers=headers) as resp:
                    if resp.content_type == "application/x-asciicast" or (
                        raw and resp.status < 400
                    ):
                        return await resp.text()
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                    if resp.status >= 400:
                        detail = data.get("detail") if isinstance(data, dict) else None
                        raise Refused(detail or f"HTTP {resp.status}", resp.status)
                    link = resp.links.get("next")
                    following = link.get("url") if link is not None else None
                if not _is_page(data):
                    return data
                items += data["items"]
                if following is None:
                    return items
                url = str(resp.url.join(URL(str(following))))
        except aiohttp.ClientError as exc:
            raise Refused(f"cannot reach {self.url} ({type(exc).__name__})", 0) from None


def _is_page(data: Any) -> bool:
    return isinstance(data, dict) and set(data) == {"items", "next"}


def _seg(value: str) -> str:
    return quote(value, safe="")


Handler = Callable[[Context, Client], Awaitable[int]]
HANDLERS: dict[object, Handler] = {}


def remote(*cli_handlers: object) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for handler in cli_handlers:
            HANDLERS[handler] = fn
        return fn

    return register


@remote(admin.user_add)
async def _user_add(ctx: Context, api: Client) -> int:
    a = ctx.args
    if a.totp:
        raise Usage("--totp enrolment runs on the gateway host (the seed never crosses the API)")
    keys = [
        line.strip()
        for path in a.key
        for line in _read(path).splitlines()
        if line.strip() and not line.startswith("#")
    ]
    password = ctx.read_stdin_secret("password") if a.password_stdin else None
    body = {"name": a.name, "roles": a.role, "public_keys": keys, "password": password}
    return ctx.emit(await api.call("POST", "/users", body))


def _read(path: Any) -> str:
    try:
        return str(path.read_text())
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror}") from None


@remote(admin.user_list)
async def _user_list(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("GET", "/users"), admin.USER_COLUMNS)


@remote(admin.user_show)
async def _user_show(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("GET", f"/users/{_seg(ctx.args.name)}"))


@remote(admin.user_set)
async def _user_set(ctx: Context, api: Client) -> int:
    a = ctx.args
    admin.check_user_set(ctx)
    if a.totp:
        raise Usage("--totp runs on the gateway host (the enrolment is shown there, once)")
    body: dict[str, Any] = {
        "add_keys": admin.read_keys(a.add_key),
        "remove_keys": a.remove_key,
        "enable": a.enable,
    }
    if a.role is not None:
        body["roles"] = a.role
    if a.password_stdin:
        body["password"] = ctx.read_stdin_secret("password")
    return ctx.emit(await api.call("POST", f"/users/{_seg(a.name)}/change", body))


@remote(admin.user_disable)
async def _user_disable(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("POST", f"/users/{_seg(ctx.args.name)}/disable", {}))


@remote(admin.target_add)
async def _target_add(ctx: Context, api: Client) -> int:
    a = ctx.args
    if a.scan:
        raise Usage("--scan runs on the gateway host; pin the key with --host-key")
    if bool(a.host) == bool(a.url):
        raise Usage("target add needs exactly one of --host (SSH target) or --url (web target)")
    web = admin.web_options(ctx)
    body = {
        "name": a.name,
        "host": a.host,
        "port": a.port if a.host else None,
        "url": a.url,
        "host_key": a.host_key,
        "accounts": a.account,
        "default_account": a.default_account,
        "labels": admin.parse_labels(a.label),
        **web,
        **provision.provision_options(ctx),
    }
    target = await api.call("POST", "/targets", body)
    if a.url and not a.json:
        ctx.err.write(admin.web_next_steps(a.name, list(a.account)))
    return admin.show_target(ctx, target)


@remote(provision.target_set)
async def _target_set(ctx: Context, api: Client) -> int:
    given = provision.provision_options(ctx)
    if not given:
        raise Usage("target set needs --provision, --uid-range or --home-archive")
    path = f"/targets/{_seg(ctx.args.name)}/provision"
    return ctx.emit(await api.call("POST", path, given))


@remote(provision.provisioned)
async def _provisioned(ctx: Context, api: Client) -> int:
    query = f"?target={_seg(ctx.args.target)}" if ctx.args.target else ""
    if ctx.args.live:
        query += ("&" if query else "?") + "live=1"
    items = await api.call("GET", f"/provisioned{query}")
    return ctx.emit(items, provision.PROVISIONED_COLUMNS)


@remote(provision.nodes)
async def _nodes(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("GET", "/nodes"), provision.NODE_COLUMNS)


@remote(admin.target_list)
async def _target_list(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("GET", "/targets"), admin.TARGET_COLUMNS)


@remote(admin.target_show)
async def _target_show(ctx: Context, api: Client) -> int:
    return admin.show_target(ctx, await api.call("GET", f"/targets/{_seg(ctx.args.name)}"))


@remote(admin.credential_set)
async def _credential_set(ctx: Context, api: Client) -> int:
    a = ctx.args
    if a.oidc:
        raise Usage("credential set --oidc runs on the gateway host only (unset LOCKGATE_URL)")
    if not a.target or not a.account:
        raise Usage("credential set needs TARGET and ACCOUNT")
    if a.value_stdin and not a.header:
        raise Usage("--value-stdin goes with --header")
    if not a.account and not a.provisioner:
        raise Usage("credential set needs TARGET ACCOUNT (or TARGET --provisioner)")
    account = a.account
    if a.provisioner:
        from vault.service import PROVISIONER_ACCOUNT  # the vault's layer: not for every command

        body: dict[str, Any] = {
            "kind": "provisioner",
            "username": provision.provisioner_login(ctx),
            "value": _read(a.private_key),
        }
        account = PROVISIONER_ACCOUNT
        if a.passphrase_stdin:
            body["passphrase"] = ctx.read_stdin_secret("passphrase")
    elif a.ssh_ca:
        body = {"kind": "ssh_ca"}
    elif a.basic_stdin:
        user, password = admin.read_basic(ctx)
        body = {"kind": "http_basic", "username": user, "value": password}
    elif a.header:
        if not a.value_stdin:
            raise Usage("--header needs --value-stdin (secrets are never taken from arguments)")
        body = {"kind": "http_header", "header": a.header}
        body["value"] = ctx.read_stdin_secret("header value")
    elif a.private_key:
        body = {"kind": "private_key", "value": _read(a.private_key)}
        if a.passphrase_stdin:
            body["passphrase"] = ctx.read_stdin_secret("passphrase")
    else:
        target = await api.call("GET", f"/targets/{_seg(a.target)}")
        web = target.get("kind") == "http"
        body = {"kind": "http_basic" if web else "password"}
        if web:
            body["username"] = a.account
        body["value"] = ctx.read_stdin_secret("password")
    path = f"/credentials/{_seg(a.target)}/{_seg(account)}"
    return ctx.emit(await api.call("PUT", path, body))


@remote(admin.credential_list)
async def _credential_list(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("GET", "/credentials"), admin.CREDENTIAL_COLUMNS)


@remote(admin.token_create)
async def _token_create(ctx: Context, api: Client) -> int:
    body = {"user": ctx.args.user, "duration": ctx.args.duration}
    created = await api.call("POST", "/tokens", body)
    return admin.show_token(ctx, created["token"], created)


@remote(access.request)
async def _request(ctx: Context, api: Client) -> int:
    a = ctx.args
    body = {
        "target": a.target,
        "account": a.account,
        "duration": a.duration,
        "reason": a.reason,
        "ticket": a.ticket,
    }
    created = await api.call("POST", "/requests", body)
    if a.wait:
        return await access.wait_for_decision(
            ctx, created, lambda rid: api.call("GET", f"/requests/{_seg(rid)}")
        )
    return ctx.emit(created)


@remote(access.requests)
async def _requests(ctx: Context, api: Client) -> int:
    query = {"pending": "1" if ctx.args.pending else ""}
    return ctx.emit(await api.call("GET", "/requests", query=query), access.REQUEST_COLUMNS)


def _decision(verb: str) -> Handler:
    async def decide(ctx: Context, api: Client) -> int:
        path = f"/requests/{_seg(ctx.args.request_id)}/{verb}"
        body = {} if verb == "cancel" else {"comment": ctx.args.comment}
        return ctx.emit(await api.call("POST", path, body))

    return decide


HANDLERS[access.approve] = _decision("approve")
HANDLERS[access.deny] = _decision("deny")
HANDLERS[access.cancel] = _decision("cancel")


@remote(access.grants)
async def _grants(ctx: Context, api: Client) -> int:
    query = {"active": "1" if ctx.args.active else ""}
    return ctx.emit(await api.call("GET", "/grants", query=query), access.GRANT_COLUMNS)


@remote(access.revoke)
async def _revoke(ctx: Context, api: Client) -> int:
    path = f"/grants/{_seg(ctx.args.grant_id)}/revoke"
    return ctx.emit(await api.call("POST", path, {"reason": ctx.args.reason}))


@remote(access.extend)
async def _extend(ctx: Context, api: Client) -> int:
    body = {"duration": ctx.args.duration, "reason": ctx.args.reason}
    return ctx.emit(await api.call("POST", f"/grants/{_seg(ctx.args.grant_id)}/extend", body))


@remote(access.lock)
async def _lock(ctx: Context, api: Client) -> int:
    a = ctx.args
    body = {"kind": a.kind, "name": a.name, "reason": a.reason, "duration": a.duration}
    return ctx.emit(await api.call("POST", "/locks", body))


@remote(access.unlock)
async def _unlock(ctx: Context, api: Client) -> int:
    path = f"/locks/{_seg(ctx.args.kind)}/{_seg(ctx.args.name)}"
    return ctx.emit(await api.call("DELETE", path))


@remote(access.locks)
async def _locks(ctx: Context, api: Client) -> int:
    return ctx.emit(await api.call("GET", "/locks"), access.LOCK_COLUMNS)


@remote(access.sessions)
async def _sessions(ctx: Context, api: Client) -> int:
    query = {"active": "1" if ctx.args.active else ""}
    return ctx.emit(await api.call("GET", "/sessions", query=query), access.SESSION_COLUMNS)


@remote(access.terminate)
async def _terminate(ctx: Context, api: Client) -> int:
    path = f"/sessions/{_seg(ctx.args.session_id)}"
    record = await api.call("POST", f"{path}/terminate", {"reason": ctx.args.reason})
    return await access.show_terminated(ctx, record, lambda: api.call("GET", path))


@remote(access.audit)
async def _audit(ctx: Context, api: Client) -> int:
    if ctx.args.action == "verify":
        return access.show_verify(ctx, await api.call("GET", "/audit/verify"))
    if ctx.args.action == "streams":
        return ctx.emit(await api.call("GET", "/audit/streams"), access.STREAM_COLUMNS)
    events = await api.call("GET", "/audit", query={"since": ctx.args.since or ""})
    return ctx.emit(events, access.AUDIT_COLUMNS)


@remote(recordings.search)
async def _search(ctx: Context, api: Client) -> int:
    query = {"q": ctx.args.text, "session": ctx.args.session or ""}
    return ctx.emit(
        await api.call("GET", "/recordings/search", query=query), recordings.HIT_COLUMNS
    )


@remote(recordings.export)
async def _export(ctx: Context, api: Client) -> int:
    ctx.out.write(await api.call("GET", f"/recordings/{_seg(ctx.args.session_id)}/cast"))
    return 0


@remote(recordings.verify)
async def _verify(ctx: Context, api: Client) -> int:
    sid = ctx.args.session_id
    path = f"/recordings/{_seg(sid)}/verify" if sid else "/recordings/verify"
    return recordings.show_verification(ctx, await api.call("GET", path))


async def run_remote(ctx: Context, command: object, url: str, token: str) -> int:
    """Run ``command`` (the host's handler; its module is imported, so its own ``remote``
    registrations are made) through the API."""
    handler = HANDLERS.get(command)
    if handler is None:
        raise Usage(f"'{ctx.args.command}' runs on the gateway host only (unset LOCKGATE_URL)")
    if ctx.args.actor:
        raise Usage("--as is for the gateway host; over the API you act as the token's user")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Usage("LOCKGATE_URL must look like https://gateway.example.com")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        ctx.err.write("lockgate: warning: sending the token over plain http\n")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        try:
            return await handler(ctx, Client(session, url, token))
        except Refused as exc:
            ctx.err.write(f"lockgate: {exc}\n")
            return BAD_USAGE if exc.status in (400, 413, 415, 422) else REFUSED
