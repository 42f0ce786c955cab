"""Running a node: ``lockgate serve`` and ``lockgate demo``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import signal
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.cli.context import Context
from gateway.config import Config, load_config

if TYPE_CHECKING:
    from gateway.app import Node


async def serve(ctx: Context) -> int:
    """One process, or (``server.workers`` above 1) a supervisor of worker processes; with
    ``--worker`` (given by the supervisor) one of those workers."""
    config = load_config(ctx.config_path)
    if ctx.args.worker is not None:
        return await _worker(ctx, config)
    if config.server.workers > 1:
        from gateway.cli.supervisor import supervise

        return await supervise(config, ctx.config_path, ctx.out)
    from gateway.app import start_node  # only when serving

    node = await start_node(config)
    ctx.out.write(describe(node))
    ctx.out.flush()
    await run_until_signalled(node, ctx.out)
    return 0


async def _worker(ctx: Context, config: Config) -> int:
    """A worker of a supervisor: node ``<node>-w<I>`` on the sockets it was given; says
    ``ready`` on standard output (the supervisor's pipe) once it serves."""
    import socket

    from gateway.app import start_node
    from gateway.cluster.liveness import worker_name
    from gateway.scaleout import Listeners
    from gateway.sessions.records import RESTARTED, WORKER_LOST

    _die_with_parent()
    ssh_fd, http_fd = (int(fd) for fd in str(ctx.args.listen_fds).split(","))
    listeners = Listeners(socket.socket(fileno=ssh_fd), socket.socket(fileno=http_fd))
    parent = config.server.node_name
    server = replace(
        config.server, node_name=worker_name(parent, ctx.args.worker), supervisor=parent
    )
    node = await start_node(
        replace(config, server=server),
        listeners=listeners,
        leftovers=WORKER_LOST if ctx.args.after_crash else RESTARTED,
    )
    ctx.out.write("ready\n")
    ctx.out.flush()
    await run_until_signalled(node, io.StringIO())
    return 0


def _die_with_parent() -> None:
    """A worker must not outlive its supervisor (a ``kill -9`` of the node)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


serve.needs_services = False  # type: ignore[attr-defined]


async def demo(ctx: Context) -> int:
    """First run: initialise ./lockgate.toml; then serve with a built-in target and user."""
    from gateway import demo_web, demo_web_setup
    from gateway.app import public_host, start_node
    from gateway.cli.setup import init, migrate
    from gateway.demo import DEMO_RULE, DEMO_TARGET, DEMO_USER, provision, start_demo_target
    from gateway.services import open_services

    first_run = ctx.config_path is None and not Path("lockgate.toml").exists()
    if first_run:
        ctx.args.data_dir = None
        said, ctx.out = ctx.out, io.StringIO()  # init's next steps are not the demo's
        try:
            await init(ctx)
        finally:
            ctx.out = said
        ctx.config_path = Path("lockgate.toml")
    config = loopback_only(load_config(ctx.config_path))
    if not first_run:
        await migrate(config)  # the demo's own data: brought to this release's schema
    acceptor, port, host_key, secret = await start_demo_target(config.server.data_dir / "demo-home")
    web = None
    try:
        services = await open_services(config)
        try:
            key = await provision(services, config.server.data_dir, port, host_key, secret)
            web = await demo_web_setup.serve_demo_web(services, config.server.data_dir)
        finally:
            await services.aclose()
        node = await start_node(config, extra_rules=(DEMO_RULE, *demo_web_setup.DEMO_WEB_RULES))
    except BaseException:
        acceptor.close()
        if web is not None:
            await web.runner.cleanup()
        raise

    async def close_target() -> None:
        acceptor.close()

    node.extra += [close_target, web.runner.cleanup]
    web_host = config.server.http_listen.host
    web_host = "127.0.0.1" if web_host in ("0.0.0.0", "::", "") else web_host  # noqa: S104
    web_url = f"http://{web_host}:{node.http_port}/"
    demo_web.trust_gateway(web.runner, issuer=web_url.rstrip("/"))
    account = secret.split("\0", 1)[0]
    if first_run:
        ctx.out.write(f"First run: wrote lockgate.toml and {config.server.data_dir}/.\n")
    ctx.out.write(describe(node))
    ctx.out.write(
        "\nDemo: a target named 'demo' (a shell as you, in a scratch directory) and a user\n"
        "'demo' whose key is in the data directory. The gateway's host key is\n"
        f"{host_key_fingerprint(config)}: ssh asks you to confirm it the first time.\n"
        "Paste this to get a recorded shell on the demo target through the gateway:\n\n"
        f"  ssh -p {node.ssh_port} -i {key} -o IdentitiesOnly=yes "
        f"{DEMO_USER}+{account}@{DEMO_TARGET}@{public_host(config)}\n\n"
        + demo_web_setup.instructions(web_url, web, config.server.data_dir)
        + "\nThen, in another terminal in this directory: lockgate sessions, lockgate play "
        "SESSION,\nlockgate recordings search TEXT; or the web UI's Sessions and Recordings.\n"
        "Press Ctrl-C to stop.\n"
    )
    ctx.out.flush()
    await run_until_signalled(node, ctx.out)
    return 0


demo.needs_services = False  # type: ignore[attr-defined]

WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104


def loopback_only(config: Config) -> Config:
    """The demo listens on 127.0.0.1 unless an address is named: its target is a shell as
    the operating-system user running it."""
    server = config.server
    ssh, http = server.ssh_listen, server.http_listen
    if ssh.host in WILDCARDS:
        ssh = replace(ssh, host="127.0.0.1")
    if http.host in WILDCARDS:
        http = replace(http, host="127.0.0.1")
    return replace(config, server=replace(server, ssh_listen=ssh, http_listen=http))


def host_key_fingerprint(config: Config) -> str:
    import asyncssh

    key = asyncssh.read_private_key(config.host_key_path)
    return f"{key.get_fingerprint('sha256')} ({key.get_algorithm()})"


async def run_until_signalled(node: Node, out: TextIO) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        out.write("lockgate: shutting down; ending live sessions\n")
        out.flush()
        await node.stop("gateway shutdown")


def describe(node: Node) -> str:
    from gateway.app import public_host

    cfg = node.config
    host = public_host(cfg)
    return (
        f"Lockgate node {cfg.server.node_name} is serving.\n"
        f"  SSH:  {cfg.server.ssh_listen.host}:{node.ssh_port}   "
        f"connect: ssh -p {node.ssh_port} USER+ACCOUNT@TARGET@{host}\n"
        f"        gateway shell: ssh -p {node.ssh_port} USER@{host} help\n"
        f"  Web:  http://{cfg.server.http_listen.host}:{node.http_port}/  "
        f"(API: /api/v1/openapi.json; /healthz, /readyz, /metrics)\n"
    )
