"""``/healthz`` (the process answers), ``/readyz`` (database, vault, listeners; plus warnings
such as clock skew) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.metrics import Metrics

log = logging.getLogger(__name__)
Check = Callable[[], Awaitable[bool]]
METRICS = web.AppKey("metrics", Metrics)
CHECKS = web.AppKey("checks", dict[str, Check])
Refresh = Callable[[], Awaitable[None]]
REFRESH = web.AppKey("refresh", list[Refresh])
Warning = Callable[[], str | None]
WARNINGS = web.AppKey("warnings", dict[str, Warning])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    results: dict[str, bool] = {}
    for name, check in request.app[CHECKS].items():
        try:
            results[name] = bool(await check())
        except Exception:
            results[name] = False
    ready = all(results.values())
    warnings = {}
    for name, warning in request.app.get(WARNINGS, {}).items():
        text = warning()
        if text is not None:
            warnings[name] = text
    body: dict[str, object] = {"ready": ready, "checks": results}
    if warnings:
        body["warnings"] = warnings  # worth an operator's look; not a reason to stop serving
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    for refresh in request.app.get(REFRESH, []):
        try:
            await refresh()
        except Exception:
            log.warning("refreshing gauges before a scrape failed", exc_info=True)
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_health_routes(
    app: web.Application,
    metrics_: Metrics,
    checks: Mapping[str, Check],
    refresh: list[Refresh] | None = None,
    warnings: Mapping[str, Warning] | None = None,
) -> None:
    """``refresh`` callables update gauges read from the database just before a scrape;
    ``warnings`` are shown in ``/readyz`` when they return a line."""
    app[METRICS] = metrics_
    app[CHECKS] = dict(checks)
    app[WARNINGS] = dict(warnings or {})
    app[REFRESH] = list(refresh or [])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
