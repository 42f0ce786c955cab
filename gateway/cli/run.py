"""Running a node: ``lockgate serve`` and ``lockgate demo``."""

from __future__ import annotations

from pathlib import Path

from gateway.app import describe, public_host, run_until_signalled, start_node
from gateway.cli.context import Context
from gateway.config import load_config


async def serve(ctx: Context) -> int:
    node = await start_node(load_config(ctx.config_path))
    ctx.out.write(describe(node))
    ctx.out.flush()
    await run_until_signalled(node, ctx.out)
    return 0


serve.needs_services = False  # type: ignore[attr-defined]


async def demo(ctx: Context) -> int:
    """First run: initialise ./lockgate.toml; then serve with a built-in target and user."""
    from gateway import demo_web, demo_web_setup
    from gateway.cli.setup import init
    from gateway.demo import DEMO_RULE, DEMO_TARGET, DEMO_USER, provision, start_demo_target
    from gateway.services import open_services

    if ctx.config_path is None and not Path("lockgate.toml").exists():
        ctx.args.data_dir = None
        await init(ctx)
        ctx.config_path = Path("lockgate.toml")
    config = load_config(ctx.config_path)
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
    ctx.out.write(describe(node))
    ctx.out.write(
        "\nDemo: a target named 'demo' and a user 'demo' whose key is in the data directory.\n"
        "Paste this to get a recorded shell on the demo target through the gateway:\n\n"
        f"  ssh -p {node.ssh_port} -i {key} -o IdentitiesOnly=yes "
        f"{DEMO_USER}+{account}@{DEMO_TARGET}@{public_host(config)}\n\n"
        + demo_web_setup.instructions(web_url, web, config.server.data_dir)
        + "\nPress Ctrl-C to stop.\n"
    )
    ctx.out.flush()
    await run_until_signalled(node, ctx.out)
    return 0


demo.needs_services = False  # type: ignore[attr-defined]
