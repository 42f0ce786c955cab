"""One way to start a real gateway node in a test: ``start_node``, as production does, with
an initialised data directory, the test database and every listener on port 0."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.app import Node, start_node
from gateway.cli.setup import generate_host_key, migrate
from gateway.config import load_config
from gateway.sessions.killswitch import Timer
from policy.models import Rule
from recorder.anomaly import AnomalyRule
from vault.keys import generate_master_key_file


async def start_test_node(
    db_url: str,
    workdir: Path,
    *,
    name: str,
    rules: tuple[Rule, ...] = (),
    anomaly_rules: tuple[AnomalyRule, ...] = (),
    timer: Timer | None = None,
    environ: dict[str, str] | None = None,
    peer: Node | None = None,
    server_fields: dict[str, Any] | None = None,
    **overrides: Any,
) -> Node:
    """A node with its own data directory under ``workdir`` (host key, master key, migrated
    database); ``environ`` adds ``LOCKGATE_*`` overrides, ``overrides`` replace top-level
    Config fields. With ``peer`` the node joins that node's cluster: the same master key (a
    cluster shares one), its own data directory and name.
    ``server_fields`` sets fields of ``[server]`` (lists the environment cannot set)."""
    data = workdir / "data"
    data.mkdir(mode=0o700)
    config = load_config(
        None,
        environ={
            "LOCKGATE_SERVER_DATA_DIR": str(data),
            "LOCKGATE_DATABASE_URL": db_url,
            "LOCKGATE_SERVER_SSH_LISTEN": "127.0.0.1:0",
            "LOCKGATE_SERVER_HTTP_LISTEN": "127.0.0.1:0",
            "LOCKGATE_SERVER_NODE_NAME": name,
            # The README's test command runs the SSH tests once more with the fast path off.
            "LOCKGATE_SERVER_SSH_FASTPATH": os.environ.get("LOCKGATE_SERVER_SSH_FASTPATH", "true"),
            **(environ or {}),
        },
    )
    config = replace(config, anomaly_rules=(*config.anomaly_rules, *anomaly_rules), **overrides)
    if server_fields:
        config = replace(config, server=replace(config.server, **server_fields))
    generate_host_key(config.host_key_path)
    if peer is None:
        generate_master_key_file(data / "master.key")
    else:
        shutil.copy2(peer.config.server.data_dir / "master.key", data / "master.key")
    await migrate(config)
    return await start_node(config, timer=timer, extra_rules=rules)
