"""The producer process: its aiohttp application, every route family registered the same way, and `serve`."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from app.core.ratelimit import Limits, Quotas, Rate
from app.core.tenants import KeyRing
from app.delivery.pulls import Pulls
from app.delivery.registry import Registry
from app.deployment import Deployment
from app.kafka.topology import ensure_topics
from app.observability import metrics
from app.observability.lag import GroupLag
from app.observability.serving import metrics_handler
from app.observability.tracing import Tracing
from app.producer import (
    connections,
    console,
    dlq,
    ingest,
    login,
    notices,
    openapi,
    pull,
    scheduling,
    subscriptions,
    tables,
)
from app.producer.http import CONTEXT, Context, close_stalled, count_streams, errors, json_response, observe
from app.producer.mirror import Mirror
from app.producer.publisher import Publisher
from app.producer.replies import Replies
from app.runtime import collector
from app.settings import Settings

log = logging.getLogger(__name__)

# Each module registers its routes with add_routes(app) and reads what it needs from app[CONTEXT].
ROUTE_MODULES = (ingest, subscriptions, scheduling, tables, login, pull, console, dlq, notices)


async def health(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(200, openapi.document(request.app.router))


def quotas_of(settings: Settings, keyring: KeyRing) -> Quotas:
    """The rate limits this process applies: the keys file's, else the settings' defaults, shared among processes."""
    limits = settings.limits
    return Quotas(
        key=Limits(Rate(limits.key_requests_per_s), Rate(limits.key_events_per_s)),
        tenant=Limits(Rate(limits.tenant_requests_per_s), Rate(limits.tenant_events_per_s)),
        tenants=keyring.tenant_limits,
        processes=settings.producer.processes,
        burst_s=limits.burst_s,
    )


def create_app(context: Context, lags: tuple[GroupLag, ...] = ()) -> web.Application:
    # client_max_size is left above the cap: read_body enforces it, on the inflated body.
    app = web.Application(middlewares=[observe, errors], client_max_size=context.settings.producer.max_body_bytes + 1)
    app[CONTEXT] = context
    app.on_response_prepare.append(close_stalled)
    app.on_response_prepare.append(count_streams)
    app.router.add_get("/health", health)
    if context.tenant_label is not None:
        app.router.add_get("/metrics", metrics_handler(context.settings.observability.metrics_token, lags))
    app.router.add_get("/openapi.json", openapi_document)
    for module in ROUTE_MODULES:
        module.add_routes(app)
    return app


async def serve(settings: Settings, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the producer until SIGINT/SIGTERM (or `stop` is set)."""
    keyring = KeyRing.from_sources(settings.keys.api_keys, settings.keys.keys_file)
    if not len(keyring):
        log.warning("no API keys configured (SLUICE_API_KEYS / SLUICE_KEYS_FILE): every request gets 401")
    deployment = Deployment.load(settings, tenants=keyring.tenants)
    topology, schemas, kafka = deployment.topology, deployment.schemas, settings.kafka
    await ensure_topics(kafka.bootstrap, topology)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timeout_s = settings.producer.publish_timeout_s
    async with Publisher(kafka.bootstrap, dead_letter_schema=schemas["dead_letter"], timeout_s=timeout_s) as publisher:
        replies = Replies(
            kafka.bootstrap,
            [topology.effects, topology.replies],
            topology.partitions,
            schemas,
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            timeout_s=timeout_s,
        )
        await replies.start()
        registry = Registry.of(deployment)
        await registry.start()
        mirror = Mirror(
            kafka.bootstrap,
            topology.scheduled,
            topology.wait_groups,
            topology.partitions,
            schemas["command"],
            retention_s=settings.scheduling.wait_group_retention_s,
        )
        await mirror.start()
        pulls = Pulls.of(deployment)
        await pulls.start()
        quotas = quotas_of(settings, keyring)
        observability = settings.observability
        context = Context(
            deployment,
            keyring,
            publisher,
            replies,
            registry,
            mirror,
            pulls=pulls,
            quotas=quotas,
            tenant_label=metrics.TenantLabels(observability.metrics_max_tenants) if observability.metrics else None,
            tracing=Tracing("sluice-producer", observability.otlp_endpoint),
        )
        # The workers' lag, read at each scrape: it is there to see while every worker is down.
        lag = GroupLag(kafka.bootstrap, settings.group_id, list(topology.events.values()), topology.partitions)
        http = settings.producer
        # aiohttp's keep-alive timer runs from a connection's start until a request's headers are
        # in, and again after each answer: one timeout for slow headers and idle connections.
        runner = web.AppRunner(create_app(context, (lag,)), access_log=None, keepalive_timeout=http.idle_timeout_s)
        await runner.setup()
        assert runner.server is not None
        # Several producer processes share one port; a lone one binds plainly, so a second
        # producer started on the same port by mistake fails instead of sharing it.
        listener = await connections.listen(
            runner.server, http.host, http.port, most=http.max_connections, reuse_port=http.processes > 1
        )
        log.info("producer listening on http://%s:%d", http.host, http.port)
        collector.settle()
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            listener.close()
            await runner.cleanup()
            await replies.stop()
            await registry.stop()
            await mirror.stop()
            await pulls.stop()
            await lag.stop()
            context.tracing.shutdown()
