"""Administration commands: users, targets, credentials, tokens."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.context import Context, Usage
from gateway.cli.provision import provision_options, provisioner_login
from gateway.render import to_jsonable
from policy.durations import parse_duration
from vault.secret import Secret

if TYPE_CHECKING:
    from vault.records import CredentialKind

USER_COLUMNS = ("name", "roles", "public_keys", "has_password", "totp_enabled", "disabled")
CREDENTIAL_COLUMNS = ("id", "target", "account", "kind", "key_id", "created_at")
TARGET_COLUMNS = ("name", "kind", "host", "port", "url", "accounts", "default_account", "labels")


def read_keys(paths: list[Any]) -> list[str]:
    """The public key lines of OpenSSH public key files."""
    keys: list[str] = []
    for path in paths:
        try:
            keys.extend(
                line.strip()
                for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#")
            )
        except OSError as exc:
            raise Usage(f"cannot read key file {path}: {exc.strerror}") from None
    return keys


async def _enrol_totp(ctx: Context, name: str) -> Any:
    uri = await ctx.svc.vault.enroll_totp(ctx.actor, name)
    user = await ctx.svc.policy.set_totp_enabled(ctx.actor, name, True)
    # The enrolment URI is shown once, to the admin's terminal only, for the person's
    # authenticator app; it is never stored in clear or logged.
    ctx.err.write(f"TOTP enrolment for {name} (shown once): {uri}\n")
    return user


async def user_add(ctx: Context) -> int:
    a = ctx.args
    keys = read_keys(a.key)
    password = ctx.read_stdin_secret("password") if a.password_stdin else None
    user = await ctx.svc.policy.add_user(
        ctx.actor, a.name, roles=a.role, public_keys=keys, password=password
    )
    if a.totp:
        user = await _enrol_totp(ctx, user.name)
    return ctx.emit(user)


def check_user_set(ctx: Context) -> None:
    a = ctx.args
    if not (a.password_stdin or a.totp or a.add_key or a.remove_key or a.enable) and a.role is None:
        raise Usage(
            "user set needs at least one of --password-stdin, --totp, --add-key, "
            "--remove-key, --role, --enable"
        )


async def user_set(ctx: Context) -> int:
    """Only what is named changes: roles (all of them, when --role is given), keys, the
    disabled flag; a new password; a new TOTP enrolment (the URI shown once)."""
    a = ctx.args
    check_user_set(ctx)
    policy = ctx.svc.policy
    await policy.get_user(a.name)  # NotFound before reading a password for nobody
    password = ctx.read_stdin_secret("password") if a.password_stdin else None
    user = await policy.change_user(
        ctx.actor,
        a.name,
        roles=a.role,
        add_keys=read_keys(a.add_key),
        remove_keys=a.remove_key,
        enable=a.enable,
    )
    if password is not None:
        user = await policy.set_password(ctx.actor, a.name, password)
    if a.totp:
        user = await _enrol_totp(ctx, a.name)
    return ctx.emit(user)


async def user_list(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.list_users(), USER_COLUMNS)


async def user_show(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.get_user(ctx.args.name))


async def user_disable(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.disable_user(ctx.actor, ctx.args.name))


def parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise Usage(f"--label expects KEY=VALUE, got {item!r}")
        labels[key] = value
    return labels


async def target_add(ctx: Context) -> int:
    a = ctx.args
    if bool(a.host) == bool(a.url):
        raise Usage("target add needs exactly one of --host (SSH target) or --url (web target)")
    host_key = a.host_key
    if a.url and (host_key or a.scan):
        raise Usage("--host-key and --scan are for SSH targets")
    web = web_options(ctx)
    if a.scan:
        host_key = await _scan_and_confirm(ctx, a.host, a.port)
    target = await ctx.svc.policy.add_target(
        ctx.actor,
        a.name,
        kind="http" if a.url else "ssh",
        host=a.host,
        port=a.port,
        host_key=host_key,
        url=a.url,
        labels=parse_labels(a.label),
        accounts=a.account,
        default_account=a.default_account,
        tls_verify=web.get("tls_verify", True),
        tls_ca=web.get("tls_ca"),
        tls_fingerprint=web.get("tls_fingerprint"),
        preserve_host=web.get("preserve_host", False),
        sensitive_params=web.get("sensitive_params", ()),
        record_bodies=web.get("record_bodies", 0),
        **provision_options(ctx),
    )
    if target.kind == "http" and not ctx.args.json:
        ctx.err.write(web_next_steps(target.name, list(target.accounts)))
    return show_target(ctx, target)


SSH_ONLY = ("host", "port", "host_key")
WEB_ONLY: tuple[str, ...] = ("url", "tls_verify", "tls_ca", "tls_fingerprint", "preserve_host")
WEB_ONLY += ("sensitive_params", "record_bodies")


def show_target(ctx: Context, target: Any) -> int:
    """A target with the fields of its kind (all of them with --json)."""
    if ctx.args.json:
        return ctx.emit(target)
    data = to_jsonable(target)
    hidden = WEB_ONLY if data.get("kind") == "ssh" else SSH_ONLY
    return ctx.emit({k: v for k, v in data.items() if k not in hidden})


def web_next_steps(name: str, accounts: list[str]) -> str:
    """What a new web target needs before anyone can open it (stderr, text mode)."""
    account = accounts[0] if accounts else "ACCOUNT"
    lines = [
        f"lockgate: next for {name}: its credential, "
        f"`lockgate credential set {name} {account} --basic-stdin` (USER:PASSWORD) or "
        f'`--header NAME --value-stdin`; a rule whose channels include "http"; then people '
        "request it and open it from My access in the web UI"
    ]
    if not accounts:
        lines.append(
            f"lockgate: {name} has no account, and grants and credentials name one: "
            "add web targets with --account NAME"
        )
    return "\n".join(lines) + "\n"


INSECURE_WARNING = (
    "lockgate: WARNING: --tls-insecure turns off certificate checks for this upstream; "
    "anyone on the path can read and change its traffic\n"
)


def web_options(ctx: Context) -> dict[str, Any]:
    """The web target options of ``target add`` as keyword arguments (only those given);
    Usage when they come with an SSH target. Warns on stderr about ``--tls-insecure``."""
    a = ctx.args
    given: dict[str, Any] = {}
    if a.tls_ca is not None:
        try:
            given["tls_ca"] = a.tls_ca.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not text"
            raise Usage(f"cannot read the CA bundle {a.tls_ca}: {reason}") from None
    if a.tls_fingerprint:
        given["tls_fingerprint"] = a.tls_fingerprint
    if a.tls_insecure:
        given["tls_verify"] = False
    if a.preserve_host:
        given["preserve_host"] = True
    if a.sensitive_param:
        given["sensitive_params"] = list(a.sensitive_param)
    if a.record_bodies:
        given["record_bodies"] = a.record_bodies
    if given and not a.url:
        raise Usage("--tls-*, --preserve-host, --sensitive-param, --record-bodies need --url")
    if a.tls_insecure:
        ctx.err.write(INSECURE_WARNING)
    return given


def read_basic(ctx: Context) -> tuple[str, str]:
    """``USER:PASSWORD`` from stdin, split at the first colon; the password is never echoed
    in the usage error."""
    user, sep, password = ctx.read_stdin_secret("USER:PASSWORD").partition(":")
    if not sep or not user or not password:
        raise Usage("--basic-stdin expects USER:PASSWORD on standard input")
    return user, password


async def _scan_and_confirm(ctx: Context, host: str, port: int) -> str:
    import asyncssh

    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port), 15)
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise Usage(f"cannot fetch the host key of {host}:{port}: {exc}") from None
    if key is None:
        raise Usage(f"{host}:{port} offered no host key")
    line = key.export_public_key().decode().strip()
    ctx.err.write(f"{host}:{port} presents {key.get_fingerprint()} ({key.get_algorithm()})\n")
    if not sys.stdin.isatty():
        raise Usage("--scan needs a terminal to confirm the key; pin it with --host-key instead")
    ctx.err.write("Pin this key? [y/N] ")
    if input().strip().lower() not in {"y", "yes"}:
        raise Usage("host key not confirmed; nothing added")
    return " ".join(line.split()[:2])


async def target_list(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.policy.list_targets(), TARGET_COLUMNS)


async def target_show(ctx: Context) -> int:
    return show_target(ctx, await ctx.svc.policy.get_target(ctx.args.name))


async def credential_set(ctx: Context) -> int:
    a = ctx.args
    if a.oidc:
        from gateway.cli.auth import oidc_secret

        return await oidc_secret(ctx)
    if not a.target or not (a.account or a.provisioner):
        raise Usage(
            "credential set needs TARGET ACCOUNT (or TARGET --provisioner, or --oidc PROVIDER)"
        )
    if a.provisioner:
        target = await ctx.svc.policy.get_target(a.target)
    else:
        target = await ctx.svc.policy.credential_target(a.target, a.account)
    vault = ctx.svc.vault
    if a.value_stdin and not a.header:
        raise Usage("--value-stdin goes with --header")
    if a.passphrase_stdin and not a.private_key:
        raise Usage("--passphrase-stdin goes with --private-key")
    if a.provisioner:
        from vault.service import PROVISIONER_ACCOUNT  # the vault's layer: only on the host

        login = provisioner_login(ctx)
        passphrase = Secret(ctx.read_stdin_secret("passphrase")) if a.passphrase_stdin else None
        info = await vault.set_credential(
            ctx.actor,
            target.name,
            PROVISIONER_ACCOUNT,
            "provisioner",
            Secret(_read_key(a.private_key)),
            public={"username": login},
            passphrase=passphrase,
        )
    elif a.ssh_ca:
        info = await vault.create_ssh_ca(ctx.actor, target.name, a.account)
    elif a.basic_stdin:
        if target.kind != "http":
            raise Usage("--basic-stdin is for web targets")
        user, password = read_basic(ctx)
        info = await vault.set_credential(
            ctx.actor,
            target.name,
            a.account,
            "http_basic",
            Secret(password),
            public={"username": user},
        )
    elif a.header:
        if not a.value_stdin:
            raise Usage("--header needs --value-stdin (secrets are never taken from arguments)")
        info = await vault.set_credential(
            ctx.actor,
            target.name,
            a.account,
            "http_header",
            Secret(ctx.read_stdin_secret("header value")),
            public={"header": a.header},
        )
    elif a.private_key:
        data = _read_key(a.private_key)
        passphrase = Secret(ctx.read_stdin_secret("passphrase")) if a.passphrase_stdin else None
        info = await vault.set_credential(
            ctx.actor, target.name, a.account, "private_key", Secret(data), passphrase=passphrase
        )
    else:
        kind: CredentialKind = "http_basic" if target.kind == "http" else "password"
        public = {"username": a.account} if kind == "http_basic" else None
        info = await vault.set_credential(
            ctx.actor,
            target.name,
            a.account,
            kind,
            Secret(ctx.read_stdin_secret("password")),
            public=public,
        )
    return ctx.emit(info)


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Usage(f"cannot read {path}: {exc.strerror}") from None


async def credential_list(ctx: Context) -> int:
    return ctx.emit(await ctx.svc.vault.list_credentials(), CREDENTIAL_COLUMNS)


async def signal_secret(ctx: Context) -> int:
    """The SIEM's shared secret goes into the vault like any credential; ``--generate``
    shows the new one once, for the SIEM's configuration."""
    from gateway.signals import SIGNAL_ACCOUNT, SIGNAL_TARGET

    if ctx.args.generate:
        import secrets

        value = secrets.token_urlsafe(32)
    else:
        value = ctx.read_stdin_secret("signal secret")
    if len(value) < 16:
        raise Usage("a signal secret needs at least 16 characters")
    info = await ctx.svc.vault.set_credential(
        ctx.actor, SIGNAL_TARGET, SIGNAL_ACCOUNT, "password", Secret(value)
    )
    if ctx.args.generate:
        ctx.out.write(f"{value}\n")
        ctx.err.write(f"signal secret {info.id}: shown once, configure your SIEM with it now\n")
        return 0
    return ctx.emit(info)


async def token_create(ctx: Context) -> int:
    duration = parse_duration(ctx.args.duration) if ctx.args.duration else None
    token, info = await ctx.svc.policy.create_token(ctx.actor, ctx.args.user, duration)
    return show_token(ctx, token, to_jsonable(info))


def show_token(ctx: Context, token: str, info: dict[str, Any]) -> int:
    """The token alone on stdout (or the JSON object), once; its facts on stderr."""
    if ctx.args.json:
        return ctx.emit({**info, "token": token})
    ctx.out.write(f"{token}\n")
    ctx.err.write(f"token {info['id']} for {info['user']}: shown once, store it now\n")
    return 0
