"""Setting up a gateway host: ``init``, ``db upgrade``, ``vault rotate``."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.cli.context import Context, Usage
from gateway.config import Config, load_config
from gateway.db import create_engine
from gateway.errors import StartupError
from gateway.services import safe_url

CONFIG_TEMPLATE = """\
# Lockgate configuration, written by `lockgate init`.
# Every key and its default is documented in config.example.toml.

[server]
ssh_listen = "0.0.0.0:2222"
http_listen = "127.0.0.1:8080"
data_dir = {data_dir}

[auth]
max_failed_logins = 5

# Who may ask for what. Example: developers may request any target labelled env=prod for up
# to 4 hours, with one approval from someone holding the "approver" role.
# [[rules]]
# name = "dev-prod"
# roles = ["dev"]
# targets = ["*"]
# labels = {{ env = "prod" }}
# max_duration = "4h"
# approvals = 1
# approver_roles = ["approver"]
"""


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate_host_key(path: Path) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())


async def migrate(config: Config) -> None:
    from gateway.db.schema import upgrade  # alembic, only when migrating

    engine = create_engine(config.database_url)
    try:
        await upgrade(engine)
    except Exception as exc:
        raise StartupError(
            f"cannot migrate the database at {safe_url(config.database_url)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    finally:
        await engine.dispose()


async def init(ctx: Context) -> int:
    from vault.keys import generate_master_key_file

    path = ctx.config_path or Path("lockgate.toml")
    if path.exists():
        raise StartupError(f"{path} already exists; remove it or pass --config elsewhere")
    data_dir = ctx.args.data_dir or Path("lockgate-data")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIG_TEMPLATE.format(data_dir=_toml_string(str(data_dir))))
    config = load_config(path)
    config.server.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.recordings_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not config.host_key_path.exists():
        generate_host_key(config.host_key_path)
    if config.master_key.startswith("file:") and not Path(config.master_key[5:]).exists():
        generate_master_key_file(Path(config.master_key[5:]))
    await migrate(config)
    ctx.out.write(
        f"wrote {path}\n"
        f"data directory {config.server.data_dir} (host key, master key, database, recordings)\n"
        "next steps:\n"
        f"  add a [[rules]] entry to {path} (the commented example) saying who may ask for what\n"
        "  lockgate user add alice --role admin --key ~/.ssh/id_ed25519.pub\n"
        "  lockgate token create alice            # a token for the HTTP API\n"
        "  lockgate serve\n"
    )
    return 0


init.needs_services = False  # type: ignore[attr-defined]


async def db_upgrade(ctx: Context) -> int:
    config = load_config(ctx.config_path)
    await migrate(config)
    ctx.out.write(f"database at {safe_url(config.database_url)} is up to date\n")
    return 0


db_upgrade.needs_services = False  # type: ignore[attr-defined]


async def vault_rotate(ctx: Context) -> int:
    """New master key; every data key re-wrapped in one transaction; the old key retired.

    The key file first holds both keys (a crash mid-way leaves a working vault), then only
    the new one."""
    from vault.keys import Keyring, new_master_key, write_keyring_file

    svc = ctx.svc
    if ctx.actor != "lockgate" and not (await svc.policy.get_user(ctx.actor)).is_admin:
        raise Usage(f"{ctx.actor} may not rotate the vault")
    spec = svc.config.master_key
    if not spec.startswith("file:"):
        raise Usage(
            "vault rotate manages file: master keys; for env: or a key provider, "
            "rotate the key at its source"
        )
    path = Path(spec[5:])
    old = svc.keyring
    transition = Keyring(new_master_key(), (old.current, *old.retired))
    write_keyring_file(path, transition)
    count = await svc.vault.rotate(ctx.actor, transition)
    write_keyring_file(path, Keyring(transition.current))
    return ctx.emit(
        {"key_id": transition.current.key_id, "retired": old.current.key_id, "credentials": count}
    )
