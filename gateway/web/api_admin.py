"""API routes for administration: users, targets, write-only credentials and tokens."""

from __future__ import annotations

from typing import Any

from gateway.web import schemas as s
from gateway.web import shapes
from gateway.web.limits import optional_duration, uid_range
from gateway.web.routes import ADMIN, AUDITOR, TABLE, USER, Call
from policy.errors import Conflict, InvalidInput, NotFound
from policy.models import Target, User
from vault.records import CredentialInfo
from vault.secret import Secret
from vault.service import PROVISIONER_ACCOUNT

route = TABLE.add


class Whoami(shapes.Whoami):
    user: User


@route("GET", "/whoami", "The caller", access=USER, tag="users", returns=Whoami)
async def whoami(call: Call) -> Any:
    assert call.who is not None
    return {"user": call.who.user, "via": call.who.via}


@route(
    "GET",
    "/users",
    "Every user",
    access=AUDITOR,
    tag="users",
    query=s.Paged,
    returns=User,
    paged=True,
)
async def list_users(call: Call) -> Any:
    return await call.deps.services.policy.list_users()


@route(
    "POST",
    "/users",
    "Add a user",
    access=ADMIN,
    body=s.NewUser,
    status=201,
    tag="users",
    returns=User,
    location=lambda u: f"/users/{u.name}",
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


@route(
    "GET",
    "/users/{name}",
    "One user (yourself, or anyone for auditors)",
    tag="users",
    returns=User,
    etag=True,
)
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
    body=s.ChangeUser,
    tag="users",
    returns=User,
    current=get_user,
)
async def change_user(call: Call) -> Any:
    b, policy = call.body, call.deps.services.policy
    name = call.arg("name")
    if name == call.actor and b.get("roles") is not None and "admin" not in b["roles"]:
        raise Conflict("you cannot take the admin role from yourself; ask another admin")
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


@route(
    "POST",
    "/users/{name}/disable",
    "Disable a user",
    access=ADMIN,
    body=s.Empty,
    tag="users",
    returns=User,
    current=get_user,
)
async def disable_user(call: Call) -> Any:
    if call.arg("name") == call.actor:  # nobody locks themselves out by mistake
        raise Conflict("you cannot disable yourself; ask another admin")
    user = await call.deps.services.policy.disable_user(call.actor, call.arg("name"))
    await call.deps.browser.end_user(user.name)
    return user


@route(
    "POST",
    "/targets",
    "Add an SSH target (host) or a web target (url)",
    access=ADMIN,
    body=s.NEW_TARGET,
    status=201,
    tag="targets",
    returns=Target,
    location=lambda t: f"/targets/{t.name}",
)
async def add_target(call: Call) -> Any:
    b = call.body
    labels = b.get("labels") or {}
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
        tls_verify=b.get("tls_verify") is not False,
        tls_ca=b.get("tls_ca"),
        tls_fingerprint=b.get("tls_fingerprint"),
        preserve_host=b.get("preserve_host", False),
        sensitive_params=b.get("sensitive_params") or (),
        record_bodies=b.get("record_bodies") or 0,
        provision=b.get("provision") or "none",
        uid_range=uid_range(b.get("uid_range")),
        home_archive=b.get("home_archive") or "",
    )


@route(
    "GET",
    "/credentials",
    "Vaulted credentials (never their values); auditors read them too",
    access=AUDITOR,
    tag="targets",
    query=s.Paged,
    returns=CredentialInfo,
    paged=True,
)
async def list_credentials(call: Call) -> Any:
    return await call.deps.services.vault.list_credentials()


@route(
    "PUT",
    "/credentials/{target}/{account}",
    "Store the credential for a target's account (write-only)",
    access=ADMIN,
    body=s.CREDENTIAL,
    tag="targets",
    returns=CredentialInfo,
)
async def set_credential(call: Call) -> Any:
    b = call.body
    vault = call.deps.services.vault
    target, account = call.arg("target"), call.arg("account")
    if (b["kind"] == "provisioner") != (account == PROVISIONER_ACCOUNT):
        raise Conflict(
            f"a provisioner key is stored as account {PROVISIONER_ACCOUNT}, and only there"
        )
    if account != PROVISIONER_ACCOUNT:
        try:
            await call.deps.services.policy.credential_target(target, account)
        except InvalidInput as exc:  # an account the target has not got: no such slot
            raise NotFound(str(exc)) from None
    else:
        await call.deps.services.policy.get_target(target)
    if b["kind"] == "ssh_ca":
        return await vault.create_ssh_ca(call.actor, target, account)
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
    body=s.NewToken,
    status=201,
    tag="users",
    returns=shapes.NewTokenView,
)
async def create_token(call: Call) -> Any:
    token, info = await call.deps.services.policy.create_token(
        call.actor, call.body["user"], optional_duration(call.body.get("duration"))
    )
    return {"token": token, **{k: v for k, v in vars(info).items()}}
