"""/metrics over aiohttp: a route for the producer, and a server of its own for the dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from app.observability.lag import GroupLag
from app.observability.metrics import authorized, exposition

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_handler(token: str, lags: Sequence[GroupLag] = ()) -> Handler:
    """GET /metrics: the Prometheus text format; 401 without the bearer token when one is set."""

    async def metrics(request: web.Request) -> web.Response:
        if not authorized(request.headers.get("Authorization"), token):
            return web.json_response(
                {
                    "error": {
                        "code": "unauthorized",
                        "message": "/metrics needs its bearer token",
                        "field": "Authorization",
                    }
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="sluice-metrics"'},
            )
        for lag in lags:
            await lag.refresh()
        body, content_type = exposition(lags)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return metrics


async def serve_metrics(host: str, port: int, token: str) -> web.AppRunner:
    """Serve /metrics alone on host:port (the dispatcher's); `await runner.cleanup()` stops it."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(token))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%d/metrics", host, port)
    return runner
