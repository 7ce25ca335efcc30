"""HTTP routes of the producer: auth, limits, parse a dialect, publish, answer."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from app import collector
from app.dead_letter import DeadLetter
from app.delivery.registry import Registry
from app.dialects import analytics, cloudevents, gamification, pubsub, segment, usage
from app.dialects.base import Dialect, Parsed, Request
from app.envelope import utcnow
from app.errors import (
    MalformedBody,
    NotFound,
    PayloadTooLarge,
    RequestError,
    SluiceError,
    Unavailable,
    UnsupportedMediaType,
)
from app.producer import openapi, tables
from app.producer.mirror import Mirror
from app.producer.publisher import Publisher
from app.producer.replies import Replies, gather_effects
from app.schedule import records
from app.schemas import SchemaSet
from app.settings import Settings
from app.simulation import simulate
from app.tenants import KeyRing, Principal
from app.topics import Catalog, TopicSpec
from app.topology import Topology, ensure_topics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (method, path, dialect): every ingest endpoint. A path without {topic_slug} writes to the
# topic whose file claims the dialect's endpoint (`endpoint:` in topics/<slug>.yaml).
INGEST_ROUTES: tuple[tuple[str, str, Dialect], ...] = (
    ("PUT", "/events", usage.DIALECT),
    ("POST", "/ingest", analytics.SINGLE),
    ("POST", "/ingest/batch", analytics.BATCH),
    ("POST", "/api/v1/events", gamification.SINGLE),
    ("POST", "/api/v1/events/batch", gamification.BATCH),
    ("POST", "/topics/{topic_slug}/events", pubsub.DIALECT),
    ("POST", "/api/events", segment.DIALECT),
    ("POST", "/cloudevents/{topic_slug}", cloudevents.DIALECT),
)
ENDPOINT_OF = {
    usage.NAME: "usage",
    analytics.NAME: "analytics",
    gamification.NAME: "gamification",
    segment.NAME: "segment",
}


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler needs, built once at start."""

    settings: Settings
    catalog: Catalog
    topology: Topology
    schemas: SchemaSet
    keyring: KeyRing
    publisher: Publisher
    replies: Replies | None = None  # absent: dialects that reply answer 202 at once
    registry: Registry | None = None  # absent: no subscription endpoints work
    mirror: Mirror | None = None  # absent: scheduled and wait group routes answer 503


CONTEXT = web.AppKey("context", Context)
PRINCIPAL = web.RequestKey("sluice_principal", Principal)
RAW_BODY = web.RequestKey("sluice_raw_body", bytes)


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(status: int, error: SluiceError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": error.as_dict()}, headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON that names the field and reason; a refused event is dead-lettered."""
    try:
        return await handler(request)
    except RequestError as exc:
        await keep_refused(request, exc)
        return error_response(exc.status, exc, _auth_challenge(exc))
    except Unavailable as exc:
        return error_response(503, exc, {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        message = f"no route for {request.method} {request.path}" if exc.status in (404, 405) else exc.reason
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, SluiceError(message, code=code), allow)


def _auth_challenge(exc: RequestError) -> dict[str, str] | None:
    return {"WWW-Authenticate": 'Bearer realm="sluice"'} if exc.status == 401 else None


async def keep_refused(request: web.Request, exc: RequestError, body: bytes | None = None) -> None:
    """Keep a refused request (or one refused event of it) on its tenant's dead-letter topic."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:  # unauthenticated traffic is not ours to keep
        return
    context = request.app[CONTEXT]
    letter = DeadLetter.of(
        exc,
        received_at=utcnow(),
        stage="producer",
        source=f"{request.method} {_route_name(request)}",
        body=request.get(RAW_BODY, b"") if body is None else body,
        tenant=principal.tenant,
        content_type=request.headers.get("Content-Type"),
    )
    await context.publisher.dead_letter(context.topology.tenant_dead_letters(principal.tenant), letter)


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path


def authenticate(request: web.Request) -> Principal:
    key = request.headers.get("X-API-Key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    principal = request.app[CONTEXT].keyring.principal_for(key)
    request[PRINCIPAL] = principal
    return principal


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the body (aiohttp inflates gzip/deflate as it reads) up to `limit` bytes, inflated.

    Read before any other check, so that a refused body is still kept whole.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is larger than {limit} bytes", field="body")
        chunks.append(chunk)
    raw = b"".join(chunks)
    request[RAW_BODY] = raw
    return raw


def parse_json(request: web.Request, raw: bytes) -> object:
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {content_type or 'none'}", field="Content-Type"
        )
    if not raw:
        raise MalformedBody("body is empty; expected a JSON object", field="body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"body is not valid JSON: {exc}", field="body") from None


def resolve_topic(context: Context, request: web.Request, dialect: Dialect) -> TopicSpec:
    slug = request.match_info.get("topic_slug")
    if slug is None:
        spec = context.catalog.for_endpoint(ENDPOINT_OF[dialect.name])
        if spec is None:
            raise NotFound(
                f"no topic file claims the {dialect.name} endpoint (endpoint: {ENDPOINT_OF[dialect.name]})",
                code="endpoint_not_configured",
            )
        return spec
    if slug not in context.catalog:
        raise NotFound(f"no topic named {slug!r}", field="topic_slug", code="topic_not_found")
    return context.catalog[slug]


def ingest(dialect: Dialect) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT]
        principal = authenticate(request)
        try:
            limit = min(dialect.max_body_bytes or context.settings.max_body_bytes, context.settings.max_body_bytes)
            raw = await read_body(request, limit)
            spec = resolve_topic(context, request, dialect)
            principal.check_topic(spec.slug)
            body = raw if dialect.raw_body else parse_json(request, raw)
            parsed = dialect.parse(
                body,
                Request(
                    tenant=principal.tenant,
                    topic=spec.slug,
                    received_at=utcnow(),
                    headers={name.lower(): value for name, value in request.headers.items()},
                    content_type=request.content_type,
                    audiences=spec.audiences,
                ),
            )
            await _check_wait_groups(context, parsed)
        except RequestError as exc:
            await keep_refused(request, exc)
            return json_response(exc.status, dialect.error_body(exc), _auth_challenge(exc))
        if dialect.reply is None or context.replies is None:
            await _write(request, context, spec, parsed)
            status, payload = dialect.respond(parsed)
            return json_response(status, payload)
        keys = [(principal.tenant, spec.slug, event.id) for _, event in parsed.accepted]
        async with context.replies.expect(keys) as futures:
            await _write(request, context, spec, parsed)
            arrived = await gather_effects(futures, context.settings.effect_timeout_s)
        status, payload = dialect.reply(parsed, {key[2]: effect for key, effect in arrived.items()})
        return json_response(status, payload)

    return handle


async def _check_wait_groups(context: Context, parsed: Parsed) -> None:
    for _, event in parsed.accepted:
        if event.wait_group_instance_id is not None:
            if context.mirror is None:
                raise Unavailable("this producer does not read the wait group topics")
            await context.mirror.check_instance(
                event.tenant, event.topic, event.wait_group_instance_id, context.settings.publish_timeout_s
            )


async def _write(request: web.Request, context: Context, spec: TopicSpec, parsed: Parsed) -> None:
    for rejection in parsed.rejected:
        await keep_refused(request, rejection.error, orjson.dumps(rejection.event))
    # A future send_at goes to the scheduled topic instead, for the worker to deliver when due.
    routes, now = context.topology.routes(context.schemas), utcnow()
    await context.publisher.publish_many([r for _, event in parsed.accepted for r in records(event, routes, now)])


async def simulate_rules(request: web.Request) -> web.Response:
    """POST /rules/simulate: a topic's rules over a list of events, from an empty or given state; writes nothing."""
    context = request.app[CONTEXT]
    authenticate(request)
    raw = await read_body(request, context.settings.max_body_bytes)
    return json_response(200, simulate(parse_json(request, raw), context.catalog, utcnow()))


async def health(request: web.Request) -> web.Response:
    return json_response(200, {"status": "ok"})


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(200, openapi.document(request.app.router))


def create_app(settings: Settings, context: Context) -> web.Application:
    # client_max_size is left above the cap: read_body enforces it, on the inflated body.
    app = web.Application(middlewares=[errors], client_max_size=settings.max_body_bytes + 1)
    app[CONTEXT] = context
    for method, path, dialect in INGEST_ROUTES:
        app.router.add_route(method, path, ingest(dialect))
    app.router.add_post("/rules/simulate", simulate_rules)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi_document)
    from app.producer import control, subscriptions  # they build on this module's helpers

    subscriptions.add_routes(app)
    control.add_routes(app)
    tables.add_routes(app, settings, context.catalog.tables(), authenticate)
    return app


async def serve(settings: Settings, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the producer until SIGINT/SIGTERM (or `stop` is set)."""
    catalog = Catalog.load(settings.topics_dir)
    schemas = SchemaSet.load(settings.schemas_dir)
    keyring = KeyRing.from_sources(settings.api_keys, settings.keys_file)
    if not len(keyring):
        log.warning("no API keys configured (SLUICE_API_KEYS / SLUICE_KEYS_FILE): every request gets 401")
    topology = Topology.of(settings, catalog, tenants=keyring.tenants)
    await ensure_topics(settings.bootstrap, topology)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Publisher(
        settings.bootstrap, dead_letter_schema=schemas["dead_letter"], timeout_s=settings.publish_timeout_s
    ) as publisher:
        replies = Replies(
            settings.bootstrap,
            [topology.effects, topology.replies],
            topology.partitions,
            schemas,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            timeout_s=settings.publish_timeout_s,
        )
        await replies.start()
        registry = Registry.of(settings, topology, schemas, catalog)
        await registry.start()
        mirror = Mirror(
            settings.bootstrap,
            topology.scheduled,
            topology.wait_groups,
            topology.partitions,
            schemas["command"],
            retention_s=settings.wait_group_retention_s,
        )
        await mirror.start()
        context = Context(settings, catalog, topology, schemas, keyring, publisher, replies, registry, mirror)
        runner = web.AppRunner(create_app(settings, context), access_log=None)
        await runner.setup()
        # Several producer processes share one port; a lone one binds plainly, so a second
        # producer started on the same port by mistake fails instead of sharing it.
        site = web.TCPSite(
            runner, settings.producer_host, settings.producer_port, reuse_port=settings.producer_processes > 1
        )
        await site.start()
        log.info("producer listening on http://%s:%d", settings.producer_host, settings.producer_port)
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
