"""The producer process: its aiohttp application, every route family registered the same way, and `serve`."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from app.core.tenants import KeyRing
from app.delivery.registry import Registry
from app.deployment import Deployment
from app.kafka.topology import ensure_topics
from app.producer import ingest, openapi, scheduling, subscriptions, tables
from app.producer.http import CONTEXT, Context, errors, json_response
from app.producer.mirror import Mirror
from app.producer.publisher import Publisher
from app.producer.replies import Replies
from app.runtime import collector
from app.settings import Settings

log = logging.getLogger(__name__)

# Each module registers its routes with add_routes(app) and reads what it needs from app[CONTEXT].
ROUTE_MODULES = (ingest, subscriptions, scheduling, tables)


async def health(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(200, openapi.document(request.app.router))


def create_app(context: Context) -> web.Application:
    # client_max_size is left above the cap: read_body enforces it, on the inflated body.
    app = web.Application(middlewares=[errors], client_max_size=context.settings.producer.max_body_bytes + 1)
    app[CONTEXT] = context
    app.router.add_get("/health", health)
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
        context = Context(deployment, keyring, publisher, replies, registry, mirror)
        runner = web.AppRunner(create_app(context), access_log=None)
        await runner.setup()
        # Several producer processes share one port; a lone one binds plainly, so a second
        # producer started on the same port by mistake fails instead of sharing it.
        http = settings.producer
        site = web.TCPSite(runner, http.host, http.port, reuse_port=http.processes > 1)
        await site.start()
        log.info("producer listening on http://%s:%d", http.host, http.port)
        collector.settle()
        if ready is not None:
            ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await replies.stop()
            await registry.stop()
            await mirror.stop()
