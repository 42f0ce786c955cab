"""API routes for administration: users, targets, write-only credentials and tokens."""

from __future__ import annotations

from typing import Any

from gateway.web import paging
from gateway.web.routes import ADMIN, AUDITOR, TABLE, USER, Call, F
from policy.durations import parse_duration
from policy.errors import InvalidInput, NotFound
from vault.secret import Secret

route = TABLE.add


@route("GET", "/whoami", "The caller", access=USER, tag="users")
async def whoami(call: Call) -> Any:
    assert call.who is not None
    return {"user": call.who.user, "via": call.who.via}


@route("GET", "/users", "Every user", access=AUDITOR, tag="users", query=paging.QUERY)
async def list_users(call: Call) -> Any:
    return await call.deps.services.policy.list_users()


@route(
    "POST",
    "/users",
    "Add a user",
    access=ADMIN,
    body={
        "name": F("string", required=True, max_length=64),
        "roles": F("array", items="string"),
        "public_keys": F("array", items="string"),
        "password": F("string", max_length=1024),
    },
    status=201,
    tag="users",
)
async def add_user(call: Call) -> Any:
    b = call.body
    return await call.deps.services.policy.add_user(
        call.actor,
        b["name"],
        roles=b.get("roles") or (),
        public_keys=b.get("public_keys") or (),
        password=b.get("password"),
    )


@route("GET", "/users/{name}", "One user (yourself, or anyone for auditors)", tag="users")
async def get_user(call: Call) -> Any:
    name = call.arg("name")
    assert call.who is not None
    if name != call.actor and not call.who.user.is_auditor:
        raise NotFound(f"no user {name}")
    return await call.deps.services.policy.get_user(name)


@route(
    "POST",
    "/users/{name}/change",
    "Change a user: roles (all of them), keys added and removed, enable, a new password",
    access=ADMIN,
    body={
        "roles": F("array", items="string"),
        "add_keys": F("array", items="string"),
        "remove_keys": F("array", items="string"),
        "enable": F("boolean"),
        "password": F("string", max_length=1024),
    },
    tag="users",
)
async def change_user(call: Call) -> Any:
    b, policy = call.body, call.deps.services.policy
    name = call.arg("name")
    user = await policy.change_user(
        call.actor,
        name,
        roles=b.get("roles"),
        add_keys=b.get("add_keys") or (),
        remove_keys=b.get("remove_keys") or (),
        enable=bool(b.get("enable")),
    )
    if b.get("password") is not None:
        user = await policy.set_password(call.actor, name, b["password"])
    return user


@route("POST", "/users/{name}/disable", "Disable a user", access=ADMIN, body={}, tag="users")
async def disable_user(call: Call) -> Any:
    user = await call.deps.services.policy.disable_user(call.actor, call.arg("name"))
    await call.deps.browser.end_user(user.name)
    return user


@route(
    "POST",
    "/targets",
    "Add an SSH target (host) or a web target (url)",
    access=ADMIN,
    body={
        "name": F("string", required=True, max_length=80),
        "host": F("string", max_length=255),
        "port": F("integer"),
        "host_key": F("string", max_length=16384),
        "url": F("string", max_length=2048),
        "accounts": F("array", items="string"),
        "default_account": F("string", max_length=64),
        "labels": F("object"),
        "tls_verify": F("boolean"),
        "tls_ca": F("string", max_length=1024 * 1024),
        "tls_fingerprint": F("string", max_length=200),
        "preserve_host": F("boolean"),
        "sensitive_params": F("array", items="string"),
        "record_bodies": F("integer"),
        "provision": F("string", max_length=16),
        "uid_range": F("string", max_length=32),
        "home_archive": F("string", max_length=255),
    },
    status=201,
    tag="targets",
)
async def add_target(call: Call) -> Any:
    b = call.body
    if bool(b.get("host")) == bool(b.get("url")):
        raise InvalidInput("give exactly one of host (SSH target) or url (web target)")
    labels = b.get("labels") or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidInput("labels must map strings to strings")
    return await call.deps.services.policy.add_target(
        call.actor,
        b["name"],
        kind="http" if b.get("url") else "ssh",
        host=b.get("host"),
        port=b.get("port") or 22,
        host_key=b.get("host_key"),
        url=b.get("url"),
        labels=labels,
        accounts=b.get("accounts") or [],
        default_account=b.get("default_account"),
        tls_verify=b.get("tls_verify", True),
        tls_ca=b.get("tls_ca"),
        tls_fingerprint=b.get("tls_fingerprint"),
        preserve_host=b.get("preserve_host", False),
        sensitive_params=b.get("sensitive_params") or (),
        record_bodies=b.get("record_bodies") or 0,
        provision=b.get("provision") or "none",
        uid_range=b.get("uid_range"),
        home_archive=b.get("home_archive") or "",
    )


@route(
    "GET",
    "/credentials",
    "Vaulted credentials (never their values); auditors read them too",
    access=AUDITOR,
    tag="targets",
    query=paging.QUERY,
)
async def list_credentials(call: Call) -> Any:
    return await call.deps.services.vault.list_credentials()


@route(
    "PUT",
    "/credentials/{target}/{account}",
    "Store the credential for a target's account (write-only)",
    access=ADMIN,
    body={
        "kind": F("string", required=True, max_length=20),
        "value": F("string", max_length=65536),
        "passphrase": F("string", max_length=1024),
        "header": F("string", max_length=100),
        "username": F("string", max_length=100),
    },
    tag="targets",
)
async def set_credential(call: Call) -> Any:
    b = call.body
    vault = call.deps.services.vault
    target, account = call.arg("target"), call.arg("account")
    await call.deps.services.policy.credential_target(target, account)
    if b["kind"] == "ssh_ca":
        return await vault.create_ssh_ca(call.actor, target, account)
    if not b.get("value"):
        raise InvalidInput("value is required for this kind")
    public = {k: b[k] for k in ("header", "username") if b.get(k)}
    passphrase = Secret(b["passphrase"].encode()) if b.get("passphrase") else None
    return await vault.set_credential(
        call.actor,
        target,
        account,
        b["kind"],
        Secret(b["value"].encode()),
        public=public,
        passphrase=passphrase,
    )


@route(
    "POST",
    "/tokens",
    "Create an API token (shown once) for yourself, or anyone as admin",
    body={
        "user": F("string", required=True, max_length=64),
        "duration": F("string", max_length=20),
    },
    status=201,
    tag="users",
)
async def create_token(call: Call) -> Any:
    duration = call.body.get("duration")
    token, info = await call.deps.services.policy.create_token(
        call.actor, call.body["user"], parse_duration(duration) if duration else None
    )
    return {"token": token, **{k: v for k, v in vars(info).items()}}
